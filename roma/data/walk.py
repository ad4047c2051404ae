"""The one walk over a data folder: what is listed and what is not, for training, the data check
and the probes alike.

    w = walk(root)                       # every regular file below root, sorted
    w = walk(root / cls, within=root)    # a class folder: links into the dataset are not followed
    w.files, w.skipped                   # skipped: {reason: [paths relative to the walked folder]}

Rules (one place): hidden files and folders are left out; only regular files are listed (a FIFO,
socket or device named *.jpg is skipped: opening a FIFO blocks forever); a broken link is
skipped; a link to a folder is followed only when its target lies outside `within` (default: the
walked folder itself) and has not been walked yet, so a link into the dataset (e.g. into a
sibling class) or a loop never lists an image twice. File links are followed wherever they
point (the UC Merced halves are folders of such links). Each skip is counted by reason, for the
data check's output.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

NOT_REGULAR = "not a regular file (FIFO, socket or device)"
BROKEN = "broken link"
LINK_INSIDE = "link to a folder inside the dataset (its files are listed once, where they are)"
LOOP = "folder link loop (a folder already walked)"


@dataclass
class Walk:
    root: Path
    files: list[Path] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # every folder walked (roma.data.fingerprint stamps them)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path.relative_to(self.root).as_posix())

    def skipped_note(self) -> str | None:
        """One line counting what was not listed, or None."""
        if not self.skipped:
            return None
        parts = [f"{len(v)} {reason}: {', '.join(v[:3])}{', ...' if len(v) > 3 else ''}" for reason, v in self.skipped.items()]
        n = sum(map(len, self.skipped.values()))
        return f"{n} {'entry' if n == 1 else 'entries'} not listed: " + "; ".join(parts)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk(root: str | os.PathLike, within: str | os.PathLike | None = None) -> Walk:
    root = Path(root)
    bound = os.path.realpath(within if within is not None else root)
    out = Walk(root)
    visited: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in visited:
            out.skip(LOOP, folder)
            continue
        visited.add(real)
        out.folders.append(str(folder))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir, is_file = e.is_dir(), e.is_file()  # follow links: one stat for a link, none otherwise
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if e.is_symlink():
                    target = os.path.realpath(p)
                    if target in visited or _inside(real, target):
                        out.skip(LOOP, p)
                        continue
                    if _inside(target, bound):
                        out.skip(LINK_INSIDE, p)
                        continue
                subdirs.append(p)
            elif is_file:
                out.files.append(p)
            elif e.is_symlink() and not os.path.exists(p):
                out.skip(BROKEN, p)
            else:
                out.skip(NOT_REGULAR, p)
        stack.extend(reversed(subdirs))
    out.files.sort()
    return out
