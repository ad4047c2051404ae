"""The paper's downstream suite as units of work: each evaluation of a paper spec on small data in its
real on-disk format, through the paper protocol (tiny settings), run alone on a finished pretraining
and landing in that run's MLflow run; `launch.py eval` reruns, forces, records failures."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roma.config import DenseConfig, EvalConfig, ProbeConfig
from test_dense_data import make_oscd
from test_dense_rasterize import fc, square, write_tile
from test_train_helpers import NANO, nano_config, register_nano, write_pngs

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = {"probe_aid_full_v3_cls_tr20": ["aid_oa_tr20"], "probe_aid_full_v3_cls_tr50": ["aid_oa_tr50"],
         "probe_ucm_full_v3_cls": ["ucm_oa_tr50"], "dense_oscd_v3": ["oscd_f1"], "dense_spacenet_v3": ["spacenet_mf1"]}


def class_folders(root: Path, classes: int = 3, per_class: int = 10, size: int = 40) -> Path:
    """A folder-per-class set (AID / UCM layout): each class its own colour, plus noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(60 + 70 * c, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"{c}_{i}.jpg")
    return root


def spacenet_tiles(root: Path, n: int = 10) -> Path:
    """SpaceNet v1 layout: 3band/*img<N>.tif GeoTIFFs, geojson/*img<N>.geojson building footprints."""
    (root / "3band").mkdir(parents=True)
    (root / "geojson").mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, n + 1):
        write_tile(root / "3band" / f"3band_AOI_1_RIO_img{k}.tif", rng.integers(0, 255, (32, 32, 3), np.uint8))
        geo = fc({"type": "Polygon", "coordinates": [square(4, 4, 12 + k, 20)]})
        (root / "geojson" / f"Geo_AOI_1_RIO_img{k}.geojson").write_text(json.dumps(geo))
    return root


def tiny(sub):
    """The paper protocol's sub-config with tiny sizes and one short epoch (protocol, scan, readout,
    ratios, task stay the paper's)."""
    if isinstance(sub, ProbeConfig):
        return dataclasses.replace(sub, img_size=32, epochs=2, batch_size=8, extract_batch_size=16, eval_every=1,
                                   warmup_epochs=0.0, num_workers=0)
    return dataclasses.replace(sub, img_size=32, crop_size=16, epochs=1, max_steps=2, batch_size=2, eval_every=1,
                               warmup_epochs=0.0, decoder_channels=(8, 8, 8, 8), head_channels=8, slide_stride=16,
                               num_workers=0)


@pytest.fixture(scope="module")
def finished_paper_run(tmp_path_factory):
    """A scaling_data run (paper base, roots from ROMA_*) whose pretraining 'finished': a nano encoder.pt,
    its MLflow run, status finished; evaluations shrunk by tiny()."""
    from roma.launch.job import prepare_run_dir
    from roma.launch.status import write_status
    from roma.models.registry import create_model
    from roma.spec import load_spec
    from roma.tracking import Tracker
    from roma.train.checkpoint import export_encoder

    tmp = tmp_path_factory.mktemp("suite")
    env = {"ROMA_PRETRAIN_DATA": str(write_pngs(tmp / "pool", n=4)), "ROMA_AID": str(class_folders(tmp / "aid")),
           "ROMA_UCM": str(class_folders(tmp / "ucm", classes=4)), "ROMA_OSCD": str(tmp / "oscd"),
           "ROMA_SPACENET": str(spacenet_tiles(tmp / "spacenet"))}
    (tmp / "oscd").mkdir()
    make_oscd(tmp / "oscd")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        cfg = load_spec("scaling_data", {"data.subset": 4}, check_data=False).runs[0]
    register_nano()
    nano = nano_config(tmp / "pool", tmp / "out")
    cfg = dataclasses.replace(cfg, output_root=str(tmp / "out"), model=nano.model,
                              eval=EvalConfig(probes=tuple(tiny(p) for p in cfg.eval.probes),
                                              dense=tuple(tiny(d) for d in cfg.eval.dense)))
    rd = prepare_run_dir(cfg)
    model = create_model(NANO, img_size=32, patch_size=8)
    export_encoder(rd, model.encoder, NANO, dataclasses.asdict(cfg.model))
    tracker = Tracker.open(cfg, rd)
    tracker.log_metrics({"final_loss": 1.5}, stage="train")
    tracker.end("finished")
    write_status(rd, "finished", step=4)
    return cfg, tracker.run_id


@pytest.mark.parametrize("name", list(SUITE))
def test_paper_evaluation_alone_on_real_format_data(finished_paper_run, name):
    """Each of the five, alone (`launch.py eval --eval NAME`), on its dataset's own layout."""
    from mlflow.tracking import MlflowClient

    from roma.launch.job import eval_one
    from roma.eval.plan import evaluations
    from roma.tracking import tracking_uri

    cfg, mlflow_id = finished_paper_run
    assert [n for n, *_ in evaluations(cfg)] == list(SUITE)
    res = eval_one(cfg, [name])
    assert res["evaluations"] == [name]
    for key in SUITE[name]:
        assert math.isnan(res[key]) or 0.0 <= res[key] <= 100.0, res
    saved = json.loads((cfg.run_dir / "eval" / name / "results.json").read_text())["metrics"]
    assert set(SUITE[name]) <= set(saved)
    client = MlflowClient(tracking_uri(cfg))
    run = client.get_run(mlflow_id)
    assert {f"eval/{k}" for k in SUITE[name]} <= set(run.data.metrics) and run.data.metrics["train/final_loss"] == 1.5
    assert run.info.status == "FINISHED"
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert [r.info.run_id for r in runs] == [mlflow_id]  # no second MLflow run


