"""Is an image file whole? Answered from its first and last bytes, without decoding it.

    header_problem(head, tail, size) -> None | "truncated JPEG (no end-of-image marker)" | ...
    file_problem(path)               -> the same, reading 16 + 256 bytes of the file, then whether
                                        roma.data.decode would refuse it (mode, pixel cap: header only)

JPEG: the end-of-image marker; PNG: the IEND chunk; TIFF: the strips / tiles of the first
directory lie inside the file (PIL reads that directory only); BMP and WebP: their declared sizes.
roma.data.check runs this over a dataset copy (and over shard members), in seconds.
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path


def _tiff_problem(path: Path, head: bytes, size: int) -> str | None:
    from PIL import Image

    ifd = struct.unpack("<I" if head[:2] == b"II" else ">I", head[4:8])[0]
    if ifd + 2 > size:
        return f"truncated TIFF: its first directory is at byte {ifd:,}, the file has {size:,}"
    with Image.open(path) as im:  # reads the header and the first IFD only
        tags = im.tag_v2
        # PIL warns and reads on when a directory is cut short: its last tags are then missing
        if not any(o in tags and c in tags for o, c in ((273, 279), (324, 325))):
            return "truncated TIFF: its first directory lacks the strip or tile offsets and sizes"
        for off_tag, cnt_tag in ((273, 279), (324, 325)):  # strips, tiles
            offs, cnts = tags.get(off_tag), tags.get(cnt_tag)
            if offs is None or cnts is None:
                continue
            offs = offs if isinstance(offs, tuple) else (offs,)
            cnts = cnts if isinstance(cnts, tuple) else (cnts,)
            end = max(o + c for o, c in zip(offs, cnts))
            if end > size:
                return f"truncated TIFF: image data runs to byte {end:,}, the file has {size:,}"
    return None


def header_problem(head: bytes, tail: bytes, size: int, path: Path | None = None) -> str | None:
    """Why these first/last bytes are not a whole image file (None: they look whole)."""
    if size == 0:
        return "empty file"
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail[-256:] else "truncated JPEG (no end-of-image marker)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if b"IEND" in tail[-12:] else "truncated PNG (no IEND chunk at the end)"
    if head[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF: recognised, its directories not followed
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        if path is None:
            return None
        try:
            return _tiff_problem(path, head, size)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a broken header
            return f"unreadable TIFF header ({type(e).__name__}: {e})"
    if head.startswith(b"BM") and len(head) >= 6:
        declared = struct.unpack("<I", head[2:6])[0]
        return None if declared <= size else f"truncated BMP ({size:,} of {declared:,} bytes)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return None if declared <= size else f"truncated WebP ({size:,} of {declared:,} bytes)"
    return f"not an image file (starts with {head[:8]!r})"


def file_problem(path: Path) -> str | None:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO blocks forever; a device is not an image
            return "not a regular file (FIFO, socket, device or folder)"
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(16)
            if size > 16:
                f.seek(max(0, size - 256))
            tail = f.read(256) if size > 16 else head
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    from roma.data.decode import header_problem as decode_problem

    return header_problem(head, tail, size, path) or decode_problem(path)  # whole, then feedable (mode, size)
