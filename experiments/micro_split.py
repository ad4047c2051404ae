"""Split AID into a pretraining pool and a disjoint probe set for the micro scaling study.

    python experiments/micro_split.py [--aid ../shared/data/AID] [--out outputs/micro_data]

The stratified TR = 50% split of roma.eval.splits (seed 0, no validation part) puts half of every
class into the pool and the other half into the probe set; the two halves are written as folders
of symlinks to the original images (nothing is copied):

    <out>/aid_pool/<class>/<image>    the pretraining pool: data.root of the *_micro specs
    <out>/aid_probe/<class>/<image>   the probe set: the AID linear probe's root (it splits it again)
    <out>/aid_split.json              the split file (relative paths of both halves, dataset fingerprint)

Pretraining never sees a probe image: the micro specs point data.root at the pool only. Running
the command again with the same AID copy is a no-op; with another copy it rebuilds the links.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from roma import atomic  # noqa: E402
from roma.eval.splits import load_split, make_split, save_split, scan_folder  # noqa: E402

SPLIT_RATIO, SPLIT_SEED = 0.5, 0  # the paper's TR = 50%, a fixed seed


def _link_tree(ds_root: Path, rel_paths: list[str], out: Path) -> None:
    """out/<rel path> -> ds_root/<rel path>, built in a temp folder then renamed (atomic per half)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in rel_paths:
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(ds_root / rel, dst)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _up_to_date(out: Path, ds, split_file: Path) -> bool:
    if not split_file.is_file():
        return False
    doc = json.loads(split_file.read_text())
    if doc.get("dataset_fingerprint") != ds.fingerprint or doc.get("aid_root") != str(ds.root):
        return False
    for half, part in (("aid_pool", "train"), ("aid_probe", "test")):
        n = sum(1 for p in (out / half).rglob("*") if p.is_symlink())
        if n != len(doc[part]):
            return False
    return True


def build(aid: Path, out: Path) -> dict:
    """Write (or reuse) the pool / probe halves; -> {"pool": n, "probe": n, "out": str}."""
    ds = scan_folder(aid.resolve())
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "aid_split.json"
    if not _up_to_date(out, ds, split_file):
        split = make_split(ds, SPLIT_RATIO, SPLIT_SEED, val_fraction=0.0)
        save_split(split, ds, split_file)
        load_split(split_file, ds, SPLIT_RATIO, SPLIT_SEED, 0.0)  # re-read: disjoint and complete
        doc = json.loads(split_file.read_text())
        doc["aid_root"] = str(ds.root)
        atomic.write_json(split_file, doc)
        _link_tree(ds.root, doc["train"], out / "aid_pool")
        _link_tree(ds.root, doc["test"], out / "aid_probe")
    doc = json.loads(split_file.read_text())
    if set(doc["train"]) & set(doc["test"]):
        raise RuntimeError(f"{split_file}: pool and probe halves overlap")
    return {"pool": len(doc["train"]), "probe": len(doc["test"]), "out": str(out)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--aid", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "AID",
                   help="AID root with one folder per class")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "micro_data")
    a = p.parse_args(argv)
    if not a.aid.is_dir():
        raise SystemExit(f"micro_split: AID root {a.aid} is not a folder (give --aid)")
    info = build(a.aid, a.out)
    print(f"AID split TR={SPLIT_RATIO:.0%} seed {SPLIT_SEED}: pool {info['pool']} images -> "
          f"{a.out / 'aid_pool'}, probe set {info['probe']} images -> {a.out / 'aid_probe'}")


if __name__ == "__main__":
    main()
