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
                "ares.enabled": True, "msp.enabled": True, "aid_oa_tr50": acc + seed, "final_loss": 1.0, "val_loss": 1.1 - 0.01 * seed, "train_flops": 1e12, "device_hours": 0.01}))
        rows.append(dict(model="roma_micro_small", param_count=1.2e6, data_size=5000, seed=seed, **{
            "ares.enabled": True, "msp.enabled": True, "aid_oa_tr50": 33.0, "final_loss": 0.9, "val_loss": 0.95, "train_flops": 1e12, "device_hours": 0.01}))
        rows.append(dict(model="roma_micro_tiny", param_count=3e5, data_size=2500, seed=seed, **{
            "ares.enabled": False, "msp.enabled": False, "aid_oa_tr50": 28.0, "final_loss": 0.8, "val_loss": 0.85, "train_flops": 1e12, "device_hours": 0.01}))
        for n in (312, 5000):  # the fixed-steps control: same model and switches, its own table
            rows.append(dict(model="roma_micro_tiny", param_count=3e5, data_size=n, seed=seed,
                             run_name=f"roma_micro_tiny-{n}-seed{seed}-fixed_steps", sweep="data.subset,label,train.seed,train.steps",
                             images_seen=9984, **{"ares.enabled": True, "msp.enabled": True, "aid_oa_tr50": 50.0 + n / 1000,
                                                  "final_loss": 1.0, "val_loss": 2.0, "train_flops": 1e12, "device_hours": 0.01}))
    for r in rows:
        r.setdefault("val_loss_token", r["val_loss"] - (0.05 if r["msp.enabled"] else 0.0))
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
    assert "| ARM baseline | 28.00 ± 0.00 | 3 | 0.8500 ± 0.0000 |" in text  # the token loss column
    assert "| variant | AID OA | seeds | held-out token loss |" in text
    # the control is never pooled with the epoch axis, and has its own table
    assert "| 312 | 31.00 ± 1.00 | 3 |" in text and "9,984 training images each" in text
    assert "| 312 | 50.31 ± 0.00 | 3 | 2.0000 ± 0.0000 |" in text
    assert "| power | a=0.8 [0.7, 0.9]; b=-0.02 [-0.04, 0] |" in text
    mr.figure(parts, fits, floors, tmp_path / "s.png", "t")
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_loss_curves_model_panel_draws_only_runs_at_its_size(tmp_path):
    mr = _module("micro_report")
    hist = [(1, 1.0), (10, 0.9)]
    curves = [("roma_micro_tiny", d, hist) for d in (312, 625, 2500, 5000) for _ in range(3)]
    curves += [(m, 5000, hist) for m in ("roma_micro_small", "roma_micro_base") for _ in range(3)]
    drawn = mr.draw_loss_curves(curves, tmp_path / "c.png")
    assert drawn["model_size"] == 5000
    # micro-tiny's 312..2500 runs are on the data panel only: 3 runs per model at 5000 images
    assert drawn["models"] == {"roma_micro_tiny": 3, "roma_micro_small": 3, "roma_micro_base": 3}
    assert drawn["sizes"] == {312: 3, 625: 3, 2500: 3, 5000: 3}
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_report_names_a_missing_input(tmp_path):
    mr = _module("micro_report")
    with pytest.raises(SystemExit, match="runs.csv not found"):
        mr.load(tmp_path, tmp_path)


