"""One image of a pretraining source: its reference (key, file, byte range) and how its bytes are read.

The lowest layer of roma.data: sources (folders, manifests), the shard reader and subsets all speak
ImageRef, so this module imports nothing of theirs.
"""
from __future__ import annotations

from typing import NamedTuple

# the one list of image extensions: pretraining sources, launch-time checks, evaluation folders
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class ImageRef(NamedTuple):  # a tuple, not a dataclass: millions are built at start, 20x cheaper
    key: str  # identity: relative path (folder/manifest) or the path stored in the shard
    path: str  # the file to open: the image itself, or the .tar shard holding it
    offset: int = -1  # byte offset of the image's data inside the shard; -1: `path` is the image
    size: int = -1  # bytes of the image's data inside the shard

    @property
    def in_shard(self) -> bool:
        return self.offset >= 0

    def __str__(self) -> str:  # what bad_images.txt shows
        return f"{self.path}:{self.key}" if self.in_shard else self.path


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def read_bytes(ref: ImageRef) -> bytes:
    """The encoded image bytes of `ref` (a plain file, or a slice of a tar shard)."""
    with open(ref.path, "rb") as f:
        return read_slice(f, ref) if ref.in_shard else f.read()


def read_slice(f, ref: ImageRef) -> bytes:
    """The bytes of a shard member from the shard's open file `f`."""
    f.seek(ref.offset)
    data = f.read(ref.size)
    if len(data) != ref.size:
        raise OSError(f"shard {ref.path} is truncated: {ref.key} wants {ref.size} bytes at {ref.offset}, "
                      f"got {len(data)}")
    return data

