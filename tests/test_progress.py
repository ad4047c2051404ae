"""roma.progress: the one progress display (downloads, features, dense training, fits, pretraining)."""
from __future__ import annotations

import re

import pytest

from roma import progress as progress_mod
from roma.progress import Progress
from roma.train.pretrain import progress_postfix


def test_plain_progress_lines_have_rate_and_time_left(monkeypatch, capsys):
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    with progress_mod.progress(total=100, desc="features", unit="img", every_s=0) as bar:
        bar.set_postfix("loss 0.5")
        bar.update(25)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[features] 25/100 img (25%), ") and " left" in lines[0] and "loss 0.5" in lines[0]
    assert len(lines) == 1  # close() does not repeat a state already printed
    with progress_mod.progress(total=100, desc="features", unit="img", every_s=3600) as bar:
        bar.update(100)
    (last,) = capsys.readouterr().out.splitlines()  # not printed by update (30 s not passed): once, by close()
    assert last.startswith("[features] 100/100 img (100%)") and "done in" in last


def test_progress_styles(monkeypatch, capsys):
    monkeypatch.setenv("ROMA_PROGRESS", "off")
    with progress_mod.progress(total=3, desc="x", every_s=0) as bar:
        bar.update(3)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("ROMA_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="ROMA_PROGRESS"):
        progress_mod.style()
    monkeypatch.delenv("ROMA_PROGRESS")
    assert progress_mod.style() == "plain"  # pytest captures stderr: not a terminal
    assert progress_mod.fmt_seconds(75) == "1m15s" and progress_mod.fmt_seconds(3725) == "1h02m"
    assert progress_mod.fmt_amount(3 * 2**20, "B") == "3.0 MiB"


# ----------------------------------------------------------------------------- a line per N steps
def test_plain_progress_lines_when_not_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("ROMA_PROGRESS", raising=False)  # pytest captures stderr: plain
    p = Progress(total=10, desc="pretrain", unit="step", every_n=4)
    m = {"loss": 0.5, "lr": 1e-4, "images_per_s": 12.0, "bad_images": 0}
    for _ in range(3):
        p.update(1)
    p.update(1, progress_postfix(1, m))
    p.close()
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"step 4/10 epoch 1 loss 0\.5000 lr 1\.000e-04 images/s 12\.0 bad 0 \d+s left", line), line


def test_step_lines_come_every_n_units_and_at_the_end(monkeypatch, capsys):
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    with Progress(total=7, desc="pretrain", unit="step", initial=2, every_n=2) as p:  # resumed at step 2
        for step in range(3, 8):
            p.update(1, f"loss {step}")
    lines = capsys.readouterr().out.splitlines()
    assert [ln.rsplit(" ", 2)[0] if ln.endswith(" left") else ln.rsplit(" ", 3)[0] for ln in lines] == \
        ["step 4/7 loss 4", "step 6/7 loss 6", "step 7/7 loss 7"]
    assert lines[0].endswith(" left") and lines[-1].startswith("step 7/7 loss 7 done in ")  # time left, then taken


def test_time_left_is_the_steps_left_at_this_process_rate(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    p = Progress(total=100, desc="pretrain", unit="step", initial=40, every_n=10)  # resumed at step 40
    clock[0] += 30.0
    p.update(10, "loss 1")  # 10 steps in 30 s: 50 steps left take 150 s
    assert p.line() == "step 50/100 loss 1 2m30s left"
    rate = progress_mod.Rate(total=100, start=40, t0=100.0)
    assert rate.seconds_per_unit(50) == 3.0 and rate.left(50) == 150.0 and rate.left(40) is None
    p.close()
    with pytest.raises(ValueError, match="every_n"):
        Progress(total=3, desc="x", every_n=0)


def test_disabled_or_off_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    with Progress(total=4, desc="pretrain", unit="step", every_n=1, enabled=False) as p:  # a rank > 0
        p.update(4, "loss 1")
    monkeypatch.setenv("ROMA_PROGRESS", "off")
    with Progress(total=4, desc="pretrain", unit="step", every_n=1) as p:
        p.update(4, "loss 1")
    assert capsys.readouterr().out == ""


def test_roma_progress_governs_pretraining(tmp_path, monkeypatch, capsys):
    from test_train_helpers import nano_config, write_pngs

    from roma.train.pretrain import pretrain

    data = write_pngs(tmp_path / "pool", n=8)
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    pretrain(nano_config(data, tmp_path / "a", epochs=2, global_batch=4, log_every_steps=2), tmp_path / "a")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["2/4", "4/4"]
    assert all(" loss " in ln and " images/s " in ln and " bad 0 " in ln for ln in lines)
    assert lines[0].endswith(" left") and " done in " in lines[1]  # the time left, then the time taken
    monkeypatch.setenv("ROMA_PROGRESS", "off")
    pretrain(nano_config(data, tmp_path / "b", epochs=2, global_batch=4, log_every_steps=2), tmp_path / "b")
    assert not [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
