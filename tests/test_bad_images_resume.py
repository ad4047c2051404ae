"""bad_images.txt and the bad_images metric count each unreadable image once, however many times a
run is killed after its last checkpoint and resumed (the killed attempt's appended lines are found again)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from roma.train.hooks import TrainHooks
from roma.train.pretrain import pretrain
from test_train_helpers import nano_config, write_pngs


class Killed(BaseException):
    """Stands for SIGKILL: nothing is saved after the last checkpoint."""


class Recorder(TrainHooks):
    def __init__(self, kill_at: int | None):
        self.kill_at, self.bad = kill_at, {}

    def on_log(self, step, metrics):
        self.bad[step] = metrics["bad_images"]
        if step == self.kill_at:
            raise Killed(step)


def test_resumed_twice_after_kills_each_bad_image_counted_once(tmp_path, one_thread):
    imgs = write_pngs(tmp_path / "imgs", n=24)
    broken = sorted(imgs.glob("*.png"))[::3]  # 8 of 24
    for p in broken:
        p.write_bytes(p.read_bytes()[:40])  # truncated: the header reads, decoding fails
    cfg = nano_config(imgs, tmp_path / "out", epochs=1, ckpt_every_steps=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_bad_fraction=0.5))
    run_dir = cfg.run_dir
    listing = run_dir / "bad_images.txt"
    replayed = 0
    for kill_at in (3, 5):  # checkpoints at steps 2 and 4: each kill loses a step, and what it found
        rec = Recorder(kill_at)
        with pytest.raises(Killed):
            pretrain(cfg, run_dir, hooks=rec)
        saved = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["bad_tracker"]["bad"]
        replayed += len(listing.read_text().splitlines()) - len(saved)  # lines the resume finds again
    assert replayed > 0, "the kills should land after bad images the checkpoint had not recorded"
    rec = Recorder(None)
    result = pretrain(cfg, run_dir, hooks=rec)
    lines = listing.read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(broken)
    assert {Path(line).name for line in lines} == {p.name for p in broken}
    assert result["bad_images"] == len(broken) and rec.bad[max(rec.bad)] == len(broken)
