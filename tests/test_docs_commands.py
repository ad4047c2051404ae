"""The README and docs/ are true to the code: every command they show runs, every link resolves.

- README.md is a front door of at most 400 lines, and links one page per reference topic.
- Every `python experiments/launch.py ...` line of a ```bash block in README.md or docs/*.md runs
  as written: a launch as a dry run (`--dry-run` added where it is absent: a real launch would
  compute), `list` and `status` as they are (`status` with output_root in a temporary folder and
  the data variables set, as where its spec was launched);
  `eval` and `ui` (they would compute or serve) are parsed by their own argument parsers, and the
  runs they select are resolved by a dry run of the same spec and selection. A target with a
  `<placeholder>` (a run folder) is parsed only.
- Every other `python <script>` / `python -m <module>` line of those blocks names a script or
  module that exists, and every `--option` it uses is one its `--help` lists.
- Every relative link `[text](path#anchor)` of README.md and docs/*.md reaches a file, and its
  anchor a heading of that file (GitHub's slugs).
Output blocks (```text, bare ```) are transcripts, not commands.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOPIC_PAGES = ("architecture", "model", "data", "training", "specs", "slurm", "cuda", "evaluation",
               "analysis", "benchmarks", "micro_study", "history", "reliability")
README_MAX_LINES = 400
LAUNCH = "experiments/launch.py"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
WRAPPERS = ("srun", "sudo")  # `srun --gpus 1 python ...`: the python command after the wrapper


def _blocks(text: str, lang: str = "bash") -> list[str]:
    """The lines of every fenced block of `lang`, continuation lines (trailing backslash) joined."""
    out, inside, pending = [], False, ""
    for line in text.split("\n"):
        if line.startswith("```"):
            inside = (not inside) and line[3:].strip() == lang
            continue
        if inside:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append(pending + line)
            pending = ""
    return out


def _python_commands(line: str) -> list[list[str]]:
    """The python commands of one shell line: each `&&`/`;` segment that runs python, from python on."""
    tokens = shlex.split(line, comments=True)
    segments, cur = [], []
    for t in tokens:
        if t in ("&&", ";", "||"):
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    out = []
    for seg in segments:
        i = 0
        while i < len(seg) and ENV_ASSIGNMENT.match(seg[i]):
            i += 1
        if i < len(seg) and seg[i] in WRAPPERS:
            rest = [k for k in range(i, len(seg)) if seg[k] in ("python", "python3")]
            i = rest[0] if rest else len(seg)
        if i < len(seg) and seg[i] in ("python", "python3"):
            out.append(seg[i + 1:])
    return out


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `python`) for every python command in a bash block of the pages."""
    found = []
    for page in PAGES:
        for line in _blocks(page.read_text()):
            for argv in _python_commands(line):
                if argv:
                    found.append((f"{page.relative_to(REPO)}: python {shlex.join(argv)}", argv))
    return found


