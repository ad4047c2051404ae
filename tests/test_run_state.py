"""One owner of run state: roma.launch.status is the only module that writes status.json; everything
else changes a run's state through its transitions, which mirror MLflow for states set outside a job."""
from __future__ import annotations

import ast
from pathlib import Path

from mlflow.tracking import MlflowClient

from roma.config import RunConfig
from roma.launch import status as run_state
from roma.launch.status import read_status

ROMA = Path(__file__).resolve().parents[1] / "roma"
OWNER = ROMA / "launch" / "status.py"
PRIMITIVES = {"write_status", "mark_state", "set_terminal_state"}  # status.json, and MLflow's state from outside


def _uses(path: Path) -> list[str]:
    """'<file>:<line> <name>' for every name or attribute in PRIMITIVES, and every "status.json" string
    (a path built to the file; docstrings that mention it hold more than the name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in PRIMITIVES and not isinstance(getattr(node, "ctx", None), ast.Store):
            out.append(f"{path.relative_to(ROMA.parent)}:{node.lineno} {name}")
        if isinstance(node, ast.Constant) and node.value == "status.json":
            out.append(f"{path.relative_to(ROMA.parent)}:{node.lineno} 'status.json'")
    return out


def test_only_the_status_module_writes_run_state():
    found = [u for f in sorted(ROMA.rglob("*.py")) if f not in (OWNER, ROMA / "tracking.py") for u in _uses(f)]
    assert found == [], "write run state through roma.launch.status's transitions: " + ", ".join(found)


def test_the_check_sees_a_stray_writer(tmp_path):
    f = tmp_path / "roma" / "launch" / "rogue.py"
    f.parent.mkdir(parents=True)
    f.write_text("from roma.launch.status import write_status\nimport json\n"
                 "def f(d):\n    write_status(d, 'failed')\n    (d / 'status.json').write_text(json.dumps({}))\n")
    global ROMA
    saved, ROMA = ROMA, tmp_path / "roma"
    try:
        assert _uses(f) == ["roma/launch/rogue.py:4 write_status", "roma/launch/rogue.py:5 'status.json'"]
    finally:
        ROMA = saved


def test_transitions_and_the_mlflow_mirror(tmp_path):
    cfg = RunConfig(experiment="owner", output_root=str(tmp_path / "out"))
    d = cfg.run_dir
    d.mkdir(parents=True)
    run_state.submitted(cfg, "local", pid=1)
    assert read_status(d)["state"] == "pending" and read_status(d)["executor"] == "local"
    run_state.started(d, "local", job_id="9")
    run_state.update_progress(d, 3, 0.5)
    st = read_status(d)
    assert (st["state"], st["step"], st["loss"], st["job_id"]) == ("running", 3, 0.5, "9")
    run_state.failed(d, "RuntimeError: eval", encoder=d / "encoder.pt")
    assert read_status(d)["stage"] == "eval"
    run_state.evaluations_settled(d, None)  # the failed evaluation has since succeeded
    st = read_status(d)
    assert st["state"] == "finished" and st["stage"] is None and st["reason"] is None
    run_state.requeued(d, "77")
    assert "requeued as SLURM job 77" in read_status(d)["reason"]

    # a state set outside a live job reaches the MLflow run too
    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    mlrun = client.create_run(client.create_experiment(cfg.experiment), tags={"run_id": cfg.run_id, "state": "running"})
    run_state.ended_outside(cfg, "failed", "process exited with code -9")
    assert read_status(d)["state"] == "failed"
    run = client.get_run(mlrun.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["state"] == "failed"
    assert run.data.tags["failure_reason"] == "process exited with code -9"
