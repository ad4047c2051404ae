"""Fetch a public dataset archive once into the cache: resumable, checksum-checked, extracted atomically.

    root = ucm_root()              # UC Merced class folders: $ROMA_UCM, else the cache (downloaded once)
    python -m roma.data.download ucm

Cache: roma.cache.cache_root() ($ROMA_CACHE, else $XDG_CACHE_HOME/roma, else ~/.cache/roma). An
archive downloads to `<cache>/<name>/<file>.part` (an interrupted download resumes from there with
an HTTP Range request), is checked against its published checksum (a mismatch deletes the partial
file and stops), then extracted into a temporary folder that is renamed to `<cache>/<name>/extracted`
only when complete; the archive is then deleted.
A file already at `<cache>/<name>/<file>` (put there by hand, e.g. on a machine without internet)
is checked and used instead of downloading.

UC Merced Land Use (21 classes x 100 RGB 256x256 TIFFs, USGS National Map imagery, public domain):
the publisher's URL with the size and sha256 that tensorflow-datasets records for it
(tensorflow_datasets/url_checksums/uc_merced.txt), then torchgeo's mirror with the md5 that
torchgeo's `UCMerced` dataset class records. ROMA_UCM_URL + ROMA_UCM_SHA256 replace both (a mirror,
or the tests' local server).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from roma import atomic
from roma.cache import CACHE_ENV, cache_root
from roma.progress import progress

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that cannot complete (offline, HTTP error, wrong checksum); the message says what to do."""


@dataclass(frozen=True)
class Source:
    url: str
    algo: str  # hashlib name: sha256 or md5
    digest: str  # hex
    recorded_by: str = ""  # who published this URL/checksum pair


@dataclass(frozen=True)
class Archive:
    name: str  # cache sub-folder
    filename: str
    sources: tuple[Source, ...]  # tried in order
    size: int | None  # bytes, when published
    inner: str  # the dataset root inside the extracted archive
    env: str  # environment variable pointing at an existing copy of the dataset root
    url_env: str = ""  # environment variables replacing the sources (URL + sha256)
    sha_env: str = ""


UCM = Archive(
    name="ucmerced",
    filename="UCMerced_LandUse.zip",
    sources=(
        Source("http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip", "sha256",
               "06c539ef28703a58fb07bd2837991ac7c48b813b00bb12ac197efd813a18daeb",
               "tensorflow-datasets url_checksums/uc_merced.txt (the publisher's URL)"),
        Source("https://huggingface.co/datasets/torchgeo/ucmerced/resolve/main/UCMerced_LandUse.zip", "md5",
               "5b7ec56793786b6dc8a908e8854ac0e4", "torchgeo datasets.UCMerced (mirror)"),
    ),
    size=332_468_434,
    inner="UCMerced_LandUse/Images",
    env="ROMA_UCM",
    url_env="ROMA_UCM_URL",
    sha_env="ROMA_UCM_SHA256",
)
ARCHIVES = {"ucm": UCM}




def sources(archive: Archive) -> tuple[Source, ...]:
    """The archive's sources, or the one that ROMA_*_URL + ROMA_*_SHA256 name."""
    url = os.environ.get(archive.url_env, "") if archive.url_env else ""
    if not url:
        return archive.sources
    sha = os.environ.get(archive.sha_env, "").strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise DownloadError(f"{archive.url_env}={url} needs {archive.sha_env} set to the file's sha256 "
                            f"(64 hex digits): every download is checked")
    return (Source(url, "sha256", sha, archive.url_env),)


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _offline_hint(url: str, dest: Path, archive: Archive | None) -> str:
    where = (f"; or point {archive.env} at an extracted copy of its {archive.inner}/ folder"
             if archive is not None else "")
    return f"download {url} by other means and put it at {dest} (it is checked, then used){where}"


