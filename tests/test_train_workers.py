"""A run with DataLoader workers exits promptly, whether it finishes mid-epoch or fails.

Workers ignore SIGTERM (SLURM signals every process of a job), so the loop must stop them itself:
left to interpreter exit, multiprocessing would SIGTERM them and wait forever.
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from roma.config import to_plain
from test_train_helpers import nano_config, write_pngs

HELPER = Path(__file__).with_name("test_train_helpers.py")


@pytest.mark.parametrize("blr, ok", [(1e-2, True), (1e38, False)])  # 1e38: the loss blows up -> error
def test_run_with_workers_exits(tmp_path, blr, ok):
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=24), tmp_path / "out", max_steps=3, blr=blr)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=2))
    spec = tmp_path / "cfg.json"
    spec.write_text(json.dumps(to_plain(cfg)))
    res = subprocess.run([sys.executable, str(HELPER), str(spec)], capture_output=True, text=True, timeout=180)
    assert (res.returncode == 0) == ok, res.stderr[-2000:]
    if not ok:
        assert "non-finite" in res.stderr
