"""Issue 35: hostile and odd inputs, one class per section; each case builds its bad input itself and
asserts the named error (or the correct conversion) within seconds. docs/reliability.md maps each
class to the test here that proves it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roma import yamlio
from roma.spec import load_spec, parse_set
from roma.validation import ConfigError, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
BOMB = "\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
                  *[f'{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},'
                    f'*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]' for i in range(8)]])


# ------------------------------------------------------------------ 1: YAML expansion bombs

@pytest.mark.timeout(30)
def test_alias_bomb_in_a_spec_file_is_refused_naming_the_file(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text("base: micro\n" + BOMB + "\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec, check_data=False, require_env=False)
    assert str(spec.resolve()) in str(e.value) and "anchors and aliases" in str(e.value)


@pytest.mark.timeout(30)
def test_alias_bomb_in_a_set_value_is_refused():
    value = "{" + BOMB.replace("\n", ", ") + "}"
    with pytest.raises(ConfigError, match=r"--set 'train=.*anchors and aliases.*line 1"):
        parse_set([f"train={value}"])


@pytest.mark.timeout(30)
def test_a_single_anchor_is_refused_too_and_plain_yaml_still_loads():
    with pytest.raises(yamlio.NoAliasError, match="line 1"):
        yamlio.load("x: &a 1\ny: *a\n")
    with pytest.raises(yamlio.NoAliasError):
        yamlio.load("base: &b {lr: 1}\ntrain: {<<: *b}\n")
    assert yamlio.load("lr: 1e-3\nname: roma\n") == {"lr": 1e-3, "name": "roma"}  # YAML 1.2 floats kept


@pytest.mark.timeout(30)
def test_cluster_profile_with_an_alias_is_a_named_error(tmp_path):
    from roma.launch.profiles import load_profile

    prof = tmp_path / "bomb.yaml"
    prof.write_text("partition: &p debug\naccount: *p\n")
    with pytest.raises(ValueError, match=r"bomb\.yaml: cannot read cluster profile: anchors and aliases"):
        load_profile(str(prof))


@pytest.mark.timeout(30)
def test_config_yaml_round_trips_a_shared_list_without_anchors():
    from roma.config import RunConfig

    plain = {"a": [1, 2]}
    plain["b"] = plain["a"]  # one object twice: safe_dump would write &id001 / *id001
    assert "&" not in yamlio.dump(plain) and yamlio.load(yamlio.dump(plain)) == {"a": [1, 2], "b": [1, 2]}
    cfg = RunConfig()
    assert load_config(dump_config(cfg)).run_id == cfg.run_id


@pytest.mark.timeout(60)
def test_launcher_refuses_a_bomb_spec_in_seconds(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text("base: micro\n" + BOMB + "\n")
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "launch.py"), str(spec), "--dry-run"],
                         capture_output=True, text=True, timeout=50, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2 and "anchors and aliases" in res.stderr, res.stderr


@pytest.mark.timeout(30)
def test_python_tags_are_refused_safe_yaml(tmp_path):
    """Held before issue 35: safe types only, no object construction from a spec."""
    marker = tmp_path / "ran"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"base: micro\ndescription: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_spec(spec, check_data=False, require_env=False)
    assert not marker.exists()


def test_every_yaml_load_goes_through_roma_yamlio():
    """One loader: no other module of the project parses YAML itself."""
    pattern = re.compile(r"\byaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(")
    offenders = [f"{p.relative_to(REPO)}:{i}" for d in ("roma", "experiments", "analysis", "benchmarks", "slurm")
                 for p in (REPO / d).rglob("*.py") if p.name != "yamlio.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


# ------------------------------------------------------------------ 4: corrupt state and cache files

def _folder_spec(tmp_path: Path) -> Path:
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            (tmp_path / "data" / c / f"{i}.png").write_bytes(b"")  # the listing reads names, not pixels
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "output_root": str(tmp_path / "out"),
                                    "data.root": str(tmp_path / "data"), "grid": {"train.seed": [0, 1]}}))
    return spec


@pytest.mark.timeout(30)
def test_binary_status_json_is_a_named_failed_state_and_status_lists_every_run(tmp_path, monkeypatch, capsys):
    from roma.launch import cli
    from roma.launch.plan import plan
    from roma.launch.status import read_status, write_status

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    spec = _folder_spec(tmp_path)
    a, b = load_spec(spec, check_data=False).runs
    write_status(b.run_dir, "finished", step=5, loss=0.25)
    a.run_dir.mkdir(parents=True)
    (a.run_dir / "status.json").write_bytes(bytes(range(256)))
    st = read_status(a.run_dir)
    assert st["state"] == "failed" and str(a.run_dir / "status.json") in st["reason"]
    assert "--retry-failed" in st["reason"] and "not a UTF-8" in st["reason"]
    assert cli.main(["status", str(spec)]) == 0
    out = capsys.readouterr().out
    assert a.run_id in out and "unreadable" in out and re.search(rf"{b.run_id} .* finished", out)
    assert [p.action for p in plan([a, b])] == ["skip", "skip"]
    assert plan([a], retry_failed=True)[0].action == "retry"
    write_status(a.run_dir, "running", step=1)  # the retry rewrites it
    assert read_status(a.run_dir)["state"] == "running" and "unreadable" not in read_status(a.run_dir)


@pytest.mark.timeout(30)
def test_status_json_with_wrong_field_types_and_a_garbage_claim_are_named(tmp_path):
    from roma.launch.claim import claim, holder
    from roma.launch.status import read_status

    (tmp_path / "status.json").write_text('{"state": "finished", "step": {"n": 1}, "loss": [1], "updated": 5}')
    assert "field(s) step, loss, updated of the wrong type" in read_status(tmp_path)["reason"]
    (tmp_path / "status.json").write_text('{"state": "finished", "step": "7", "loss": 0.5}')  # json default=str
    assert read_status(tmp_path)["state"] == "finished"
    (tmp_path / "claim.lock").write_bytes(b"\xff\xfe garbage")
    assert holder(tmp_path) is None
    with claim(tmp_path):
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("corrupt", ["binary", "wrong types", "bit flip", "truncated"])
def test_corrupt_data_listing_cache_is_rebuilt_with_a_warning_naming_it(tmp_path, monkeypatch, caplog, corrupt):
    import json

    from roma.data import fingerprint as fpm

    spec = _folder_spec(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROMA_CACHE", str(cache))
    want = fpm.data_fingerprint(tmp_path / "data", 10, 0, cache / "data")
    before = [r.run_id for r in load_spec(spec, check_data=False).runs]
    (f,) = (cache / "data").glob("*.json")
    entry = json.loads(f.read_text())
    bad = {"binary": bytes(range(255, 0, -1)),
           "wrong types": json.dumps({**entry, "total": "16", "checksums": None}).encode(),
           "bit flip": json.dumps({**entry, "checksums": {k: "0" * 64 for k in entry["checksums"]}}).encode(),
           "truncated": f.read_bytes()[:40]}[corrupt]
    f.write_bytes(bad)
    fpm._KEYS.clear(), fpm._RANKED.clear()  # a new process: nothing listed yet
    with caplog.at_level("WARNING"):
        got = fpm.data_fingerprint(tmp_path / "data", 10, 0, cache / "data")
    assert got == want
    assert any(str(f) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert json.loads(f.read_text())["sha256"]  # rebuilt
    f.write_bytes(bad)
    fpm._KEYS.clear(), fpm._RANKED.clear()
    assert [r.run_id for r in load_spec(spec, check_data=False).runs] == before  # status finds the same runs


@pytest.mark.timeout(30)
def test_status_says_a_data_checksum_it_cannot_compute(tmp_path, monkeypatch, capsys):
    from roma.launch import cli

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "output_root": str(tmp_path / "out"),
                                    "data.root": str(tmp_path / "empty")}))
    assert cli.main(["status", str(spec)]) == 0
    assert "warning: " in (err := capsys.readouterr().err) and "cannot compute the checksum of the data" in err


@pytest.mark.timeout(30)
def test_corrupt_results_json_is_a_named_error_saying_what_to_do(tmp_path):
    from roma.run import read_results

    f = tmp_path / "run" / "eval" / "probe_x" / "results.json"
    f.parent.mkdir(parents=True)
    for bad in (b"\x00\xff\x00", b'{"metrics": {"acc": "high"}}', b"[1, 2]"):
        f.write_bytes(bad)
        with pytest.raises(ValueError, match=r"results\.json is unreadable .*--eval probe_x --force"):
            read_results(f, "probe_x")


# ------------------------------------------------------------------ 6: checkpoints that cannot be read

class _Evil:
    def __reduce__(self):
        return (print, ("this would run on load",))


def _last(step: int) -> dict:
    import torch

    from roma.train import checkpoint as ck
    return {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "step": step, "epoch": 0,
            "sampler": {"position": 0}, "rng": ck.rng_state(), "config": {}}


@pytest.mark.timeout(30)
def test_truncated_last_pt_is_one_line_naming_the_kept_checkpoint(tmp_path):
    from roma.train import checkpoint as ck
    from roma.torchfile import UnreadableCheckpoint

    ck.save_last(tmp_path, _last(4), keep_epoch=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableCheckpoint) as e:
        ck.load_last(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "last.pt") in msg and "truncated" in msg
    assert f"cp {tmp_path / 'epoch_0001.pt'} {tmp_path / 'last.pt'}" in msg and "--retry-failed" in msg
    (tmp_path / "epoch_0001.pt").unlink()
    with pytest.raises(UnreadableCheckpoint, match="no earlier checkpoint is kept: relaunch with --force"):
        ck.load_last(tmp_path)


@pytest.mark.timeout(30)
def test_refused_pickle_never_suggests_weights_only_false(tmp_path, capsys):
    import torch

    from roma.models.downstream import load_encoder_checkpoint
    from roma.train import checkpoint as ck
    from roma.torchfile import REFUSED, UnreadableCheckpoint

    for f in (tmp_path / "last.pt", tmp_path / "encoder.pt"):
        torch.save({**_last(1), "model": _Evil()}, f)
    for load in (lambda: ck.load_last(tmp_path), lambda: load_encoder_checkpoint(tmp_path / "encoder.pt")):
        with pytest.raises(UnreadableCheckpoint) as e:
            load()
        assert REFUSED in str(e.value) and "weights_only=False" not in str(e.value) and "\n" not in str(e.value)
    assert "this would run" not in capsys.readouterr().out


def test_every_torch_load_goes_through_roma_torchfile():
    offenders = [f"{p.relative_to(REPO)}:{i}" for d in ("roma", "experiments", "benchmarks")
                 for p in (REPO / d).rglob("*.py") if p.name != "torchfile.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if "torch.load(" in line]
    assert offenders == []


@pytest.mark.timeout(60)
def test_local_launch_of_a_run_with_a_truncated_last_pt_prints_one_line(tmp_path, monkeypatch, capfd):
    from roma.launch.executors import run_local
    from roma.launch.status import read_status

    (tmp_path / "fake_resume.py").write_text(
        "from roma.train.checkpoint import load_last\n"
        "def resume(cfg, hooks=None):\n    load_last(cfg.run_dir)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    (cfg, _) = load_spec(_folder_spec(tmp_path), check_data=False).runs
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "last.pt").write_bytes(b"PK\x03\x04 half a zip")
    assert run_local([cfg], "fake_resume:resume") == {cfg.run_id: "failed"}
    err = capfd.readouterr().err
    assert "Traceback" not in err and f"cannot read checkpoint {cfg.run_dir / 'last.pt'}" in err, err
    assert "--force" in read_status(cfg.run_dir)["reason"]


# ------------------------------------------------------------------ 8: writes that destroy before they succeed

class _Tracker:
    def __init__(self):
        self.metrics: dict = {}

    def set_tags(self, tags):
        pass

    def log_metrics(self, m, step=None, stage=None):  # roma.tracking.Tracker.log_metrics
        self.metrics.update(m)


@pytest.mark.timeout(30)
def test_eval_force_keeps_the_previous_results_until_new_ones_are_written(tmp_path, monkeypatch):
    import dataclasses
    import json

    from roma import run as run_mod
    from roma.config import EvalConfig, ProbeConfig, RunConfig

    cfg = RunConfig(output_root=str(tmp_path), eval=EvalConfig(probes=(ProbeConfig(dataset="aid", root=str(tmp_path)),)))
    ((name, *_),) = run_mod.evaluations(cfg)
    edir = cfg.run_dir / "eval" / name
    edir.mkdir(parents=True)
    (edir / "results.json").write_text(json.dumps({"metrics": {"acc": 0.5}}))
    (edir / "claim.lock").write_text("")

    def broken(encoder, sub, model, out_dir, device):
        (out_dir / "partial.bin").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "partial.bin").write_bytes(b"half")
        raise RuntimeError("the redo broke")

    monkeypatch.setattr(run_mod, "_runner", lambda kind: broken)
    metrics, failures = run_mod.run_evaluations(cfg, _Tracker(), tmp_path / "encoder.pt", None, force=True)
    assert "the redo broke" in failures[name]
    assert json.loads((edir / "results.json").read_text())["metrics"] == {"acc": 0.5}  # kept
    assert (edir / "failed.json").exists() and not (edir / "partial.bin").exists()
    assert not (cfg.run_dir / "eval" / run_mod.REDO / name).exists()

    monkeypatch.setattr(run_mod, "_runner", lambda kind: lambda *a: {"acc": 0.75})
    tracker = _Tracker()
    metrics, failures = run_mod.run_evaluations(cfg, tracker, tmp_path / "encoder.pt", None, force=True)
    assert failures == {} and tracker.metrics == {"acc": 0.75}
    assert json.loads((edir / "results.json").read_text())["metrics"] == {"acc": 0.75}
    assert sorted(p.name for p in edir.iterdir()) == ["claim.lock", "results.json"]  # failed.json gone, claim kept
    assert dataclasses.replace(cfg) == cfg


@pytest.mark.timeout(30)
@pytest.mark.parametrize("foreign", ["index.json", "index.parquet", "other-000000.tar"])
def test_shards_pack_refuses_to_overwrite_what_it_did_not_write(tmp_path, capsys, foreign):
    from roma.data import shards

    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "0.png").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / foreign).write_text("someone else's")
    assert shards.main(["pack", str(tmp_path / "src"), str(out)]) == 2
    assert f"already holds 1 file(s) of the kind pack writes ({foreign})" in capsys.readouterr().err
    assert (out / foreign).read_text() == "someone else's" and sorted(p.name for p in out.iterdir()) == [foreign]


@pytest.mark.timeout(30)
def test_unwritable_outputs_are_refused_before_any_work_naming_the_path(tmp_path, monkeypatch, capsys):
    from roma.data import download, shards
    from roma.launch import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder below a regular file cannot be made (a read-only root, even for root)
    spec = _folder_spec(tmp_path)
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    assert cli.main([str(spec), "--set", f"output_root={blocker / 'out'}", "--skip-data-check"]) == 2
    assert re.search(rf"output_root: runs cannot be written under {blocker / 'out'}: {blocker} is not a folder",
                     capsys.readouterr().err)
    assert shards.main(["pack", str(tmp_path / "data"), str(blocker / "shards")]) == 2
    assert f"pack's output folder {blocker / 'shards'} is not writable" in capsys.readouterr().err
    monkeypatch.setenv("ROMA_CACHE", str(blocker / "cache"))
    monkeypatch.setenv("ROMA_UCM_URL", "http://127.0.0.1:9/never-asked.zip")  # nothing may be downloaded
    monkeypatch.setenv("ROMA_UCM_SHA256", "0" * 64)
    monkeypatch.delenv("ROMA_UCM", raising=False)
    assert download.main(["ucm"]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"the download cache \(ROMA_CACHE or ~/.cache/roma\) {blocker / 'cache'}/\S+ is not writable", err)
    assert "[download]" not in err and "127.0.0.1:9" not in err


# ------------------------------------------------------------------ 3: files that are not regular files

def _png(path: Path, size=(8, 8), mode="RGB", value=128) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).convert(mode).save(path)
    return path


def _odd_classes(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for c in ("a", "b"):
        for i in range(3):
            _png(root / c / f"{i}.png")
    os.mkfifo(root / "a" / "fifo.jpg")  # opening it for reading blocks until a writer comes
    (root / "a" / "into_b").symlink_to(root / "b", target_is_directory=True)  # counted twice before
    (root / "b" / "loop").symlink_to(root / "b", target_is_directory=True)
    (root / "b" / "gone.png").symlink_to(root / "nowhere.png")
    return root


@pytest.mark.timeout(30)
def test_data_check_skips_fifos_and_links_into_the_dataset_and_counts_them(tmp_path):
    from roma.data.check import check_dataset

    root = _odd_classes(tmp_path)
    rep = check_dataset("classes", root)
    assert rep.counts == {"images": 6, "classes": 2}, rep.render()
    text = rep.render()
    assert "1 not a regular file (FIFO, socket or device): fifo.jpg" in text
    assert "link to a folder inside the dataset" in text and "into_b" in text
    assert "folder link loop" in text and "1 broken link: gone.png" in text
    pre = check_dataset("pretrain", root)
    assert pre.counts == {"images": 6} and "fifo.jpg" in pre.render()


@pytest.mark.timeout(30)
def test_training_and_probe_listings_follow_the_same_rule(tmp_path):
    from roma.data.headers import file_problem
    from roma.data.sources import list_images
    from roma.eval.splits import scan_folder

    root = _odd_classes(tmp_path)
    assert [r.key for r in list_images(root)] == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
    assert scan_folder(root).paths == tuple(f"{c}/{i}.png" for c in "ab" for i in range(3))
    assert file_problem(root / "a" / "fifo.jpg").startswith("not a regular file")  # a manifest may name it
    outside = tmp_path / "elsewhere"
    _png(outside / "x.png")
    (root / "a" / "ext").symlink_to(outside, target_is_directory=True)  # a link gathering data from elsewhere
    assert "a/ext/x.png" in [r.key for r in list_images(root)]


# ------------------------------------------------------------------ 2: images that decode into something else

def _gray16(path: Path, values) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16).reshape(1, -1)).save(path)
    return path


@pytest.mark.timeout(30)
def test_16_bit_images_are_scaled_by_the_stated_rule_not_clipped(tmp_path):
    import numpy as np

    from roma.data.decode import open_rgb

    img = open_rgb(_gray16(tmp_path / "g.png", [0, 257, 4095, 32768, 65535]))
    assert img.mode == "RGB"
    assert np.asarray(img)[0, :, 0].tolist() == [0, 1, 16, 128, 255]  # convert("RGB") gave [0, 255, 255, 255, 255]
    tif = open_rgb(_gray16(tmp_path / "g.tif", [1000, 2000]))
    assert np.asarray(tif)[0, :, 1].tolist() == [4, 8]


@pytest.mark.timeout(30)
def test_float_and_32_bit_images_are_refused_by_check_and_decoder(tmp_path):
    import numpy as np
    from PIL import Image

    from roma.data.check import check_dataset
    from roma.data.decode import BadImage, open_rgb

    root = tmp_path / "ds"
    for c in ("a", "b"):
        for i in range(2):
            _png(root / c / f"{i}.png")
    _gray16(root / "a" / "sixteen.png", [0, 65535])
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(root / "b" / "float.tif")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(root / "b" / "int32.tif")
    with pytest.raises(BadImage, match="32-bit float image, mode F, refused"):
        open_rgb(root / "b" / "float.tif")
    rep = check_dataset("classes", root)
    assert rep.verdict == "FAIL" and rep.counts["images"] == 7
    text = rep.render()
    assert "32-bit float image, mode F, refused" in text and "32-bit integer image, mode I, refused" in text
    assert "sixteen.png" not in text  # 16-bit converts faithfully: not an error


@pytest.mark.timeout(30)
def test_pixel_cap_refuses_before_decoding_in_check_pretraining_and_probe(tmp_path, monkeypatch):
    from roma.data.check import check_dataset
    from roma.data.dataset import BadSample, PretrainDataset
    from roma.data.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
    from roma.data.refs import ImageRef
    from roma.data.transforms import PretrainTransform
    from roma.eval.augment import EvalTransform
    from roma.eval.features import ImageListDataset
    from roma.eval.splits import scan_folder

    doc = (REPO / "docs" / "data.md").read_text()
    assert f"{DEFAULT_MAX_PIXELS:,} pixels" in doc and MAX_PIXELS_ENV in doc  # the default is stated
    root = tmp_path / "ds"
    for c in ("a", "b"):
        _png(root / c / "small.png", (16, 16))
    big = _png(root / "b" / "big.png", (300, 200))  # a "bomb" under a cap of 50,000 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "50000")
    rep = check_dataset("classes", root)
    assert rep.verdict == "FAIL" and "over the pixel cap of 50,000 that ROMA_MAX_PIXELS sets" in rep.render()
    ds = PretrainDataset([ImageRef("big.png", str(big)), ImageRef("a.png", str(root / "a" / "small.png"))],
                         PretrainTransform(16, 8))
    bad = ds[0]
    assert isinstance(bad, BadSample) and "(300 x 200 = 60,000 pixels)" in bad.error and isinstance(ds[1], dict)
    folder = scan_folder(root)
    probe = ImageListDataset(folder, range(len(folder.paths)), EvalTransform(16), skip_bad=True)
    got = [probe[k][0] is None for k in range(len(folder.paths))]
    assert got == [p == "b/big.png" for p in folder.paths]  # counted bad, the others still read
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")
    assert check_dataset("classes", root).verdict in ("OK", "PARTIAL")


# ------------------------------------------------------------------ 7: signals and killed workers

SLOW = ("import os, time\n"
        "def slow(cfg, hooks=None):\n"
        "    with open(os.environ['FAKE_LOG'], 'a') as fh:\n"
        "        fh.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(float(os.environ.get('FAKE_SECONDS', '60')))\n"
        "    return {'step': 1, 'final_loss': 0.5}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait(pred, seconds: float = 20) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _launch_slow(tmp_path: Path):
    spec = _folder_spec(tmp_path)
    (tmp_path / "fake_slow.py").write_text(SLOW)
    log = tmp_path / "pids.log"
    env = {**os.environ, "FAKE_LOG": str(log), "ROMA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.Popen([sys.executable, str(REPO / "experiments" / "launch.py"), str(spec), "--only", "*seed0*",
                             "--executor", "local", "--execute", "fake_slow:slow", "--skip-data-check"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait(lambda: log.exists() and log.read_text().strip(), 60), "the worker never started"
    cfg = [r for r in load_spec(spec, check_data=False).runs if r.train.seed == 0][0]
    return proc, int(log.read_text().split()[0]), cfg


@pytest.mark.timeout(90)
def test_sigterm_to_the_launcher_takes_its_worker_down_and_the_run_resumes(tmp_path, monkeypatch):
    import signal

    from roma.launch.plan import plan
    from roma.launch.status import read_status

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    proc, worker, cfg = _launch_slow(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert _wait(lambda: not _alive(worker)), "the worker trains on alone"
    st = read_status(cfg.run_dir)
    assert st["state"] == "interrupted" and "SIGTERM" in st["reason"], st
    assert plan([cfg])[0].action == "resume"  # a plain relaunch resumes it


@pytest.mark.timeout(90)
def test_a_worker_killed_from_outside_is_interrupted_not_failed(tmp_path, monkeypatch):
    import signal

    from roma.launch.plan import plan
    from roma.launch.status import read_status

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    proc, worker, cfg = _launch_slow(tmp_path)
    os.kill(worker, signal.SIGKILL)  # what the OOM killer does
    out = proc.communicate(timeout=60)[0]
    st = read_status(cfg.run_dir)
    assert st["state"] == "interrupted" and "SIGKILL (kill -9 or the OOM killer)" in st["reason"], out
    assert "-> interrupted" in out and plan([cfg])[0].action == "resume"
    assert "done: 0 finished, 0 failed, 1 interrupted (relaunch to resume)" in out, out  # not counted failed
    assert proc.returncode == 1


@pytest.mark.timeout(90)
def test_the_worker_dies_with_a_launcher_killed_by_sigkill(tmp_path, monkeypatch):
    import signal

    from roma.launch.plan import plan

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    proc, worker, cfg = _launch_slow(tmp_path)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the kernel's parent-death signal must
    proc.communicate(timeout=30)
    assert _wait(lambda: not _alive(worker)), "the worker outlived its launcher"
    p = plan([cfg])[0]
    assert p.action == "resume", (p, p.status)


@pytest.mark.timeout(30)
def test_exit_codes_mean_one_thing(tmp_path):
    from roma.config import RunConfig
    from roma.launch import status as st

    cfg = RunConfig(output_root=str(tmp_path))
    for code, state, words in ((-15, "interrupted", "killed by SIGTERM"), (-9, "interrupted", "OOM killer"),
                               (-11, "failed", "crashed with SIGSEGV"), (1, "failed", "exited with code 1")):
        st.write_status(cfg.run_dir, "running")
        new = st.ended_by_exit(cfg, code)
        assert new["state"] == state and words in new["reason"]
    st.finished(cfg.run_dir, 1, 0.5)
    assert st.ended_by_exit(cfg, -15) is None  # the job had recorded its end


# ------------------------------------------------------------------ 5: stores that are down or corrupt

@pytest.mark.timeout(30)
def test_corrupt_mlflow_db_is_found_before_planning_and_by_status(tmp_path, monkeypatch, capsys):
    import time

    from roma.launch import cli
    from roma.launch.plan import plan

    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    spec = _folder_spec(tmp_path)
    runs = load_spec(spec, check_data=False).runs
    db = tmp_path / "out" / "s" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\x00garbage, not SQLite" * 100)
    with pytest.raises(ConfigError) as e:
        plan(runs)
    assert f"MLflow store sqlite:///{db}: {db} is not a readable SQLite database" in str(e.value)
    assert "(2 run(s) track there)" in str(e.value)
    t0 = time.monotonic()
    assert cli.main([str(spec), "--skip-data-check"]) == 2
    assert "is not a readable SQLite database" in capsys.readouterr().err and time.monotonic() - t0 < 20
    assert cli.main(["status", str(spec)]) == 1
    captured = capsys.readouterr()
    assert "not a readable SQLite database" in captured.err and all(r.run_id in captured.out for r in runs)


@pytest.mark.timeout(30)
def test_a_tracking_server_that_is_down_is_named_in_seconds(tmp_path, monkeypatch):
    import socket
    import time

    from roma.launch.plan import plan
    from roma.tracking import HTTP_BOUNDS, Tracker, TrackingStoreError, store_problem

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    runs = load_spec(_folder_spec(tmp_path), {"tracking_uri": uri}, check_data=False).runs
    t0 = time.monotonic()
    assert f"MLflow store {uri}: the tracking server did not answer" in store_problem(uri)
    with pytest.raises(ConfigError, match=f"MLflow store {uri}: the tracking server did not answer"):
        plan(runs)
    for k in HTTP_BOUNDS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(TrackingStoreError, match=re.escape(uri)):
        Tracker.open(runs[0], runs[0].run_dir)  # in a job: one line, and MLflow's retries bounded
    assert time.monotonic() - t0 < 20
    assert all(os.environ[k] == v for k, v in HTTP_BOUNDS.items())


@pytest.mark.timeout(30)
def test_fit_scaling_does_not_create_a_mistyped_sqlite_store(tmp_path):
    db = tmp_path / "mistyped.db"
    res = subprocess.run([sys.executable, str(REPO / "analysis" / "fit_scaling.py"), "--experiment", "x",
                          "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "fits")],
                         capture_output=True, text=True, timeout=25, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode != 0 and not db.exists(), res.stderr
    assert f"no such file {db} (mistyped? nothing was created)" in res.stderr


def test_reliability_page_names_tests_that_exist():
    text = (REPO / "docs" / "reliability.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "::" in ln]
    assert len(rows) >= 12
    for row in rows:
        current = None
        for ref in re.findall(r"`([\w./]*::\w+)`", row):
            path, _, name = ref.partition("::")
            current = path or current
            assert f"def {name}(" in (REPO / "tests" / current).read_text(), ref


@pytest.mark.timeout(30)
def test_eval_on_a_run_folder_whose_config_holds_an_alias_is_one_named_error(tmp_path, capsys):
    from roma.launch import cli

    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "config.yaml").write_text("a: &a [1, 1]\nb: [*a, *a]\n")
    with pytest.raises(SystemExit, match=r"config\.yaml: cannot read it: .*anchors and aliases"):
        cli.main(["eval", str(rd)])
