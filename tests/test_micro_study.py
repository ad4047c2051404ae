"""The micro study's helpers: the AID pool / probe split (disjoint, stratified, reused) and the report."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """3 classes of 5, 6 and 7 tiny JPEGs."""
    root = tmp_path / "AID"
    for c, n in (("Airport", 5), ("Beach", 6), ("Desert", 7)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{c.lower()}_{i}.jpg")
    return root


def _links(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink()}


def test_pool_and_probe_halves_are_disjoint_stratified_and_reused(class_folder, tmp_path):
    ms = _module("micro_split")
    out = tmp_path / "micro_data"
    info = ms.build(class_folder, out)
    pool, probe = _links(out / "aid_pool"), _links(out / "aid_probe")
    assert not pool & probe
    every = {p.relative_to(class_folder).as_posix() for p in class_folder.rglob("*.jpg")}
    assert pool | probe == every and (info["pool"], info["probe"]) == (len(pool), len(probe))
    for c, n in (("Airport", 5), ("Beach", 6), ("Desert", 7)):  # half of every class, rounded
        assert sum(p.startswith(c + "/") for p in pool) == round(n / 2)
    # links point at the original images (nothing copied)
    some = next((out / "aid_pool").rglob("*.jpg"))
    assert some.resolve().is_relative_to(class_folder.resolve())
    # a second call with the same data reuses the split; the pool is what the data layer lists
    before = (out / "aid_split.json").stat().st_mtime_ns
    assert ms.build(class_folder, out) == info
    assert (out / "aid_split.json").stat().st_mtime_ns == before
    from roma.data.sources import list_images

    assert {r.key for r in list_images(out / "aid_pool")} == pool


def test_split_rebuilds_when_the_dataset_changes(class_folder, tmp_path):
    ms = _module("micro_split")
    out = tmp_path / "micro_data"
    ms.build(class_folder, out)
    Image.new("RGB", (8, 8)).save(class_folder / "Beach" / "beach_new.jpg")
    info = ms.build(class_folder, out)
    assert info["pool"] + info["probe"] == 19
    assert "Beach/beach_new.jpg" in _links(out / "aid_pool") | _links(out / "aid_probe")


def test_report_tables_and_figure(tmp_path):
    mr = _module("micro_report")
    rows = []
    for seed in range(3):
        for n, acc in ((312, 30.0), (5000, 32.0)):
            rows.append(dict(model="roma_micro_tiny", param_count=3e5, data_size=n, seed=seed, **{
                "ares.enabled": True, "msp.enabled": True, "aid_oa_tr50": acc + seed, "final_loss": 1.0}))
        rows.append(dict(model="roma_micro_small", param_count=1.2e6, data_size=5000, seed=seed, **{
            "ares.enabled": True, "msp.enabled": True, "aid_oa_tr50": 33.0, "final_loss": 0.9}))
        rows.append(dict(model="roma_micro_tiny", param_count=3e5, data_size=2500, seed=seed, **{
            "ares.enabled": False, "msp.enabled": False, "aid_oa_tr50": 28.0, "final_loss": 0.8}))
    an = tmp_path / "analysis"
    an.mkdir()
    pd.DataFrame(rows).to_csv(an / "runs.csv", index=False)
    fit = {"source": "ours", "axis": "data", "metric": "aid_oa_tr50", "form": "power", "params": {"a": 0.8, "b": -0.02},
           "ci95": {"a": [0.7, 0.9], "b": [-0.04, 0.0]}, "loo": {"mean_abs_rel_err": 0.01}, "holdout": {}}
    (an / "fits.json").write_text(json.dumps([fit]))
    fl = tmp_path / "floor" / "roma_micro_tiny"
    fl.mkdir(parents=True)
    (fl / "probe_aid.json").write_text(json.dumps({"ratios": {"aid_oa_tr50": {"runs": [
        {"test_acc": 26.0}, {"test_acc": 27.0}, {"test_acc": 28.0}]}}}))
    df, fits, floors = mr.load(an, tmp_path / "floor")
    text, parts = mr.tables(df, fits, floors)
    assert "| 312 | 31.00 ± 1.00 | 3 |" in text and "| 5000 | 33.00 ± 1.00 | 3 |" in text
    assert "random init (floor) | 27.00 ± 1.00" in text
    assert "| ARM baseline | 28.00 ± 0.00 | 3 |" in text
    assert "-0.0200 [-0.0400, 0.0000]" in text
    mr.figure(parts, fits, floors, tmp_path / "s.png", "t")
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_report_names_a_missing_input(tmp_path):
    mr = _module("micro_report")
    with pytest.raises(SystemExit, match="runs.csv not found"):
        mr.load(tmp_path, tmp_path)