@pytest.fixture
def finished_nano_run(tmp_path, monkeypatch):
    """A finished run with a probe and a dense evaluation whose runners are counting fakes."""
    import roma.eval.classification as cls
    import roma.eval.dense as dense
    from roma.launch.job import prepare_run_dir
    from roma.launch.status import write_status
    from roma.tracking import Tracker

    calls, fail = [], set()

    def fake_probe(encoder_ckpt, probe_cfg, model_cfg, out_dir, device):
        calls.append(Path(out_dir).name)
        return {f"{probe_cfg.dataset}_oa_tr50": 41.5 + len(calls)}

    def fake_dense(encoder_ckpt, dense_cfg, model_cfg, out_dir, device):
        calls.append(Path(out_dir).name)
        if dense_cfg.task in fail:
            raise RuntimeError("out of memory")
        return {"oscd_f1": 12.25}

    monkeypatch.setattr(cls, "run_probe", fake_probe)
    monkeypatch.setattr(dense, "run_dense", fake_dense)
    (tmp_path / "aid").mkdir()
    (tmp_path / "oscd").mkdir()
    cfg = nano_config(tmp_path / "pool", tmp_path / "out")
    cfg = dataclasses.replace(cfg, eval=EvalConfig(probes=(ProbeConfig(dataset="aid", root=str(tmp_path / "aid")),),
                                                   dense=(DenseConfig(task="oscd", root=str(tmp_path / "oscd")),)))
    rd = prepare_run_dir(cfg)
    (rd / "encoder.pt").write_bytes(b"weights")
    tracker = Tracker.open(cfg, rd)
    tracker.end("finished")
    write_status(rd, "finished", step=4)
    return cfg, tracker.run_id, calls, fail


def test_launch_eval_reruns_alone_into_the_same_mlflow_run(finished_nano_run, capsys):
    from mlflow.tracking import MlflowClient

    from roma.launch import cli
    from roma.launch.status import read_status
    from roma.tracking import tracking_uri

    cfg, mlflow_id, calls, fail = finished_nano_run
    rd = str(cfg.run_dir)
    client = MlflowClient(tracking_uri(cfg))
    assert cli.main(["eval", rd, "--eval", "probe_*"]) == 0
    assert calls == ["probe_aid_fast_uni_mean"]
    assert client.get_run(mlflow_id).data.metrics["eval/aid_oa_tr50"] == 42.5
    capsys.readouterr()
    assert cli.main(["eval", rd]) == 0  # the probe is done: only the dense evaluation runs
    assert calls == ["probe_aid_fast_uni_mean", "dense_oscd_v3"]
    results = cfg.run_dir / "eval" / "probe_aid_fast_uni_mean" / "results.json"
    out = capsys.readouterr().out
    assert f"probe_aid_fast_uni_mean: skipped, already done (results in {results}" in out
    assert "-> oscd_f1 12.25" in out and "aid_oa_tr50" not in out  # the done one is not reported as run
    assert cli.main(["eval", rd]) == 0 and calls == ["probe_aid_fast_uni_mean", "dense_oscd_v3"]  # all done
    assert "dense_oscd_v3: skipped, already done" in capsys.readouterr().out
    assert cli.main(["eval", rd, "--eval", "probe_*", "--force"]) == 0  # forced: computed again
    assert calls[-1] == "probe_aid_fast_uni_mean"
    run = client.get_run(mlflow_id)
    assert run.data.metrics["eval/aid_oa_tr50"] == 44.5 and run.data.metrics["eval/oscd_f1"] == 12.25
    assert run.info.status == "FINISHED" and read_status(cfg.run_dir)["state"] == "finished"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    # a failed evaluation: recorded, the run failed at stage eval, its encoder kept; a fixed rerun heals it
    fail.add("oscd")
    assert cli.main(["eval", rd, "--eval", "dense_*", "--force"]) == 1
    st = read_status(cfg.run_dir)
    assert st["state"] == "failed" and st["stage"] == "eval" and "out of memory" in st["reason"]
    assert (cfg.run_dir / "encoder.pt").read_bytes() == b"weights"
    assert (cfg.run_dir / "eval" / "dense_oscd_v3" / "failed.json").exists()
    run = client.get_run(mlflow_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_stage"] == "eval"
    fail.clear()
    assert cli.main(["eval", rd]) == 0
    assert read_status(cfg.run_dir)["state"] == "finished"
    assert client.get_run(mlflow_id).info.status == "FINISHED"
    assert not (cfg.run_dir / "eval" / "dense_oscd_v3" / "failed.json").exists()


def test_launch_eval_refuses_unfinished_runs_unknown_evaluations_and_missing_data(finished_nano_run, capsys):
    import shutil

    from roma.launch import cli

    cfg, _, calls, _ = finished_nano_run
    rd = str(cfg.run_dir)
    assert cli.main(["eval", rd, "--eval", "nope*"]) == 2
    assert "probe_aid_fast_uni_mean, dense_oscd_v3" in capsys.readouterr().err
    shutil.rmtree(cfg.eval.dense[0].root)
    assert cli.main(["eval", rd]) == 2
    err = capsys.readouterr().err
    assert "dense_oscd_v3: oscd data not found" in err and "ROMA_OSCD" in err and not calls
    (cfg.run_dir / "encoder.pt").unlink()
    assert cli.main(["eval", rd, "--eval", "probe_*"]) == 1
    assert "pretraining not finished" in capsys.readouterr().out and not calls
