"""The project's one torch.load: `weights_only=True`, and one line naming the file when it cannot be read.

    state = torchfile.load(path, fix="relaunch with --force")   # UnreadableCheckpoint on any failure

A truncated last.pt, a file that is not a torch checkpoint, or a pickle that holds objects other
than tensors and plain values (which weights_only=True refuses, by design) all end in one
UnreadableCheckpoint: the file, the reason, what to do. The reason never repeats torch's advice to
retry with weights_only=False: loading such a file would run whatever code its pickle names.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

REFUSED = "it holds objects other than tensors and plain values, which loading refuses (weights_only=True)"


class UnreadableCheckpoint(RuntimeError):
    def __init__(self, path: str | os.PathLike, reason: str, fix: str = ""):
        self.path, self.reason, self.fix = Path(path), reason, fix
        super().__init__(f"cannot read checkpoint {path}: {reason}" + (f"; {fix}" if fix else ""))


def reason_of(e: BaseException, path: str | os.PathLike | None = None) -> str:
    """torch's error as one line, without its weights_only=False advice."""
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
        return REFUSED
    first = (str(e).strip().splitlines() or [""])[0][:300]
    what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    whole = path is not None and zipfile.is_zipfile(path)  # torch.save writes a zip with its directory at the end
    if not whole or "central directory" in first or isinstance(e, EOFError):
        return f"truncated or not a torch checkpoint ({what})"
    return what


def load(path: str | os.PathLike, fix: str = "") -> Any:
    """torch.load(path, map_location="cpu", weights_only=True); FileNotFoundError when absent,
    UnreadableCheckpoint (file, reason, `fix`) for anything else that stops it."""
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every reason becomes the one named error
        raise UnreadableCheckpoint(path, reason_of(e, path), fix) from None