def test_study_plan_runs_each_config_once_seed_major_with_floors(tmp_path):
    study = _module("micro_study")
    args = study.argparse.Namespace(exp="micro_test", out=str(tmp_path), set=[], seeds=[0, 1, 2], retry_failed=False,
                                    full=True)
    jobs, facts = study.plan(args, check_data=False)
    runs = [j for j in jobs if j.kind == "run"]
    floors = [j for j in jobs if j.kind == "floor"]
    # 15 data points + 6 more model points + 6 more ablation rows + 24 more joint-grid points + 15
    # fixed-steps runs; tiny 2.5K ARES+MSP, tiny 5K and the joint grid's axes are shared
    assert len(runs) == 66 and len({j.folder for j in runs}) == 66
    assert len({j.name for j in jobs}) == len(jobs)  # progress lines and timings.json key on the name
    grid = {(j.model, j.name.split("-")[1], j.seed) for j in runs if j.name.count("-") == 2}
    assert len(grid) == 45  # the joint L(N, D) grid: 3 models x 5 subsets x 3 seeds
    fixed = [j for j in runs if j.name.endswith("-fixed_steps")]
    assert len(fixed) == 15 and {j.images for j in fixed} == {312 * 32}  # same steps for every subset
    # the default cut (4 h of 2 cores): seed 2 of the joint grid's interior and of the fixed-steps control go
    cut, _ = study.plan(study.argparse.Namespace(**{**vars(args), "full": False}), check_data=False)
    gone = {j.name for j in jobs} - {j.name for j in cut}
    assert len(gone) == 13 and all(n.endswith("seed2") or n.endswith("seed2-fixed_steps") for n in gone)
    assert not any(n.startswith("roma_micro_tiny-") and n.endswith("seed2") for n in gone)  # data axis: 3 seeds
    assert not any("-5K-" in n and not n.endswith("fixed_steps") for n in gone)  # model axis: 3 seeds
    assert sum(j.estimate() for j in cut) / 2 < 4 * 3600  # the --plan estimate on 2 lanes
    assert [j.model for j in floors] == ["roma_micro_tiny", "roma_micro_small", "roma_micro_base"]
    assert all("--model-img-size" in j.cmd and j.cmd[j.cmd.index("--model-img-size") + 1] == "64" for j in floors)
    assert [j.seed for j in runs] == sorted(j.seed for j in runs)  # seed-major
    # a fixed number of epochs per subset: steps (images) grow with the subset
    tiny = {int(j.name.split("-")[1].replace("K", "000").replace("1.25000", "1250").replace("2.5000", "2500")): j.images
            for j in runs if j.seed == 0 and j.model == "roma_micro_tiny" and j.name.count("-") == 2}
    assert tiny[312] == (312 // 32) * 32 * 8 and tiny[5000] == (5000 // 32) * 32 * 8
    assert facts["floor_root"] == tmp_path / "micro_test" / "floor"
    # the launcher command carries the experiment, so every spec writes into one experiment folder
    assert all(f"experiment=micro_test" in j.cmd and "--only" in j.cmd for j in runs)


def test_timings_merge_over_sessions(tmp_path):
    study = _module("micro_study")
    j = study.Job("a", "run", [], tmp_path, "roma_micro_tiny", 100, seconds=60.0, cpu_seconds=50.0)
    path = tmp_path / "timings.json"
    study.record_timings(path, [j], 120.0)
    k = study.Job("b", "run", [], tmp_path, "roma_micro_tiny", 100, seconds=30.0, cpu_seconds=20.0)
    study.record_timings(path, [k], 60.0)
    doc = json.loads(path.read_text())
    assert set(doc["jobs"]) == {"a", "b"} and doc["wall_min"] == 3.0 and doc["cpu_min"] == 70 / 60


def test_readme_section_is_replaced_between_markers(tmp_path):
    mr = _module("micro_report")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{mr.BEGIN}\nold text\n{mr.END}\noutro\n")
    mr.write_readme(readme, f"{mr.BEGIN}\nnew table\n{mr.END}")
    assert readme.read_text() == f"intro\n{mr.BEGIN}\nnew table\n{mr.END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        mr.write_readme(readme, "x")


def test_ablation_tests_call_seed_noise():
    mr = _module("micro_report")
    lines = mr.ablation_tests({"ARM baseline": [30.0, 30.5, 29.5], "+ARES": [40.0, 40.4, 39.6],
                               "+ARES+MSP": [40.1, 39.5, 40.6]})
    assert "exceeds seed noise" in lines[0] and "within seed noise" in lines[1]


def test_a_relaunch_skips_finished_runs(tmp_path):
    """The study resumes across sessions: a job whose run is finished is not started again."""
    study = _module("micro_study")
    done_dir, todo_dir = tmp_path / "done", tmp_path / "todo"
    done_dir.mkdir()
    todo_dir.mkdir()
    (done_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    finish = f"import json, pathlib; pathlib.Path({str(todo_dir / 'status.json')!r}).write_text(json.dumps({{'state': 'finished'}}))"
    touched = tmp_path / "ran"
    jobs = [study.Job("done", "run", [sys.executable, "-c", f"open({str(touched)!r}, 'w')"], done_dir, "roma_micro_tiny", 10),
            study.Job("todo", "run", [sys.executable, "-c", finish], todo_dir, "roma_micro_tiny", 10)]
    failed = study.run_lanes(jobs, 2, tmp_path / "logs", study.Progress(jobs, 2))
    assert failed == [] and not touched.exists() and jobs[1].seconds is not None and jobs[0].seconds is None
    assert study.run_lanes(jobs, 2, tmp_path / "logs", study.Progress(jobs, 2)) == []  # nothing left to run


def _args(study, tmp_path, **kw):
    return study.argparse.Namespace(**{"exp": "micro_test", "out": str(tmp_path / "outputs"), "no_readme": False,
                                       "readme": tmp_path / "micro_study.md", **kw})


def test_analysis_runs_the_compute_axis_beside_the_main_one_and_the_report_takes_it(tmp_path):
    study = _module("micro_study")
    args = _args(study, tmp_path)
    analysis, compute = study.analysis_dirs(args)
    assert compute.parent == analysis.parent and compute.name == "micro_test_compute"
    steps = dict(study.analysis_commands(args, {"floor_root": tmp_path / "floor"}, tmp_path / "timings.json"))
    assert list(steps) == ["fit_scaling.py", "fit_scaling.py --x train_flops", "micro_report.py"]
    main, flops, report = steps.values()
    opt = lambda cmd, k: cmd[cmd.index(k) + 1]  # noqa: E731
    assert "--x" not in main and opt(main, "--out") == str(analysis)
    assert opt(flops, "--x") == "train_flops" and opt(flops, "--out") == str(compute)
    assert opt(main, "--tracking-uri") == opt(flops, "--tracking-uri") == opt(report, "--tracking-uri")
    assert opt(report, "--analysis") == str(analysis) and opt(report, "--compute") == str(compute)
    assert opt(report, "--readme") == str(args.readme) and opt(report, "--out") == str(study.REPO / "docs" / "results")
    pilot = dict(study.analysis_commands(_args(study, tmp_path, no_readme=True), {"floor_root": tmp_path},
                                         tmp_path / "t.json"))["micro_report.py"]
    assert "--readme" not in pilot and opt(pilot, "--out") == str(analysis) and "--compute" in pilot


def test_the_report_puts_the_compute_laws_in_its_fits_table(tmp_path, capsys):
    """The chain the driver runs, on the committed run table: fit_scaling --x train_flops, then the
    report with --compute: its fits table has the laws against train_flops."""
    sys.path.insert(0, str(REPO))
    from analysis import fit_scaling

    compute, analysis = tmp_path / "compute", tmp_path / "analysis"
    fit_scaling.main(["--runs", str(REPO / "docs" / "results" / "micro_study_runs.csv"), "--x", "train_flops",
                      "--bootstrap", "0", "--out", str(compute)])
    analysis.mkdir()
    (analysis / "runs.csv").write_bytes((compute / "runs.csv").read_bytes())
    (analysis / "fits.json").write_text("[]")
    capsys.readouterr()
    mr = _module("micro_report")
    mr.main(["--analysis", str(analysis), "--compute", str(compute), "--floor", str(tmp_path / "floor"),
             "--out", str(tmp_path / "fig")])
    out = capsys.readouterr().out
    assert "| data vs train_flops | roma_micro_tiny +ARES+MSP | AID error |" in out
    assert "| model vs train_flops | 5K images +ARES+MSP | held-out loss |" in out
    with pytest.raises(SystemExit, match="fits.json not found"):
        mr.main(["--analysis", str(analysis), "--compute", str(tmp_path / "none"), "--floor", str(tmp_path),
                 "--out", str(tmp_path / "fig")])


def test_publish_copies_every_committed_artefact_from_the_analyses(tmp_path):
    study = _module("micro_study")
    analysis, compute, dest = tmp_path / "a", tmp_path / "c", tmp_path / "docs_results"
    for d, files in ((analysis, ("runs.csv", "fits.json", "data_scaling.png", "model_scaling.png", "ablation.png")),
                     (compute, ("fits.json", "data_scaling.png"))):
        d.mkdir()
        for f in files:
            (d / f).write_text(f"{d.name}/{f}")
    timings = tmp_path / "timings.json"
    timings.write_text("t")
    written = study.publish(analysis, compute, timings, dest, "micro_study")
    got = {p.name: p.read_text() for p in written}
    assert got == {"micro_study_runs.csv": "a/runs.csv", "micro_study_fits.json": "a/fits.json",
                   "micro_study_data_scaling.png": "a/data_scaling.png",
                   "micro_study_model_scaling.png": "a/model_scaling.png", "micro_study_ablation.png": "a/ablation.png",
                   "micro_study_compute_fits.json": "c/fits.json", "micro_study_timings.json": "t"}
    assert sorted(p.name for p in dest.iterdir()) == sorted(got)  # no frontier drawn: none copied, no temp left
    (compute / "fits.json").unlink()
    with pytest.raises(SystemExit, match=r"c/fits.json not found"):
        study.publish(analysis, compute, timings, dest, "micro_study")
