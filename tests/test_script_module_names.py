"""A module beside a script must not shadow the standard library: `python analysis/fit_scaling.py`
puts analysis/ first on sys.path, so an analysis/select.py broke `import select` inside pandas."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = ("analysis", "experiments", "benchmarks", "slurm")


def test_no_module_beside_a_script_shadows_the_standard_library():
    clashes = [str(p.relative_to(REPO)) for d in SCRIPT_DIRS for p in (REPO / d).glob("*.py")
               if p.stem in sys.stdlib_module_names]
    assert not clashes, f"rename these: they shadow the standard library when a script beside them runs: {clashes}"
