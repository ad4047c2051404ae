"""The launcher: dry-run table, relaunch semantics (skip / resume / retry / force), status files,
--only, failures, with fake `execute` functions through the debug and local executors."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import textwrap

import pytest
import yaml

from roma.launch import cli
from roma.launch.profiles import load_profile
from roma.launch.slurm import resolve_resources, slurm_parameters
from roma.launch.status import read_status, run_dir, write_status
from roma.spec import load_spec

FAKE = textwrap.dedent('''
    """Fake roma.run.execute variants for the launcher tests; calls are logged to $FAKE_LOG."""
    import os
    from roma.launch.status import run_dir, update_progress

    def _log(cfg, what):
        with open(os.environ["FAKE_LOG"], "a") as fh:
            fh.write(f"{cfg.run_id} {what}\\n")

    def ok(cfg, hooks=None):
        resumed = (run_dir(cfg) / "last.pt").exists()
        _log(cfg, "resume" if resumed else "start")
        (run_dir(cfg) / "last.pt").write_text("ckpt")
        update_progress(run_dir(cfg), 5, 0.5)
        return {"step": 10, "final_loss": 0.25}

    def boom(cfg, hooks=None):
        _log(cfg, "start")
        update_progress(run_dir(cfg), 3, 9.0)
        raise RuntimeError("loss is NaN at step 3")

    def die(cfg, hooks=None):
        _log(cfg, "start")
        os._exit(3)  # a crash the run cannot record itself (OOM kill, segfault)
''')


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A 2-run spec over a tiny image folder, outputs in tmp, fakes importable as fake_exec."""
    (tmp_path / "fake_exec.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    (tmp_path / "imgs.txt").write_text("".join(f"a/{i}.jpg\n" for i in range(300)))  # a manifest root
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "output_root": str(tmp_path / "out"),
                                    "grid": {"data.subset": [100, 200]}}))
    runs = load_spec(spec, data_root=str(tmp_path / "imgs.txt")).runs

    class Env:
        args = [str(spec), "--data-root", str(tmp_path / "imgs.txt")]
        out = tmp_path / "out"

        @staticmethod
        def launch(*extra: str) -> int:
            # the manifest names images that do not exist: the launcher's data check (tested in
            # test_data_check.py) would stop every launch, so these launcher tests skip it
            return cli.main([*Env.args, "--skip-data-check", *extra])

        @staticmethod
        def calls() -> list[str]:
            return log.read_text().splitlines()

        @staticmethod
        def state(i: int) -> dict:
            return read_status(run_dir(runs[i])) or {}

    Env.runs = runs
    return Env


def test_dry_run_prints_table_and_launches_nothing(env, capsys):
    assert env.launch("--dry-run", "--execute", "fake_exec:ok") == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("id "))
    assert header.split() == ["id", "name", "model", "data", "epochs", "batch", "peak", "lr", "ranks", "x", "dev", "x", "acc",
                              "steps", "images", "seen", "evals", "GPU-h", "(wall)", "resources", "state", "action"]
    for cfg, name in zip(env.runs, ["roma_micro_tiny-100-seed0", "roma_micro_tiny-200-seed0"]):
        assert any(line.startswith(cfg.run_id) and name in line and " new " in line for line in out.splitlines())
    assert env.calls() == [] and not env.out.exists()


def test_debug_runs_then_relaunch_skips_finished(env, capsys):
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok") == 0
    assert [c.split()[1] for c in env.calls()] == ["start", "start"]
    for i, cfg in enumerate(env.runs):
        st = env.state(i)
        assert (st["state"], st["step"], st["loss"], st["reason"]) == ("finished", 10, 0.25, None)
        assert yaml.safe_load((run_dir(cfg) / "config.yaml").read_text())["data"]["subset"] == cfg.data.subset
    capsys.readouterr()
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok") == 0
    assert len(env.calls()) == 2  # nothing ran again
    assert capsys.readouterr().out.count("skip (finished)") == 2
    # --force reruns from scratch: the old folder (and its last.pt) is gone
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok", "--force", "--only", "*-100-*") == 0
    assert env.calls()[-1] == f"{env.runs[0].run_id} start" and len(env.calls()) == 3


