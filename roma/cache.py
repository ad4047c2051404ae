"""Where roma keeps its caches (data listings, compiled kernels): one rule for all of them.

    cache_dir("data")     # $ROMA_CACHE_DIR/data, else $XDG_CACHE_HOME/roma/data, else ~/.cache/roma/data
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    root = os.environ.get("ROMA_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "roma"
    return Path(root) / kind
