"""The launcher's command line: argparse subcommands, `launch.py SPEC` still launching, every --help."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roma.launch import cli

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "experiments" / "launch.py"


def _launch_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCH), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "ROMA_PROGRESS": "off"})


def test_top_level_help_lists_every_subcommand():
    p = _launch_py("--help")
    assert p.returncode == 0, p.stderr
    for name in cli.SUBCOMMANDS:
        assert f"\n    {name} " in p.stdout, p.stdout
    assert "launch.py launch NAME" in p.stdout  # how to launch a spec named like a command


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_every_subcommand_has_its_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: launch.py {name} ")
    options = {"launch": "--dry-run", "status": "--watch", "eval": "--eval", "ui": "--port", "list": "--help"}
    assert options[name] in out


def test_a_bare_spec_means_launch_and_subcommand_errors_show_their_usage(capsys):
    args = cli.parse(["quickstart", "--dry-run", "--only", "*"])
    assert (args.command, args.spec, args.dry_run, args.only) == ("launch", "quickstart", True, "*")
    assert cli.parse(["--dry-run", "quickstart"]).command == "launch"  # an option first: still a launch
    assert cli.parse(["launch", "status"]).spec == "status"
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--json"])
    assert "--json needs --dry-run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["status"])  # no spec: the status command's own usage and error
    err = capsys.readouterr().err
    assert err.startswith("usage: launch.py status ") and "spec" in err
    with pytest.raises(SystemExit):
        cli.main(["ui", "--port", "70000"])
    assert "--port 70000" in capsys.readouterr().err


def test_a_spec_named_like_a_subcommand_launches_with_launch(tmp_path, monkeypatch, capsys):
    from roma import spec as spec_mod

    specs = tmp_path / "specs"
    specs.mkdir()
    for name in ("status", "list"):
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(
            {"base": "micro", "output_root": str(tmp_path / "out"), "grid": {"data.subset": [100]}}))
    monkeypatch.setattr(spec_mod, "SPEC_DIR", specs)
    assert cli.main(["launch", "status", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "spec status: 1 runs, 1 selected" in out and "dry run, nothing launched" in out
    assert cli.main(["list"]) == 0  # the word alone is still the command
    assert "status" in capsys.readouterr().out
