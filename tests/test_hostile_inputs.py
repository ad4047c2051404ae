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


def test_every_yaml_load_goes_through_roma_yamlio():
    """One loader: no other module of the project parses YAML itself."""
    pattern = re.compile(r"\byaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(")
    offenders = [f"{p.relative_to(REPO)}:{i}" for d in ("roma", "experiments", "analysis", "benchmarks", "slurm")
                 for p in (REPO / d).rglob("*.py") if p.name != "yamlio.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
