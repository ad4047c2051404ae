"""Atomic file writes: a temporary file in the same folder, then os.replace.

A reader (a relaunch, `launch.py status`, a resumed job) sees the old file or the new one, never a
half-written one, even when the writer is killed mid-write.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")
