"""Every value of every evaluation is checked with the rest of the config, before anything runs:
a bad probe or dense value fails at validation (named: file, key, value), not after pretraining."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from roma.config import DenseConfig, ProbeConfig
from roma.eval.checks import dense_problems, probe_problems
from roma.launch import cli
from roma.spec import load_spec
from roma.validation import ConfigError

# (field, bad value, words of the message): one row per rule of roma.eval.checks
BAD_PROBE = [
    ("epochs", 0, "must be >= 1, got 0"),
    ("batch_size", 1, "must be >= 2 (the head's BatchNorm needs two samples), got 1"),
    ("seeds", [], "must not be empty"),
    ("seeds", [0, 0], "repeat a seed"),
    ("train_ratios", [], "must not be empty"),
    ("train_ratios", [1.5], "a fraction in (0, 1), got 1.5"),
    ("dataset", "aid oa", "letters, digits and _"),
    ("img_size", 100, "not a multiple of the model's patch size 8"),
    ("img_size", -1, "must be >= 0"),
    ("eval_every", 0, "must be >= 1"),
    ("extract_batch_size", 0, "must be >= 1"),
    ("max_per_class", -1, "must be >= 0"),
    ("num_workers", -1, "must be >= 0, got -1"),
    ("blr", 0.0, "must be positive"),
    ("weight_decay", -0.1, "must be >= 0"),
    ("warmup_epochs", -1.0, "must be >= 0"),
    ("min_lr", -1e-6, "must be >= 0"),
    ("label_smoothing", 1.0, "a fraction in [0, 1)"),
    ("val_fraction", 0.0, "a fraction in (0, 1)"),
    ("lr_grid", [], "must not be empty"),
    ("lr_grid", [1.0, -3.0], "must be positive"),
    ("max_bad_fraction", 2.0, "a fraction in [0, 1], got 2.0"),
]
BAD_DENSE = [
    ("epochs", 0, "must be >= 1, got 0"),
    ("eval_every", 0, "must be >= 1"),
    ("max_steps", 0, "must be >= 1 or null"),
    ("batch_size", 1, "must be >= 2"),
    ("img_size", 8, "must be >= 16 px"),
    ("img_size", 100, "not a multiple of the model's patch size 8"),
    ("crop_size", 8, "must be >= 16 px"),
    ("lr", 0.0, "must be positive"),
    ("layer_decay", 1.5, "must be in (0, 1]"),
    ("min_lr", -1.0, "must be >= 0"),
    ("weight_decay", -1.0, "must be >= 0"),
    ("warmup_epochs", -1.0, "must be >= 0"),
    ("val_fraction", 0.0, "a fraction in (0, 1)"),
    ("test_fraction", 1.0, "a fraction in [0, 1)"),
    ("test_fraction", 0.9, "leaves nothing to train on"),
    ("decoder_channels", [64, 32], "give 4 widths"),
    ("decoder_channels", [64, 32, 0, 8], "widths must be >= 1"),
    ("head_channels", 1, "must be >= 2"),
    ("slide_stride", -1, "must be >= 0"),
    ("num_workers", -1, "must be >= 0"),
]


@pytest.fixture
def micro_with_levir(tmp_path):
    """The micro base (8-px patches) with one probe and one LEVIR task, on a folder of names only."""
    for i in range(40):
        (tmp_path / "pool" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pool" / f"c{i % 2}" / f"{i}.jpg").touch()
    (tmp_path / "levir").mkdir()

    def spec(probe: dict | None = None, dense: dict | None = None):
        body = {"base": "micro", "data.heldout_size": 0, "train.val_every_steps": 0,
                "eval.probes": [{"dataset": "aid", "root": str(tmp_path / "pool"), **(probe or {})}],
                "eval.dense": [{"task": "levir", "root": str(tmp_path / "levir"), "img_size": 64,
                                "crop_size": 64, **(dense or {})}]}
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(body, sort_keys=False))
        return p
    spec.data = tmp_path / "pool"
    return spec


def test_the_good_config_passes(micro_with_levir):
    (run,) = load_spec(micro_with_levir(), data_root=str(micro_with_levir.data)).runs
    assert run.eval.probes[0].epochs >= 1 and run.eval.dense[0].epochs >= 1


@pytest.mark.parametrize("field,value,words", BAD_PROBE, ids=[f"{f}={v}" for f, v, _ in BAD_PROBE])
def test_a_bad_probe_value_is_named_at_validation(micro_with_levir, field, value, words):
    with pytest.raises(ConfigError) as e:
        load_spec(micro_with_levir(probe={field: value}), data_root=str(micro_with_levir.data))
    assert f"bad.yaml: eval.probes[0].{field}: " in str(e.value) and words in str(e.value), str(e.value)


@pytest.mark.parametrize("field,value,words", BAD_DENSE, ids=[f"{f}={v}" for f, v, _ in BAD_DENSE])
def test_a_bad_dense_value_is_named_at_validation(micro_with_levir, field, value, words):
    with pytest.raises(ConfigError) as e:
        load_spec(micro_with_levir(dense={field: value}), data_root=str(micro_with_levir.data))
    assert f"bad.yaml: eval.dense[0].{field}: " in str(e.value) and words in str(e.value), str(e.value)


def test_the_checks_name_nothing_in_the_defaults_and_every_field_has_a_rule():
    assert probe_problems(ProbeConfig()) == [] and dense_problems(DenseConfig()) == []
    ruled = {f for f, *_ in BAD_PROBE}
    # fields without a value rule: enumerations (CHOICES, checked by validation), the root (file
    # system), seeds of a split (any int)
    free = {"root", "protocol", "scan", "readout", "split_seed"}
    assert {f.name for f in dataclasses.fields(ProbeConfig)} - free == ruled
    free = {"task", "root", "scan", "precision", "seed", "labels_root", "split_seed"}
    assert {f.name for f in dataclasses.fields(DenseConfig)} - free == {f for f, *_ in BAD_DENSE}


def test_a_launch_with_a_bad_evaluation_value_starts_nothing(micro_with_levir, tmp_path, capsys):
    spec = micro_with_levir(probe={"epochs": 0}, dense={"epochs": 0})
    rc = cli.main([str(spec), "--data-root", str(micro_with_levir.data), "--set", f"output_root={tmp_path / 'out'}",
                   "--executor", "debug", "--skip-data-check"])
    printed = capsys.readouterr()
    assert rc != 0
    assert "eval.probes[0].epochs: must be >= 1, got 0" in printed.out + printed.err
    assert "eval.dense[0].epochs: must be >= 1, got 0" in printed.out + printed.err
    assert not (tmp_path / "out").exists()  # no run folder, no pretraining
