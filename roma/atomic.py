"""Atomic file writes: a temporary file in the same folder, then os.replace.

A reader (a relaunch, `launch.py status`, a resumed job) sees the old file or the new one, never a
half-written one, even when the writer is killed mid-write.

    atomic.write_text(path, text); atomic.write_json(path, obj)
    atomic.read_json(path)                   # CorruptFile (a ValueError naming the file) for bytes that are not JSON
    atomic.check_writable(folder, "what it is for")   # NotWritable naming the folder, before any work
    with atomic.replacing(path) as tmp:      # any writer that takes a path: torch.save, savefig, to_csv
        torch.save(state, tmp)
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class CorruptFile(ValueError):
    """A state or cache file whose bytes are not what the project writes (not UTF-8, not JSON, wrong shape).

    One error for every reader: a cache catches it and rebuilds (warning with the path); a state
    file's reader turns it into a named error saying what to do."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`. FileNotFoundError when absent; CorruptFile for binary garbage, a truncated
    write, or anything else that is not UTF-8 JSON (never a UnicodeDecodeError traceback)."""
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFile(path, f"not a UTF-8 text file (byte {data[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise CorruptFile(path, f"not valid JSON ({e})") from None


class NotWritable(PermissionError):
    def __init__(self, path: str | os.PathLike, what: str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{what} {path} is not writable: {reason}")


def writable_problem(folder: str | os.PathLike) -> str | None:
    """Why no file can be written under `folder` (which may not exist yet), or None. Tried, not
    guessed: a temporary file is made and removed in the nearest existing folder (os.access is
    wrong for root, read-only mounts and NFS); nothing else is created."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".roma-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"cannot create a file in {probe} ({e.strerror or e})"
    return None


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """NotWritable (a PermissionError naming `what` and the folder) unless files can be written there."""
    problem = writable_problem(folder)
    if problem:
        raise NotWritable(folder, what, problem)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it replaces `path` (else it is removed).

    The temporary name keeps `path`'s suffix, so writers that choose a format by suffix
    (matplotlib's savefig, pandas) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; outputs are shared like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")
