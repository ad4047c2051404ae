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
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from roma.eval.splits import HALVES_RATIO, HALVES_SEED, write_halves  # noqa: E402


def build(aid: Path, out: Path) -> dict:
    """Write (or reuse) the pool / probe halves; -> {"pool": n, "probe": n, "out": str}."""
    return write_halves(aid, out, "aid")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--aid", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "AID",
                   help="AID root with one folder per class")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "micro_data")
    a = p.parse_args(argv)
    if not a.aid.is_dir():
        raise SystemExit(f"micro_split: AID root {a.aid} is not a folder (give --aid)")
    info = build(a.aid, a.out)
    print(f"AID split TR={HALVES_RATIO:.0%} seed {HALVES_SEED}: pool {info['pool']} images -> "
          f"{a.out / 'aid_pool'}, probe set {info['probe']} images -> {a.out / 'aid_probe'}")


if __name__ == "__main__":
    main()