def test_unfinished_runs_resume(env):
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok") == 0
    # run 0 died while running (its process is gone), run 1 was cancelled: both resume from last.pt
    write_status(run_dir(env.runs[0]), "running", executor="local", host=socket.gethostname(), pid=2**22 + 7)
    write_status(run_dir(env.runs[1]), "cancelled", reason="interrupted (Ctrl-C)")
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok") == 0
    assert env.calls()[2:] == [f"{env.runs[0].run_id} resume", f"{env.runs[1].run_id} resume"]
    assert env.state(1)["state"] == "finished" and env.state(1)["reason"] is None


def test_active_run_is_not_launched_twice(env, capsys):
    write_status(run_dir(env.runs[0]), "running", executor="local", host=socket.gethostname(), pid=os.getpid())
    assert env.launch("--executor", "debug", "--execute", "fake_exec:ok", "--force") == 0
    assert env.calls() == [f"{env.runs[1].run_id} start"]
    assert "skip (active)" in capsys.readouterr().out


def test_failure_recorded_then_retried_only_on_request(env, capsys):
    assert env.launch("--executor", "local", "--execute", "fake_exec:boom") == 1  # both run, both fail
    for i, cfg in enumerate(env.runs):
        st = env.state(i)
        assert (st["state"], st["reason"], st["step"]) == ("failed", "RuntimeError: loss is NaN at step 3", 3)
        assert "loss is NaN" in (run_dir(cfg) / "error.txt").read_text()
    assert env.launch("--executor", "local", "--execute", "fake_exec:ok") == 0
    assert len(env.calls()) == 2 and "failed (use --retry-failed)" in capsys.readouterr().out
    assert env.launch("--executor", "local", "--execute", "fake_exec:ok", "--retry-failed", "--only", env.runs[1].run_id) == 0
    assert env.calls()[-1] == f"{env.runs[1].run_id} start"
    assert (env.state(0)["state"], env.state(1)["state"]) == ("failed", "finished")

    # `status` shows state, step, loss and the reason
    capsys.readouterr()
    assert cli.main(["status", *env.args]) == 0
    out = capsys.readouterr().out
    row0 = next(line for line in out.splitlines() if line.startswith(env.runs[0].run_id))
    assert "failed" in row0 and "RuntimeError: loss is NaN at step 3" in row0 and "9.0000" in row0
    row1 = next(line for line in out.splitlines() if line.startswith(env.runs[1].run_id))
    assert "finished" in row1 and " 10/" in row1 and "0.2500" in row1  # step of the planned total


def test_debug_executor_reraises_after_recording(env):
    with pytest.raises(RuntimeError, match="loss is NaN"):
        env.launch("--executor", "debug", "--execute", "fake_exec:boom")
    assert env.state(0)["state"] == "failed" and env.state(1) == {}  # stopped at the first failure


def test_local_crash_is_failed_with_exit_code(env):
    assert env.launch("--executor", "local", "--execute", "fake_exec:die", "--only", "*-200-*") == 1
    st = env.state(1)
    assert st["state"] == "failed" and st["reason"] == "process exited with code 3"
    assert env.state(0) == {}  # --only left run 0 alone


def test_spec_error_launches_nothing(env, capsys):
    assert env.launch("--set", "model=roma_tinyy", "--execute", "fake_exec:ok") == 2
    err = capsys.readouterr().err
    assert "unknown model 'roma_tinyy'" in err and "nothing was launched" in err
    assert env.calls() == [] and not env.out.exists()


def test_status_file_is_atomic_json(tmp_path):
    d = tmp_path / "run"
    write_status(d, "running", step=1, loss=2.0)
    write_status(d, "failed", reason="boom")
    data = json.loads((d / "status.json").read_text())
    assert (data["state"], data["step"], data["reason"]) == ("failed", 1, "boom")
    assert [p.name for p in d.iterdir()] == ["status.json"]  # no temp files left behind
    with pytest.raises(ValueError, match="unknown run state"):
        write_status(d, "done")
    (d / "status.json").write_text("{not json")
    assert read_status(d)["state"] == "failed"  # a broken file is never mistaken for a new run


