"""Where roma keeps what it downloads and caches: one root, one rule.

    cache_root()          # $ROMA_CACHE, else $XDG_CACHE_HOME/roma, else ~/.cache/roma
    cache_dir("data")     # <root>/data: data listings and checksums (roma.data.fingerprint)
    cache_dir("kernels")  # <root>/kernels: the compiled CPU scan (roma.models.native_scan)
Downloaded datasets live at <root>/<dataset> (roma.data.download).
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ROMA_CACHE"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "roma"


def cache_dir(kind: str) -> Path:
    return cache_root() / kind
