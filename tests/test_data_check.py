"""The dataset check: the real AID and LEVIR-CD samples, and deliberately broken copies built in tmp
(symlinks and copies of a few files; the shared data is never modified)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from roma.data.check import AID_CLASSES, check_dataset, main
from roma.launch import cli


def _aid_copy(aid: Path, dst: Path, real: tuple[str, ...] = ()) -> Path:
    """dst/<class> -> aid/<class> (folder symlinks), except `real` classes: real folders of file symlinks."""
    dst.mkdir()
    for c in sorted(p.name for p in aid.iterdir() if p.is_dir()):
        if c in real:
            (dst / c).mkdir()
            for f in (aid / c).iterdir():
                os.symlink(f, dst / c / f.name)
        else:
            os.symlink(aid / c, dst / c)
    return dst


def test_real_aid_is_ok(aid_root):
    r = check_dataset("aid", aid_root)
    assert r.verdict == "OK", r.render()
    assert r.counts == {"images": 10_000, "classes": 30} and not r.notes


def test_real_levir_samples_are_a_well_formed_partial_copy(shared_data):
    r = check_dataset("levir", shared_data / "levir_cd_samples")
    assert r.verdict == "PARTIAL" and not r.errors, r.render()
    assert r.counts == {"pairs": 11, "train pairs": 3, "val pairs": 1, "test pairs": 7}
    assert "LEVIR-CD has 1024 px release: 637" in r.partial[0]


def test_aid_missing_class(aid_root, tmp_path):
    copy = _aid_copy(aid_root, tmp_path / "AID")
    (copy / "Viaduct").unlink()
    r = check_dataset("aid", copy)
    assert r.verdict == "FAIL" and r.counts["classes"] == 29
    assert any("1 of the 30 AID classes are missing: Viaduct" in e for e in r.errors), r.render()


def test_aid_truncated_and_fake_images(aid_root, tmp_path):
    copy = _aid_copy(aid_root, tmp_path / "AID", real=("Airport",))
    src = copy / "Airport" / "airport_1.jpg"
    data = src.read_bytes()
    src.unlink()
    src.write_bytes(data[: len(data) // 2])  # a truncated copy under the same name
    (copy / "Airport" / "airport_2.jpg").unlink()
    (copy / "Airport" / "airport_2.jpg").write_text("<html>404</html>")  # a web error page saved as .jpg
    (copy / "Airport" / "notes.txt").write_text("x")
    r = check_dataset("aid", copy)
    assert r.verdict == "FAIL", r.render()
    assert any("truncated JPEG" in e and "airport_1.jpg" in e for e in r.errors)
    assert any("not an image file" in e and "airport_2.jpg" in e for e in r.errors)
    assert any("Airport/notes.txt" in n for n in r.notes)  # unexpected files are listed


def test_aid_wrong_counts(aid_root, tmp_path):
    copy = _aid_copy(aid_root, tmp_path / "AID", real=("Airport", "Beach"))
    (copy / "Airport" / "airport_1.jpg").unlink()  # one image short
    r = check_dataset("aid", copy, sample=100)  # counts cover everything; headers of 100 files suffice here
    assert r.verdict == "PARTIAL" and "9,999 of the release's 10,000 images" in r.partial[0]
    assert "Airport 359 of 360" in r.partial[0]
    os.symlink(aid_root / "Beach" / "beach_1.jpg", copy / "Beach" / "beach_extra.jpg")  # one too many
    r = check_dataset("aid", copy, sample=100)
    assert r.verdict == "FAIL" and any("Beach 401 > 400" in e for e in r.errors), r.render()
    assert main(["aid", str(copy), "--sample", "100"]) == 1


def test_broken_levir_copy(shared_data, tmp_path):
    src = shared_data / "levir_cd_samples"
    copy = tmp_path / "levir"
    shutil.copytree(src, copy, symlinks=True)  # 3 MB of PNGs
    (copy / "B" / "test_2_0000_0000.png").unlink()
    lab = copy / "label" / "train_36_0512_0512.png"
    lab.write_bytes(lab.read_bytes()[:200])
    r = check_dataset("levir", copy)
    assert r.verdict == "FAIL", r.render()
    assert any("have no B/ partner: test_2_0000_0000.png" in e for e in r.errors)
    assert any("truncated PNG" in e and "train_36_0512_0512.png" in e for e in r.errors)


# ----------------------------------------------------------------------------- without the shared data
def _tif(path: Path, shape=(16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint16)).save(path)


def test_oscd_layout(tmp_path):
    root = tmp_path / "oscd"
    root.mkdir()
    (root / "train.txt").write_text("abudhabi,aguasclaras")
    (root / "test.txt").write_text("brasilia")
    for city in ("abudhabi", "aguasclaras", "brasilia"):
        for d in ("imgs_1_rect", "imgs_2_rect"):
            for b in ("B04", "B03", "B02"):
                _tif(root / city / d / f"{b}.tif")
        (root / city / "cm").mkdir()
        Image.new("L", (16, 16)).save(root / city / "cm" / "cm.png")
    r = check_dataset("oscd", root)
    assert r.verdict == "PARTIAL" and r.counts == {"train cities": 2, "test cities": 1}, r.render()
    (root / "brasilia" / "imgs_2_rect" / "B03.tif").unlink()
    t = root / "abudhabi" / "imgs_1_rect" / "B04.tif"
    t.write_bytes(t.read_bytes()[:100])  # strips point past the end of the file
    r = check_dataset("oscd", root)
    assert any("brasilia/imgs_2_rect/B03.tif" in e for e in r.errors), r.render()
    assert any("truncated TIFF" in e or "unreadable TIFF" in e for e in r.errors), r.render()


def test_spacenet_layout(tmp_path):
    root = tmp_path / "spacenet"
    for i in (1, 2):
        _tif(root / "3band" / f"3band_AOI_1_RIO_img{i}.tif", (8, 8))
    (root / "geojson").mkdir()
    (root / "geojson" / "Geo_AOI_1_RIO_img1.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    r = check_dataset("spacenet", root)
    assert r.verdict == "FAIL" and any("1 tile(s) have no geojson: 2" in e for e in r.errors), r.render()
    (root / "geojson" / "Geo_AOI_1_RIO_img2.geojson").write_text('{"type": "FeatureCollection", "feat')
    r = check_dataset("spacenet", root)
    assert any("not whole JSON objects: Geo_AOI_1_RIO_img2.geojson" in e for e in r.errors), r.render()


def test_pretraining_folder_manifest_and_shards(tmp_path):
    from roma.data.shards import pack

    folder = tmp_path / "imgs"
    for i in range(6):
        (folder / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / "a" / f"{i}.png")
    assert check_dataset("pretrain", folder).verdict == "OK"
    (tmp_path / "list.txt").write_text("imgs/a/0.png\nimgs/a/1.png\n")
    assert check_dataset("pretrain", tmp_path / "list.txt", expect=3).verdict == "PARTIAL"
    (tmp_path / "bad.txt").write_text("imgs/a/0.png\nimgs/a/9.png\n")
    r = check_dataset("pretrain", tmp_path / "bad.txt")
    assert r.verdict == "FAIL" and "do not exist" in r.errors[0]
    shards = pack(folder, tmp_path / "shards", shard_size=4)
    r = check_dataset("pretrain", tmp_path / "shards", sample=3)
    assert r.verdict == "OK" and r.counts == {"images": 6, "shards": 2} and "3 of 6" in r.notes[0]
    data = shards[-1].read_bytes()
    shards[-1].write_bytes(data[:1600])  # cut inside the last shard's images
    r = check_dataset("pretrain", tmp_path / "shards")
    assert r.verdict == "FAIL", r.render()


# ----------------------------------------------------------------------------- the launcher's check
def _spec(tmp_path: Path, probe_root: Path) -> Path:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "base": "micro", "output_root": str(tmp_path / "out"), "data.subset": 10,
        "eval.probes": [{"dataset": "aid", "root": str(probe_root), "train_ratios": [0.5], "protocol": "fast"}]}))
    return spec


def test_launcher_checks_the_data_a_spec_names(aid_root, tmp_path, capsys):
    copy = _aid_copy(aid_root, tmp_path / "AID")
    (copy / "Viaduct").unlink()
    spec = _spec(tmp_path, copy)
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(12):
        os.symlink(aid_root / "Beach" / f"beach_{i + 1}.jpg", pool / f"{i}.jpg")
    args = [str(spec), "--data-root", str(pool)]
    assert cli.main([*args, "--dry-run"]) == 0  # a dry run shows the verdict
    out = capsys.readouterr().out
    assert f"OK      pretrain {pool}: 12 images" in out and f"FAIL    aid {copy}" in out and "Viaduct" in out
    # a real launch stops before anything runs (the executor would fail on this fake)
    assert cli.main([*args, "--executor", "debug", "--execute", "nowhere:x"]) == 2
    captured = capsys.readouterr()
    assert "the data check failed for 1 dataset(s)" in captured.err and not (tmp_path / "out").exists()