def test_mlflow_state_tag_follows_status(env, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from roma.tracking import mark_state, tracking_uri

    cfg = env.runs[0]
    run_dir(cfg).mkdir(parents=True)
    client = mlflow.tracking.MlflowClient(tracking_uri(cfg))
    exp = client.create_experiment(cfg.experiment)
    mlrun = client.create_run(exp, tags={"run_id": cfg.run_id, "state": "running"})
    mark_state(cfg, "failed", "RuntimeError: boom")
    run = client.get_run(mlrun.info.run_id)
    assert (run.data.tags["state"], run.data.tags["failure_reason"]) == ("failed", "RuntimeError: boom")
    assert run.info.status == "FAILED"  # MLflow's own status, not only our tag


def test_slurm_resources_profile_then_spec(tmp_path, env):
    prof = tmp_path / "tiny_cluster.yaml"
    prof.write_text(yaml.safe_dump({"partition": "debug", "cpus_per_task": 4, "gpus_per_node": 2,
                                    "setup": ["module load cuda"], "parallelism": 3,
                                    "additional": {"exclusive": True}}))
    profile = load_profile(str(prof))
    spec = load_spec(env.args[0], {"resources.mem_gb": 16}, data_root=env.args[2])
    res = resolve_resources(spec.runs[0], profile, spec.resources_set)
    # the profile fills what the spec leaves out; the spec's (--set) mem_gb wins
    assert (res.partition, res.cpus_per_task, res.gpus_per_node, res.mem_gb) == ("debug", 4, 2, 16)
    params = slurm_parameters(res, "roma-tiny", profile["parallelism"], profile["additional"])
    assert params["partition"] == "debug" and params["mem"] == "16GB" and params["array_parallelism"] == 3
    assert params["setup"] == ["module load cuda"] and params["gpus_per_node"] == 2
    assert params["ntasks_per_node"] == 2 and params["additional_parameters"] == {"exclusive": True}
    cpu = slurm_parameters(dataclasses.replace(res, gpus_per_node=0), "x")
    assert "gpus_per_node" not in cpu and cpu["ntasks_per_node"] == 1 and "array_parallelism" not in cpu
    # more than one task: a rank that dies ends the step (no rank left hanging in a collective)
    assert params["srun_args"] == ["--kill-on-bad-exit=1"] and "srun_args" not in cpu
    two_nodes = slurm_parameters(dataclasses.replace(res, gpus_per_node=0, nodes=2), "x")
    assert two_nodes["nodes"] == 2 and two_nodes["srun_args"] == ["--kill-on-bad-exit=1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("partiton: x\n")
    with pytest.raises(ValueError, match="did you mean 'partition'"):
        load_profile(str(bad))


# ------------------------------------------------------------------ SLURM plumbing without a cluster

def test_slurm_checkpoint_requeues_same_call(env):
    import pickle

    from roma.launch import job as jobmod

    cfg = env.runs[0]
    calls = []
    undo = jobmod.JobHooks(run_dir(cfg)).on_preempt(lambda: calls.append("saved"))
    try:
        task = pickle.loads(pickle.dumps(jobmod.SlurmRun("fake_exec:ok")))  # submitit pickles it
        delayed = task.checkpoint(cfg.to_dict())
    finally:
        undo()
    assert calls == ["saved"]
    assert delayed.function is task and delayed.args == (cfg.to_dict(),)
    st = read_status(run_dir(cfg))
    assert st["state"] == "requeued" and "requeued" in st["reason"]
    # the requeued call resumes: requeued -> relaunch plans it as unfinished work, not new
    from roma.launch.plan import plan

    assert plan([cfg])[0].action == "resume"


def test_slurm_submission_and_reconcile(env, monkeypatch, tmp_path, capsys):
    """`--executor slurm` with submitit's executor replaced: one array, pending statuses with job
    ids; later `status` turns an ended job that never recorded its end into cancelled/failed."""
    import submitit

    from roma.launch import slurm

    submitted = {}

    class FakeJob:
        def __init__(self, i):
            self.job_id = f"77_{i}"

    class FakeExecutor:
        def __init__(self, folder, max_num_timeout):
            submitted["folder"] = folder

        def update_parameters(self, **params):
            submitted["params"] = params

        def map_array(self, fn, args):
            submitted["fn"], submitted["args"], submitted["array"] = fn, list(args), submitted["params"]
            return [FakeJob(i) for i in range(len(submitted["args"]))]

        def submit(self, fn, *args):  # one evaluation job
            submitted.setdefault("evals", []).append((fn, args, submitted["params"]))
            return FakeJob(f"e{len(submitted['evals'])}")

    monkeypatch.setattr(submitit, "SlurmExecutor", FakeExecutor)
    monkeypatch.setattr(slurm, "available", lambda: True)
    prof = tmp_path / "c.yaml"
    prof.write_text("partition: batch\nparallelism: 5\n")
    assert env.launch("--profile", str(prof), "--execute", "fake_exec:ok") == 0  # slurm by default
    assert submitted["array"]["partition"] == "batch" and submitted["array"]["array_parallelism"] == 5
    assert submitted["folder"].endswith("submitit") and len(submitted["args"]) == 2
    assert submitted["fn"].execute_target == "fake_exec:ok"
    # the pretraining jobs only pretrain; each evaluation is its own job, after its run's job succeeded
    assert submitted["fn"].evaluate is False
    evals = submitted["evals"]
    assert [(a[0]["sweep"], a[1]) for _, a, _ in evals] == \
        [(submitted["args"][i]["sweep"], ["probe_aid_fast_uni_mean"]) for i in range(2)]
    for i, (fn, _, params) in enumerate(evals):
        assert type(fn).__name__ == "SlurmEval"
        assert params["additional_parameters"]["dependency"] == f"afterok:77_{i}"
        assert params["additional_parameters"]["kill_on_invalid_dep"] == "yes"
        assert params["nodes"] == 1 and params["partition"] == "batch" and "array_parallelism" not in params
    assert [env.state(i)["job_id"] for i in range(2)] == ["77_0", "77_1"]
    assert all(env.state(i)["state"] == "pending" for i in range(2))

    # job 77_0 still queued, 77_1 was scancel'ed before it could record anything
    monkeypatch.setattr(slurm, "job_state", lambda job_id: {"77_0": "active", "77_1": "cancelled"}[job_id])
    capsys.readouterr()
    assert env.launch("--profile", str(prof), "--execute", "fake_exec:ok", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "skip (active)" in out and out.count("resume") == 1
    assert env.state(1)["state"] == "cancelled" and env.state(0)["state"] == "pending"


def test_list_shows_every_spec(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("scaling_data_micro "))
    assert row.split()[1] == "15"
    assert next(line for line in out.splitlines() if line.startswith("scaling_data ")).split()[1] == "7"


class _Pids:
    def __len__(self):
        return 40

    def __getitem__(self, i):
        import time

        time.sleep(0.02)
        return os.getpid()


def test_dataloader_workers_survive_job_signals():
    """SLURM signals every process of a job; workers set up with the launcher's worker_init_fn
    must not die (which would fail the run instead of letting the main process requeue it)."""
    import signal

    from torch.utils.data import DataLoader

    from roma.train.distributed import worker_ignore_job_signals

    loader = DataLoader(_Pids(), batch_size=1, num_workers=1, worker_init_fn=worker_ignore_job_signals)
    pids = []
    for i, batch in enumerate(loader):
        pids.append(int(batch[0]))
        if i == 2:
            os.kill(pids[-1], signal.SIGTERM)
            os.kill(pids[-1], signal.SIGUSR2)
    assert len(pids) == 40 and len(set(pids)) == 1
