"""Image sources: folder, manifests (txt/csv/parquet) and tar shards list the same images."""
from __future__ import annotations

import random
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from roma.data import list_images, read_bytes
from roma.data.shard_reader import expand_braces, index_shard, iter_shard
from roma.data.shards import main as shards_main, pack

NAMES = ["a/x.JPG", "a/b/c/y.png", "z.tif", "w.jpeg", "a/b/v.TIFF", "q.jpg"]


def make_tree(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for name in NAMES:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}[p.suffix.lower()]
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(p, format=fmt)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "h.png")
    return sorted(NAMES)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "imgs"
    return root, make_tree(root)


def test_folder_lists_every_image_at_any_depth_sorted(tree):
    root, names = tree
    refs = list_images(root)
    assert [r.key for r in refs] == names
    assert all(Path(r.path) == root / r.key for r in refs)
    assert read_bytes(refs[0]) == (root / refs[0].key).read_bytes()


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_manifests_list_the_same_images_as_the_folder(tree, kind):
    root, names = tree
    shuffled = names[:]
    random.Random(1).shuffle(shuffled)
    m = root / f"list.{kind}"
    if kind == "txt":
        m.write_text("# a comment\n" + "\n".join(shuffled) + "\n\n")
    elif kind == "csv":
        pd.DataFrame({"path": shuffled, "label": range(len(names))}).to_csv(m, index=False)
    else:
        pd.DataFrame({"path": shuffled}).to_parquet(m)
    refs = list_images(m)
    folder = list_images(root)
    assert [r.key for r in refs] == [r.key for r in folder]
    assert [Path(r.path).resolve() for r in refs] == [Path(r.path).resolve() for r in folder]


def test_manifest_with_absolute_paths_elsewhere(tree, tmp_path):
    root, names = tree
    m = tmp_path / "elsewhere" / "abs.txt"
    m.parent.mkdir()
    m.write_text("\n".join(str(root / n) for n in names))
    assert sorted(r.path for r in list_images(m)) == sorted(str(root / n) for n in names)


def test_manifest_errors_name_the_problem(tree, tmp_path):
    root, _ = tree
    bad_col = tmp_path / "m.csv"
    pd.DataFrame({"file": ["x.jpg"]}).to_csv(bad_col, index=False)
    with pytest.raises(ValueError, match="no `path` column"):
        list_images(bad_col)
    missing = root / "missing.txt"
    missing.write_text("a/x.JPG\nnope/gone.jpg\n")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        list_images(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "no_such_folder")
    with pytest.raises(ValueError, match="no images"):
        (tmp_path / "empty").mkdir()
        list_images(tmp_path / "empty")


def test_pack_then_read_round_trip(tree, tmp_path):
    root, names = tree
    out = tmp_path / "shards"
    shards = pack(root, out, shard_size=4)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(out.glob(".*tmp"))  # no temporary files left
    folder = {r.key: read_bytes(r) for r in list_images(root)}
    for source in (out, str(out / "shard-*.tar"), str(out / "shard-{000000..000001}.tar")):
        refs = list_images(source)
        assert [r.key for r in refs] == names
        assert {r.key: read_bytes(r) for r in refs} == folder  # bytes unchanged, random access by offset
    streamed = {k: v for s in shards for k, v in iter_shard(str(s))}
    assert streamed == folder
    assert [len(index_shard(str(s))) for s in shards] == [4, 2]
    with pytest.raises(FileExistsError, match=r"already holds 4 file\(s\) of the kind pack writes \(index.json"):
        pack(root, out, shard_size=4)


def test_pack_cli_from_manifest(tree, tmp_path, capsys):
    root, names = tree
    (root / "m.txt").write_text("\n".join(names[:3]))
    assert shards_main(["pack", str(root / "m.txt"), str(tmp_path / "s"), "--shard-size", "2"]) == 0
    assert "packed 3 images into 2 shard(s)" in capsys.readouterr().out
    assert [r.key for r in list_images(tmp_path / "s")] == names[:3]


def test_foreign_shard_without_keys_and_missing_brace_shard(tmp_path):
    p = tmp_path / "other.tar"
    img = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(img)
    with tarfile.open(p, "w") as tf:
        tf.add(img, arcname="sample1.png")
        tf.add(img, arcname="sample1.cls")  # a non-image member of the same sample is ignored
    refs = list_images(p)
    assert [r.key for r in refs] == ["other.tar/sample1.png"]
    assert read_bytes(refs[0]) == img.read_bytes()
    (tmp_path / "x-000.tar").write_bytes(p.read_bytes())
    with pytest.raises(FileNotFoundError, match="1 shard.*x-001.tar"):
        list_images(str(tmp_path / "x-{000..001}.tar"))


def test_expand_braces():
    assert expand_braces("s-{008..011}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    with pytest.raises(ValueError, match="backwards"):
        expand_braces("{3..1}")


def test_symlinked_folders_are_followed_but_loops_are_not(tree, tmp_path):
    root, names = tree
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    assert [r.key for r in list_images(root)] == names