def download(url: str, dest: Path, algo: str, digest: str, size: int | None = None, desc: str = "",
             retries: int = 3, timeout: float = 60.0, archive: Archive | None = None) -> Path:
    """`url` -> `dest`, resuming `<dest>.part` with HTTP Range; checked against `digest` before renaming.

    A dropped connection is retried (resuming) up to `retries` times; a server that ignores Range
    restarts from byte 0. A wrong checksum deletes the partial file and raises DownloadError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    desc = desc or f"download {dest.name}"
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size:
            break  # complete from an earlier run: verify below
        headers = {"User-Agent": "roma-harness (python urllib)"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if have and resp.status != 206:  # the server ignored Range: start over
                    have = 0
                elif have and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                    raise DownloadError(f"{url}: the server answered the resume request at byte {have} with "
                                        f"Content-Range {resp.headers.get('Content-Range')!r}")
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else size
                got = 0
                with open(part, "ab" if have else "wb") as f, \
                        progress(total, desc, unit="B", initial=have) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        got += len(block)
                        bar.update(len(block))
                if length is not None and got < int(length):
                    raise http.client.IncompleteRead(b"", int(length) - got)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the partial file is whole (verify below)
                break
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {_offline_hint(url, dest, archive)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            attempt += 1
            got_now = part.stat().st_size if part.exists() else 0
            no_route = isinstance(getattr(e, "reason", None), (socket.gaierror, ConnectionRefusedError))
            if isinstance(e, urllib.error.URLError) and got_now == 0 and (attempt > retries or no_route):
                host = urllib.parse.urlsplit(url).netloc
                raise DownloadError(f"cannot reach {host} ({e.reason}): no network connection? "
                                    f"{_offline_hint(url, dest, archive)}") from None
            if attempt > retries:
                raise DownloadError(f"{url}: download failed after {retries} retries ({type(e).__name__}: {e}); "
                                    f"{got_now} bytes kept in {part}: run again to resume") from None
            print(f"[download] {type(e).__name__}: {e}; retrying ({attempt}/{retries}) from byte {got_now}",
                  flush=True)
            time.sleep(min(2.0 ** attempt, 10.0) if not _is_local(url) else 0.05)
    found = file_digest(part, algo)
    if found != digest.lower():
        part.unlink()
        raise DownloadError(f"{url}: {algo} of the downloaded file is {found}, expected {digest}: the file is "
                            f"corrupt or not the published one; it was deleted (run again to download it anew)")
    os.replace(part, dest)
    return dest


def _is_local(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def extract_zip(zip_path: Path, out: Path, desc: str = "") -> Path:
    """Extract into `<out>.tmp`, then rename to `out` (a killed extraction leaves no half folder)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for m in members:  # refuse members that would land outside the folder
                target = (tmp / m.filename).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise DownloadError(f"{zip_path}: member {m.filename!r} points outside the archive folder")
            with progress(len(members), desc or f"extract {Path(zip_path).name}", unit="file") as bar:
                for m in members:
                    zf.extract(m, tmp)
                    bar.update()
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{zip_path} is not a readable zip archive ({e}); delete it and run again") from None
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def fetch(archive: Archive, cache: Path | None = None) -> Path:
    """The dataset root inside the extracted archive, downloading and extracting it the first time."""
    folder = (cache or cache_root()) / archive.name
    extracted = folder / "extracted"
    root = extracted / archive.inner
    if root.is_dir():
        return root
    try:  # before any byte is downloaded: a read-only cache must not cost a 300 MB download first
        atomic.check_writable(folder, f"the download cache ({CACHE_ENV} or ~/.cache/roma)")
    except atomic.NotWritable as e:
        raise DownloadError(f"{e}; set {CACHE_ENV} to a writable folder") from None
    zip_path = folder / archive.filename
    errors = []
    if zip_path.exists():  # a finished download, or one put here by hand
        srcs = sources(archive)
        if not any(file_digest(zip_path, s.algo) == s.digest for s in srcs):
            raise DownloadError(f"{zip_path} matches no published checksum "
                                f"({', '.join(f'{s.algo} {s.digest}' for s in srcs)}): delete it and run again")
    else:
        for src in sources(archive):
            size = archive.size if src in archive.sources else None
            print(f"[download] {archive.filename} from {src.url} -> {zip_path}"
                  + (f" ({size / 2**20:.0f} MiB)" if size else ""), flush=True)
            try:
                download(src.url, zip_path, src.algo, src.digest, size, f"download {archive.name}", archive=archive)
                break
            except DownloadError as e:
                errors.append(str(e))
                if src is not sources(archive)[-1]:
                    print(f"[download] {e}\n[download] trying the next source", flush=True)
                    part = zip_path.with_name(zip_path.name + ".part")
                    part.unlink(missing_ok=True)  # another source's bytes cannot resume this one
        else:
            raise DownloadError("\n".join(errors))
    extract_zip(zip_path, extracted, f"extract {archive.name}")
    if not root.is_dir():
        raise DownloadError(f"{zip_path} does not hold {archive.inner}/ (the dataset's expected layout)")
    zip_path.unlink()  # the extracted folder is the cache; the archive is not needed again
    return root


def dataset_root(archive: Archive) -> Path:
    """$<archive.env> when set (an existing copy), else the cached copy (fetched the first time)."""
    env = os.environ.get(archive.env)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DownloadError(f"{archive.env}={env} is not a folder")
        return p
    return fetch(archive)


def ucm_root() -> Path:
    return dataset_root(UCM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roma.data.download",
                                description="Download and extract a public dataset into the cache ($ROMA_CACHE "
                                            "or ~/.cache/roma); prints its root.")
    p.add_argument("dataset", choices=sorted(ARCHIVES))
    a = p.parse_args(argv)
    try:
        print(dataset_root(ARCHIVES[a.dataset]))
    except DownloadError as e:
        print(f"download: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
