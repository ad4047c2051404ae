"""The run ids of the built-in specs are pinned: a relaunch after a refactor finds its finished runs.

tests/data/spec_run_ids.json holds every built-in spec's run ids, planned as a dry run (no data,
no environment) with the repository at a fixed root, since repository-relative paths are resolved
against it. An id that changes means finished runs would be recomputed: change it only on purpose
(a new key that changes what runs compute), and regenerate with
`python tests/test_spec_run_ids.py --write`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import roma.spec

FIXTURE = Path(__file__).parent / "data" / "spec_run_ids.json"
FIXED_ROOT = Path("/repo")


def spec_run_ids() -> dict[str, list[str]]:
    saved = roma.spec.REPO_ROOT
    roma.spec.REPO_ROOT = FIXED_ROOT
    try:
        return {name: sorted(r.run_id for r in roma.spec.load_spec(
                    name, check_data=False, require_env=False, dry_run=True).runs)
                for name in roma.spec.list_specs(runs_only=True)}
    finally:
        roma.spec.REPO_ROOT = saved


@pytest.fixture
def no_roma_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("ROMA_")]:
        monkeypatch.delenv(key)


def test_builtin_spec_run_ids_are_unchanged(no_roma_env):
    pinned = json.loads(FIXTURE.read_text())
    now = spec_run_ids()
    assert sorted(now) == sorted(pinned), "the built-in specs changed: regenerate the fixture on purpose"
    changed = {name: {"now": now[name], "pinned": pinned[name]} for name in now if now[name] != pinned[name]}
    assert not changed, f"run ids changed (finished runs would be recomputed): {changed}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_spec_run_ids.py --write")
    for key in [k for k in os.environ if k.startswith("ROMA_")]:
        del os.environ[key]
    FIXTURE.write_text(json.dumps(spec_run_ids(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
