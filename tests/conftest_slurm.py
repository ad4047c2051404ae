"""Fixtures for tests against the real one-node SLURM cluster of slurm/local.

Import them into a test module (or tests/conftest.py):

    from conftest_slurm import slurm_cluster, submitit_folder  # noqa: F401

`slurm_cluster` (session): reuses a running cluster, else starts one with slurm/local/start.sh
(root only; it installs the Debian packages when missing). While a session uses the cluster it holds
a shared flock on <state>/.users, which makes stop.sh refuse to stop it; a cluster that test sessions
started is stopped by the last session to finish (one started by hand or by CI is left running).
Tests skip with the reason when no cluster can be had; with ROMA_SLURM_REQUIRED=1 (CI) they fail
instead. ROMA_SLURM_KEEP=1 leaves the cluster running.

`slurm_multinode` (session): the same for the two-node cluster (`start.sh --nodes 2`: slurmd
roma-n1 and roma-n2, each in its own network namespace and hostname); its clients need its
SLURM_CONF (facts.slurm_conf), which the tests set with monkeypatch.

`submitit_folder` (function): a fresh folder per test (job ids restart at 1 after a wipe, so
folders are never shared) whose still-queued jobs are cancelled when the test ends.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "slurm" / "local"
START_TIMEOUT_S = 900  # a fresh machine installs ~60 MB of packages first


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to submit to the cluster; facts["partition"] works as well."""

    partition: str
    cluster: str
    node: str
    cpus: int
    mem_mb: int
    state_dir: Path
    started_here: bool
    nodes: tuple[str, ...] = ()
    slurm_conf: Path | None = None

    def __getitem__(self, key: str):
        return getattr(self, key)


def state_dir(nodes: int = 1) -> Path:
    """The state folder of the one-node (nodes=1) or two-node cluster; the defaults are start.sh's."""
    if nodes == 1:
        return Path(os.environ.get("ROMA_SLURM_STATE", "/var/lib/roma-slurm"))
    return Path(os.environ.get("ROMA_SLURM_MN_STATE", "/var/lib/roma-slurm-multinode"))


def read_facts(state: Path) -> dict[str, str]:
    """KEY=VALUE lines of <state>/cluster.env, written by start.sh."""
    path = state / "cluster.env"
    facts = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    missing = {"CLUSTER", "PARTITION", "NODE", "CPUS", "MEM_MB"} - set(facts)
    if missing:
        raise ValueError(f"{path}: missing {', '.join(sorted(missing))}")
    return facts


def cluster_up(nodes: int = 1) -> bool:
    if shutil.which("sinfo") is None or not (state_dir(nodes) / "cluster.env").exists():
        return False
    return subprocess.run(["bash", str(LOCAL / "status.sh"), "-q", "--nodes", str(nodes)],
                          timeout=120).returncode == 0


def _unavailable(reason: str):
    if os.environ.get("ROMA_SLURM_REQUIRED") == "1":
        pytest.fail(f"{reason} (ROMA_SLURM_REQUIRED=1: a SLURM cluster is required here)", pytrace=False)
    pytest.skip(reason)


def hold_users_lock(state: Path):
    """A shared flock on <state>/.users for as long as the returned file is open (None: no file yet).
    Blocks while stop.sh runs, which holds it exclusively."""
    path = state / ".users"
    if not path.exists():
        return None
    fh = open(path, "rb")
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def _cluster(nodes: int):
    """Generator behind slurm_cluster / slurm_multinode: reuse, or start (and later stop), a cluster."""
    state = state_dir(nodes)
    flag = ["--nodes", str(nodes)]
    users = hold_users_lock(state)
    started = False
    if not cluster_up(nodes):
        if users is not None:
            users.close()  # start.sh runs alone; a failed start then skips without a held lock
            users = None
        if os.geteuid() != 0:
            _unavailable(f"no SLURM test cluster of {nodes} node(s) is running and starting one needs root: "
                         f"run `sudo bash slurm/local/start.sh --nodes {nodes}`")
        if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
            _unavailable("SLURM is not installed and apt-get is absent: slurm/local/start.sh needs Debian")
        proc = subprocess.run(["bash", str(LOCAL / "start.sh"), *flag], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            _unavailable(f"slurm/local/start.sh --nodes {nodes} failed (exit {proc.returncode}):\n{tail}")
        started = True
        (state / ".started-by-tests").touch()
        users = users or hold_users_lock(state)
    facts = read_facts(state)
    yield SlurmCluster(partition=facts["PARTITION"], cluster=facts["CLUSTER"], node=facts["NODE"],
                       cpus=int(facts["CPUS"]), mem_mb=int(facts["MEM_MB"]), state_dir=state,
                       started_here=started,
                       nodes=tuple(filter(None, facts.get("NODES", facts["NODE"]).split(","))),
                       slurm_conf=Path(facts.get("SLURM_CONF") or state / "etc" / "slurm.conf"))
    if users is not None:
        users.close()  # releases the shared lock
    ours = started or (state / ".started-by-tests").exists()
    if ours and os.geteuid() == 0 and os.environ.get("ROMA_SLURM_KEEP") != "1":
        # refuses (and leaves the cluster up) while another session still holds .users
        subprocess.run(["bash", str(LOCAL / "stop.sh"), *flag], capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def slurm_cluster():
    yield from _cluster(1)


@pytest.fixture(scope="session")
def slurm_multinode():
    yield from _cluster(2)


_SUBMITTED = re.compile(r"^(\d+)(?:_\d+)?_submitted\.pkl$")  # <job>[_<task>]_submitted.pkl


def submitted_job_ids(folder: Path) -> list[str]:
    """Base SLURM job ids of every job (or array) submitit submitted from `folder`."""
    ids = {m.group(1) for p in folder.glob("*_submitted.pkl") if (m := _SUBMITTED.match(p.name))}
    return sorted(ids, key=int)


@pytest.fixture
def submitit_folder(slurm_cluster, tmp_path) -> Path:
    folder = tmp_path / "submitit"
    folder.mkdir()
    yield folder
    ids = submitted_job_ids(folder)
    if ids:  # a failed test must not leave jobs holding the node's CPUs
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def wait_for(pred, timeout: float, what: str, every: float = 0.5):
    """Poll pred() until it returns something truthy (returned), or fail after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