COMMANDS = _commands()
LAUNCH_COMMANDS = [(w, a[1:]) for w, a in COMMANDS if a[0] == LAUNCH]
OTHER_COMMANDS = [(w, a) for w, a in COMMANDS if a[0] != LAUNCH]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROMA_")}
    # the fingerprint cache and anything else a dry run may write go to the test's folder
    return {**env, "ROMA_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "ROMA_PROGRESS": "off"}


def _run(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None,
         timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, check=False, env={**_env(tmp_path), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _selection(ns) -> list[str]:
    """The spec-selection arguments of a parsed status/eval/ui command, as launch arguments."""
    out = []
    if ns.sets:
        out += ["--set", *ns.sets]
    if ns.data_root:
        out += ["--data-root", ns.data_root]
    if ns.only:
        out += ["--only", ns.only]
    return out


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().split("\n")
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    readme = "\n".join(lines)
    for topic in TOPIC_PAGES:
        assert (REPO / "docs" / f"{topic}.md").is_file(), f"docs/{topic}.md is missing"
        assert f"(docs/{topic}.md" in readme, f"README.md does not link docs/{topic}.md"


def test_commands_were_found():
    # an extraction that finds nothing would let every page drift unchecked
    assert len(LAUNCH_COMMANDS) >= 10, [w for w, _ in COMMANDS]
    subcommands = {a[0] for _, a in LAUNCH_COMMANDS if a}
    assert {"status", "eval", "ui", "list"} <= subcommands, subcommands
    assert any("--dry-run" in a for _, a in LAUNCH_COMMANDS)
    assert len(OTHER_COMMANDS) >= 5, [w for w, _ in COMMANDS]


def test_extraction_reads_shell_lines():
    line = "python3 -m venv .venv && . .venv/bin/activate && PYTHONPATH=. python x.py --a 'b c'  # note"
    assert _python_commands(line) == [["-m", "venv", ".venv"], ["x.py", "--a", "b c"]]
    assert _python_commands("srun --gpus 1 python y.py build --src s") == [["y.py", "build", "--src", "s"]]
    assert _python_commands("pip install -e .") == []
    text = "```bash\npython a.py \\\n  --b 1\n```\n```text\npython not_a_command.py\n```\n"
    assert _blocks(text) == ["python a.py    --b 1"]


@pytest.mark.parametrize("where,argv", LAUNCH_COMMANDS, ids=[w for w, _ in LAUNCH_COMMANDS])
def test_launch_command_runs(where, argv, tmp_path):
    from roma.launch import cli, ui

    sub = argv[0] if argv and argv[0] in ("list", "status", "eval", "ui") else None
    if sub == "list":
        p = _run([LAUNCH, *argv], tmp_path)
        assert p.returncode == 0 and "scaling_data" in p.stdout, where + "\n" + p.stderr[-2000:]
        return
    if sub == "status":
        # status resolves the spec as its launch did, with the data variables set: here to an empty folder
        from roma.data.check import ENV_VARS

        (tmp_path / "data").mkdir()
        env = {v: str(tmp_path / "data") for v in ENV_VARS.values()}
        p = _run([LAUNCH, *argv, "--set", f"output_root={tmp_path / 'outputs'}"], tmp_path, env=env)
        shown = where + "\n" + p.stdout[-1000:] + p.stderr[-2000:]
        assert p.returncode == 0 and re.search(r"spec \S+ \(\d+ runs\)", p.stdout), shown
        return
    if sub in ("eval", "ui"):
        try:  # the options exist and take what the page gives them
            ns = cli._eval_parser().parse_args(argv[1:]) if sub == "eval" else ui.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{where}: its arguments do not parse")
        target = ns.target if sub == "eval" else ns.spec
        if target is None or "<" in target:
            return  # a placeholder run folder (or the only store under outputs/): parsed only
        launch = [target, *_selection(ns), "--dry-run"]
    else:
        launch = argv if "--dry-run" in argv else [*argv, "--dry-run"]
    p = _run([LAUNCH, *launch], tmp_path)
    assert p.returncode == 0, f"{where}\n(ran: launch.py {shlex.join(launch)})\n{p.stdout[-2000:]}{p.stderr[-3000:]}"
    if "--json" in launch:
        assert json.loads(p.stdout)["runs"], where
    else:
        assert "dry run, nothing launched" in p.stdout, where + "\n" + p.stdout[-2000:]


@functools.cache
def _help(script: tuple[str, ...], sub: str | None) -> str:
    """The --help of a script, and of its subcommand `sub` when it has one (e.g. `shards pack`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    texts = []
    for extra in ([], [sub]) if sub else ([],):
        p = subprocess.run([sys.executable, *script, *extra, "--help"], cwd=REPO, env=env, check=False,
                           capture_output=True, text=True, timeout=180)
        texts.append(p.stdout + p.stderr)
    return "\n".join(texts)


@pytest.mark.parametrize("where,argv", OTHER_COMMANDS, ids=[w for w, _ in OTHER_COMMANDS])
def test_other_command_names_real_options(where, argv):
    if argv[0] == "-m":
        module = argv[1]
        script, rest = ("-m", module), argv[2:]
        if module.split(".")[0] == "roma":
            path = REPO / Path(*module.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), where
    else:
        script, rest = (argv[0],), argv[1:]
        assert (REPO / argv[0]).is_file(), f"{where}: {argv[0]} does not exist"
    if script == ("-m", "venv"):
        return
    options = {a.split("=")[0] for a in rest if a.startswith("--")}
    if not options:
        return
    sub = rest[0] if rest and re.fullmatch(r"[a-z][a-z_-]*", rest[0]) else None
    text = _help(script, sub)
    unknown = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w-])", text))
    assert not unknown, f"{where}: {unknown} not in its --help"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> set[str]:
    out, inside = set(), False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            inside = not inside
        elif not inside and re.match(r"^#{1,6} ", line):
            out.add(_slug(line.lstrip("#")))
    return out


def _links(path: Path) -> list[str]:
    out, inside = [], False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
            out += re.findall(r"\]\(([^)\s]+)\)", line)
    return out


def test_slug_is_githubs():
    assert _slug(" The paper's recipe, and where we differ") == "the-papers-recipe-and-where-we-differ"
    assert _slug("The two-node test cluster (`start.sh --nodes 2`)") == "the-two-node-test-cluster-startsh---nodes-2"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve(page):
    bad = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):
            continue  # http(s), mailto
        target, _, anchor = link.partition("#")
        dest = (page.parent / target).resolve() if target else page
        if not dest.exists():
            bad.append(f"{link}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _headings(dest):
            bad.append(f"{link}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, f"{page.relative_to(REPO)}: " + "; ".join(bad)
