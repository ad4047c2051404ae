"""The throughput table and the budget estimate: every row sourced, scaled rows consistent with their
base and the registry's FLOPs, estimates for known rows, a clear answer for missing ones."""
from __future__ import annotations

import pytest
import yaml

from roma.config import AresConfig, MspConfig
from roma.launch.budget import TABLE, NoEntry, estimate, gpu_types, load_table
from roma.launch.profiles import load_profile
from roma.models.registry import create_model, pretrain_flops


def rows_by_name():
    return {r.name: r for r in load_table()}


def test_every_row_has_a_source_and_scaled_rows_follow_their_base():
    table = load_table()
    assert len(table) >= 10 and {"h200", "h100", "a100", "cpu"} <= set(gpu_types(table))
    by = {r.name: r for r in table}
    for r in table:
        assert r.source and r.images_per_s > 0
        if r.basis == "measured":
            assert not r.scaled_from and r.factor is None
        else:
            base = by[r.scaled_from]
            assert r.images_per_s == pytest.approx(base.images_per_s * r.factor, rel=2e-3), r.name
            if r.model != base.model:  # a FLOPs ratio, stated in the row
                assert r.factor == pytest.approx(base.gflops / r.gflops, rel=2e-3), r.name
                assert "FLOPs" in r.source
    measured = [r for r in table if r.basis == "measured"]
    assert any(r.gpu_type == "h200" for r in measured) and any(r.gpu_type == "cpu" for r in measured)


@pytest.mark.parametrize("name", ["roma_micro_tiny", "roma_micro_base", pytest.param("roma_tiny", marks=pytest.mark.slow),
                                  pytest.param("roma_base", marks=pytest.mark.slow)])
def test_gflops_column_is_the_registry_count(name):
    row = next(r for r in load_table() if r.model == name)
    model = create_model(name, ares=AresConfig(), msp=MspConfig())  # the paper recipe: ARES + MSP on
    assert row.gflops == pytest.approx(pretrain_flops(model) / 1e9, rel=1e-3)


def test_estimate_for_a_measured_row():
    row = rows_by_name()["roma_base@192/h200"]
    assert row.basis == "measured" and "benchmarks/results/h200" in row.source
    images = 400 * 62_500  # the paper's 62.5K point: 400 epochs
    est = estimate("roma_base", 192, "H200", gpu_count=4, images_seen=images)
    assert est.row == row and est.gpu_count == 4
    assert est.wall_hours == pytest.approx(images / (4 * row.images_per_s) / 3600)
    assert est.gpu_hours == pytest.approx(images / row.images_per_s / 3600)  # linear: same device-hours
    assert any("not measured" in a for a in est.assumptions)
    half = estimate("roma_base", 192, "h200", 4, images, scaling_efficiency=0.5)
    assert half.wall_hours == pytest.approx(2 * est.wall_hours)
    one = estimate("roma_base", 192, "h200", 1, images)
    assert one.assumptions == () and "H200-hours" in one.describe()


def test_flops_scaling_between_sizes():
    by = rows_by_name()
    tiny, base, large = by["roma_tiny@192/h200"], by["roma_base@192/h200"], by["roma_large@192/h200"]
    assert tiny.basis == large.basis == "scaled" and tiny.scaled_from == large.scaled_from == base.name
    assert tiny.images_per_s / base.images_per_s == pytest.approx(base.gflops / tiny.gflops, rel=2e-3)
    est_t = estimate("roma_tiny", 192, "h200", 1, 10**6)
    est_l = estimate("roma_large", 192, "h200", 1, 10**6)
    assert est_l.gpu_hours / est_t.gpu_hours == pytest.approx(large.gflops / tiny.gflops, rel=5e-3)
    assert any("FLOPs" in a for a in est_t.assumptions)


def test_missing_combination_names_the_closest_rows():
    got = estimate("roma_base", 224, "h200", 8, 10**6)
    assert isinstance(got, NoEntry)
    assert got.closest[0].name == "roma_base@192/h200"
    assert "no throughput entry for roma_base at 224 px on h200" in got.message and "roma_base@192/h200" in got.message
    other = estimate("roma_large", 192, "v100", 1, 10**6)
    assert isinstance(other, NoEntry) and other.closest[0].model == "roma_large"
    with pytest.raises(ValueError, match="gpu_count must be a positive integer"):
        estimate("roma_base", 192, "h200", 0, 10)


def test_bad_table_rows_are_refused(tmp_path):
    header = TABLE.read_text().splitlines()
    cols = next(ln for ln in header if not ln.startswith("#"))
    bad = tmp_path / "t.csv"
    bad.write_text(f"{cols}\nroma_base,192,h200,400,28.2,measured,,,\n")
    with pytest.raises(ValueError, match="row 2 .*every number needs its source"):
        load_table(bad)
    bad.write_text(f"{cols}\nroma_base,192,h200,400,28.2,guessed,,,from a hat\n")
    with pytest.raises(ValueError, match="basis 'guessed'"):
        load_table(bad)
    bad.write_text(f"{cols}\nroma_tiny,192,h200,900,7.7,scaled,roma_base@192/h200,2.2,FLOPs ratio\n")
    with pytest.raises(ValueError, match="scaled from roma_base@192/h200, which is not in the table"):
        load_table(bad)


def test_profiles_name_their_gpu_type(tmp_path):
    assert load_profile("example_a100")["gpu_type"] == "a100"
    assert load_profile("example_h100_multinode")["gpu_type"] == "h100"
    assert load_profile("local")["gpu_type"] == "cpu"
    for name in ("example_a100", "example_h100_multinode", "local"):
        assert load_profile(name)["gpu_type"] in gpu_types()  # every shipped profile has table rows
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"gpus_per_node": 0, "gpu_type": "h100"}))
    with pytest.raises(ValueError, match="p.yaml: gpu_type 'h100' with gpus_per_node 0"):
        load_profile(str(p))
    p.write_text(yaml.safe_dump({"gpus_per_node": 4, "gpu_type": "A100 80GB"}))
    with pytest.raises(ValueError, match="gpu_type must be a name like"):
        load_profile(str(p))
    p.write_text(yaml.safe_dump({"gpus_per_node": 4, "gpu_type": "L40S"}))
    assert load_profile(str(p))["gpu_type"] == "l40s"  # not in the table: the estimate says "no entry"
    p.write_text(yaml.safe_dump({"gpus_per_node": 4}))
    assert load_profile(str(p))["gpu_type"] is None
