"""A run's identity follows what it computes: moving the data, the outputs or the MLflow store (or
another cluster's absolute paths) leaves finished runs finished; other images under the same path
are a new run, said so; metric keys are unique per evaluation."""
from __future__ import annotations

import dataclasses
import shutil
import textwrap

import pytest
import yaml

from roma.config import DenseConfig
from roma.data import fingerprint as fpm
from roma.data.fingerprint import data_fingerprint
from roma.launch import cli
from roma.launch.status import read_status
from roma.spec import load_spec, parse_set
from roma.validation import ConfigError

FAKE = textwrap.dedent('''
    import os

    def ok(cfg, hooks=None):
        with open(os.environ["FAKE_LOG"], "a") as fh:
            fh.write(f"{cfg.run_id}\\n")
        return {"step": 10, "final_loss": 0.25}
''')


def make_tree(root, n=40):
    """Image files in nested folders (validation lists names; nothing decodes them here)."""
    for i in range(n):
        f = root / f"class{i % 4}" / f"img{i:03d}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"jpg %d" % i)
    return root


@pytest.fixture
def study(tmp_path, monkeypatch):
    (tmp_path / "fake_identity_exec.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "train.global_batch": 8, "grid": {"data.subset": [10, 20]}}))

    class Study:
        data = make_tree(tmp_path / "scratch" / "pretrain")

        @staticmethod
        def args(data, out, *extra):
            return [str(spec), "--data-root", str(data), "--set", f"output_root={out}", *extra]

        @staticmethod
        def launch(data, out, *extra):
            return cli.main([*Study.args(data, out), "--executor", "debug", "--execute", "fake_identity_exec:ok",
                             "--skip-data-check", *extra])  # the files are names only, not images

        @staticmethod
        def runs(data, out, *extra):
            return load_spec(spec, parse_set([f"output_root={out}", *extra]), data_root=str(data)).runs

        @staticmethod
        def calls():
            return log.read_text().splitlines()

    return Study


def test_moved_data_outputs_and_store_rerun_nothing(study, tmp_path, capsys):
    out = tmp_path / "outputs"
    assert study.launch(study.data, out) == 0
    first = study.runs(study.data, out)
    assert sorted(study.calls()) == sorted(c.run_id for c in first)

    # data from scratch to project space, outputs archived elsewhere: same ids, nothing reruns
    data2 = tmp_path / "project" / "pretrain-moved"
    shutil.move(str(study.data), str(data2))
    out2 = tmp_path / "archive" / "outputs"
    shutil.move(str(out), str(out2))
    moved = study.runs(data2, out2)
    assert [c.run_id for c in moved] == [c.run_id for c in first]
    assert moved[0].data.root != first[0].data.root
    capsys.readouterr()
    assert study.launch(data2, out2) == 0
    assert len(study.calls()) == 2, "a finished run was repeated after the move"
    assert "0 to launch" in capsys.readouterr().out
    assert cli.main(["status", *study.args(data2, out2)]) == 0
    table = capsys.readouterr().out
    assert all(f"{c.run_id} " in table for c in first) and table.count("  finished  ") == 2  # rows, not the footer

    # a second cluster: other absolute paths for the data, the outputs and the MLflow store
    data3, out3 = tmp_path / "cluster2" / "datasets" / "rs", tmp_path / "cluster2" / "work"
    shutil.copytree(data2, data3)
    shutil.copytree(out2, out3)
    uri = f"sqlite:///{tmp_path / 'cluster2' / 'store' / 'mlflow.db'}"
    assert study.launch(data3, out3, "--set", f"tracking_uri={uri}") == 0
    assert len(study.calls()) == 2, "a finished run was repeated on the second cluster"
    assert [c.run_id for c in study.runs(data3, out3, f"tracking_uri={uri}")] == [c.run_id for c in first]


def test_other_images_under_the_same_path_are_a_new_run_and_said_so(study, tmp_path, capsys):
    out = tmp_path / "outputs"
    assert study.launch(study.data, out, "--only", "*-10-*") == 0
    (old,) = [c for c in study.runs(study.data, out) if c.data.subset == 10]
    for f in sorted(study.data.rglob("*.jpg"))[:5]:  # the data under that path is replaced in part
        f.rename(f.with_name("new_" + f.name))
    (new,) = [c for c in study.runs(study.data, out) if c.data.subset == 10]
    assert new.run_id != old.run_id and new.data.checksum != old.data.checksum
    capsys.readouterr()
    assert cli.main([*study.args(study.data, out), "--only", "*-10-*", "--dry-run", "--skip-data-check"]) == 0
    said = capsys.readouterr().out
    assert f"differs from run {old.run_id}'s under the same path" in said and f"new run {new.run_id}" in said
    assert (read_status(old.run_dir) or {}).get("state") == "finished"  # kept, never overwritten


def test_pinned_checksum_refuses_other_data_and_job_refuses_changed_data(study, tmp_path):
    (cfg,) = [c for c in study.runs(study.data, tmp_path / "o") if c.data.subset == 10]
    with pytest.raises(ConfigError, match="data.checksum: pinned to ffffffffffff.*other images"):
        study.runs(study.data, tmp_path / "o", "data.subset=10", "data.checksum=" + "f" * 64)
    pinned = study.runs(study.data, tmp_path / "o", "data.subset=10", f"data.checksum={cfg.data.checksum}")
    assert [c.run_id for c in pinned] == [cfg.run_id]

    from roma.data import list_images, subset_keys
    from roma.data.dataset import build_pretrain_dataset

    chosen = subset_keys(list_images(study.data), 10, 0)
    (study.data / chosen[0]).unlink()  # one of its images goes after the launch, before the job starts
    with pytest.raises(ValueError, match="changed since this run was launched"):
        build_pretrain_dataset(cfg.data, cfg.model, cfg.ares, tmp_path / "run", 0)


def test_evaluation_roots_are_not_in_the_id(study, tmp_path):
    a = study.runs(study.data, tmp_path / "o")[0]
    r = dataclasses.replace
    probes = tuple(r(p, root="/mnt/cluster2/AID") for p in a.eval.probes)
    dense = (DenseConfig(task="levir", root="/a/LEVIR", labels_root="/a/labels"),)
    b = r(a, eval=r(a.eval, probes=probes, dense=dense))
    moved = r(a, eval=r(a.eval, dense=(DenseConfig(task="levir", root="/b/LEVIR-CD", labels_root="/b/l"),)))
    assert probes and b.eval.probes[0].root != a.eval.probes[0].root
    assert r(a, eval=r(a.eval, probes=probes)).run_id == a.run_id and b.run_id == moved.run_id
    assert r(b, eval=r(b.eval, dense=(DenseConfig(task="oscd"),))).run_id != b.run_id  # what it computes: in


def test_fingerprint_is_cached_and_follows_content(tmp_path, monkeypatch):
    from roma.data.shards import pack

    data, cache = make_tree(tmp_path / "d", n=30), tmp_path / "cache"
    fp = data_fingerprint(data, 12, 1, cache)
    assert (fp.total, fp.size) == (30, 12)
    # same keys listed as shards or a manifest: same checksum
    from PIL import Image

    real = tmp_path / "real"
    for f in sorted(data.rglob("*.jpg")):
        (real / f.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(real / f.relative_to(data), format="JPEG")
    pack(real, tmp_path / "shards", shard_size=7)
    (tmp_path / "list.txt").write_text("".join(f"{f.relative_to(data).as_posix()}\n" for f in data.rglob("*.jpg")))
    for other in (real, tmp_path / "shards", tmp_path / "list.txt"):
        assert data_fingerprint(other, 12, 1, cache).checksum == fp.checksum, other

    # a relaunch (a new process: empty memo) lists nothing while no folder changed
    fpm._KEYS.clear()
    fpm._RANKED.clear()

    def no_listing(*a, **k):
        raise AssertionError("listed the images although the cache was valid")
    monkeypatch.setattr(fpm, "list_folder", no_listing)
    assert data_fingerprint(data, 12, 1, cache) == fp
    monkeypatch.undo()
    (data / "class2" / "extra.jpg").write_bytes(b"x")  # a new image: its folder's mtime moves
    again = data_fingerprint(data, None, 0, cache)
    assert again.total == 31 and again.checksum != data_fingerprint(data, 12, 1, cache).checksum


def test_metric_key_collision_is_refused_at_validation(study, tmp_path):
    two = "eval.probes=[{protocol: fast}, {protocol: full, train_ratios: [0.2, 0.5]}]"
    with pytest.raises(ConfigError, match=r"eval.probes\[1\]: evaluations probe_aid_fast_uni_mean and "
                                          r"probe_aid_full_uni_mean report the same metric\(s\) aid_oa_tr50, "
                                          r"aid_oa_tr50_std: give eval.probes\[1\].dataset"):
        study.runs(study.data, tmp_path / "o", two)
    fixed = "eval.probes=[{protocol: fast}, {protocol: full, dataset: aid_full, train_ratios: [0.2, 0.5]}]"
    assert len(study.runs(study.data, tmp_path / "o", fixed)) == 2
