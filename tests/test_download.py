"""Dataset downloads through the real code path, served by a local HTTP server (no internet needed)."""
from __future__ import annotations

import socket
import zipfile

import pytest
from fileserver import serve, sha256, ucm_like_zip

from roma.data import download as dl
from roma.data.check import check_dataset

DATA = ucm_like_zip(per_class=2, size=16)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMA_UCM", raising=False)
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    return tmp_path / "cache"


def _point_at(monkeypatch, server, digest=None):
    monkeypatch.setenv("ROMA_UCM_URL", server.url("ucm.zip"))
    monkeypatch.setenv("ROMA_UCM_SHA256", digest or sha256(DATA))


def test_fetch_downloads_checks_extracts_and_reuses(cache, monkeypatch, capsys):
    with serve({"ucm.zip": DATA}) as srv:
        _point_at(monkeypatch, srv)
        root = dl.ucm_root()
        assert root == cache / "ucmerced" / "extracted" / "UCMerced_LandUse" / "Images"
        assert sorted(p.name for p in root.iterdir()) == sorted(dl_classes())
        assert not (cache / "ucmerced" / "UCMerced_LandUse.zip").exists()  # the archive goes once extracted
        assert srv.requests == [None]
        assert dl.ucm_root() == root and srv.requests == [None]  # cached: no second request
    out = capsys.readouterr().out
    assert "[download ucmerced]" in out and "done in" in out  # plain progress lines (not a TTY)
    report = check_dataset("ucm", root)  # the right classes, fewer images than the release
    assert report.verdict == "PARTIAL" and report.counts == {"images": 42, "classes": 21}


def dl_classes():
    from roma.data.check import UCM_CLASSES

    return UCM_CLASSES


def test_wrong_checksum_deletes_the_file_and_says_so(cache, monkeypatch):
    with serve({"ucm.zip": DATA}) as srv:
        _point_at(monkeypatch, srv, "0" * 64)
        with pytest.raises(dl.DownloadError, match=r"sha256 of the downloaded file is [0-9a-f]{64}, expected 0{64}"):
            dl.ucm_root()
    folder = cache / "ucmerced"
    assert not list(folder.glob("*.zip*")) and not (folder / "extracted").exists()


def test_partial_download_resumes_with_range(cache, tmp_path):
    dest = tmp_path / "f.zip"
    (tmp_path / "f.zip.part").write_bytes(DATA[:1000])
    with serve({"ucm.zip": DATA}) as srv:
        dl.download(srv.url("ucm.zip"), dest, "sha256", sha256(DATA))
        assert srv.requests == ["bytes=1000-"]
    assert dest.read_bytes() == DATA and not (tmp_path / "f.zip.part").exists()


def test_dropped_connection_is_resumed(cache, tmp_path, capsys):
    dest = tmp_path / "f.zip"
    with serve({"ucm.zip": DATA}) as srv:
        srv.drop_after = 700
        dl.download(srv.url("ucm.zip"), dest, "sha256", sha256(DATA))
        assert srv.requests == [None, "bytes=700-"]
    assert dest.read_bytes() == DATA
    assert "retrying (1/3) from byte 700" in capsys.readouterr().out


def test_server_ignoring_range_restarts_from_zero(cache, tmp_path):
    dest = tmp_path / "f.zip"
    (tmp_path / "f.zip.part").write_bytes(b"x" * 1000)  # not even the right bytes: must not be kept
    with serve({"ucm.zip": DATA}) as srv:
        srv.honour_range = False
        dl.download(srv.url("ucm.zip"), dest, "sha256", sha256(DATA))
        assert srv.requests == ["bytes=1000-"]
    assert dest.read_bytes() == DATA


def test_complete_partial_file_is_verified_without_downloading(cache, tmp_path):
    (tmp_path / "f.zip.part").write_bytes(DATA)
    with serve({"ucm.zip": DATA}) as srv:
        dl.download(srv.url("ucm.zip"), tmp_path / "f.zip", "sha256", sha256(DATA), size=len(DATA))
        assert srv.requests == []


def test_offline_gives_a_clear_error(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ROMA_UCM_URL", f"http://127.0.0.1:{port}/ucm.zip")
    monkeypatch.setenv("ROMA_UCM_SHA256", sha256(DATA))
    with pytest.raises(dl.DownloadError) as e:
        dl.ucm_root()
    msg = str(e.value)
    assert f"cannot reach 127.0.0.1:{port}" in msg and "no network connection?" in msg
    assert "UCMerced_LandUse.zip" in msg and "ROMA_UCM" in msg  # what to do instead


def test_archive_put_in_place_by_hand_is_checked_and_used(cache, monkeypatch):
    monkeypatch.setenv("ROMA_UCM_URL", "http://127.0.0.1:9/never-contacted.zip")
    monkeypatch.setenv("ROMA_UCM_SHA256", sha256(DATA))
    (cache / "ucmerced").mkdir(parents=True)
    (cache / "ucmerced" / "UCMerced_LandUse.zip").write_bytes(DATA)
    assert (dl.ucm_root() / "forest").is_dir()


def test_url_override_needs_a_checksum(cache, monkeypatch):
    monkeypatch.setenv("ROMA_UCM_URL", "http://127.0.0.1:9/x.zip")
    monkeypatch.delenv("ROMA_UCM_SHA256", raising=False)
    with pytest.raises(dl.DownloadError, match="ROMA_UCM_SHA256"):
        dl.ucm_root()


def test_an_existing_copy_in_roma_ucm_is_used(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("ROMA_UCM", str(tmp_path))
    assert dl.ucm_root() == tmp_path
    monkeypatch.setenv("ROMA_UCM", str(tmp_path / "nowhere"))
    with pytest.raises(dl.DownloadError, match="is not a folder"):
        dl.ucm_root()


def test_extraction_refuses_paths_outside_the_folder(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(dl.DownloadError, match="outside the archive folder"):
        dl.extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "out").exists()


def test_published_sources_carry_checksums():
    for src in dl.UCM.sources:
        assert src.url.endswith("UCMerced_LandUse.zip") and src.recorded_by
        assert len(src.digest) == {"sha256": 64, "md5": 32}[src.algo]
