"""`python experiments/launch.py ...`: launch a spec, show its status, list specs, open the MLflow UI.

    launch.py SPEC [--executor local|slurm|debug] [--profile NAME] [--dry-run] [--only PATTERN]
                   [--force] [--retry-failed] [--set key=value ...] [--data-root DIR] [--skip-data-check]
    launch.py status SPEC [--only PATTERN] [--watch SECONDS] [--set ...] [--data-root DIR]
    launch.py list
    launch.py ui [SPEC] [--set ...] [--data-root DIR] [--only PATTERN] [--port N] [--host H]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from roma.launch import slurm
from roma.launch.plan import Planned, clear_for_rerun, plan, reconcile
from roma.launch.status import read_status, run_dir
from roma.launch.table import describe_resources, fmt_loss, render
from roma.naming import run_name
from roma.spec import Spec, list_specs, load_spec, parse_set, select
from roma.validation import ConfigError


def spec_args(p: argparse.ArgumentParser) -> None:
    """The arguments that choose a spec's runs: the same for launch, status and ui."""
    p.add_argument("spec", help="a spec name in experiments/specs (e.g. quickstart) or a path to a YAML file")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, values in YAML (e.g. model=roma_small data.subset=250000)")
    p.add_argument("--data-root", help="pretraining data root (folder, manifest or shards); replaces data.root")
    p.add_argument("--only", metavar="PATTERN", help="only runs whose name or id matches (fnmatch, e.g. '*-4M-*')")


def _launch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Validate a spec and launch its runs.",
                                epilog="other commands: launch.py status SPEC | launch.py list | launch.py ui [SPEC]")
    spec_args(p)
    p.add_argument("--executor", choices=("local", "slurm", "debug"),
                   help="default: slurm when sbatch is on PATH and a cluster profile is chosen, else local")
    p.add_argument("--profile", help="cluster profile (slurm/profiles/NAME.yaml); default: the spec's `cluster:`")
    p.add_argument("--dry-run", action="store_true", help="print the run table, launch nothing")
    p.add_argument("--force", action="store_true", help="rerun finished/failed runs from scratch (deletes their folders)")
    p.add_argument("--retry-failed", action="store_true", help="retry failed runs (resuming from last.pt)")
    p.add_argument("--submitit-folder", help="submitit logs and pickles (default <output_root>/<experiment>/submitit)")
    p.add_argument("--skip-data-check", action="store_true",
                   help="launch without checking the datasets the runs name (roma.data.check)")
    p.add_argument("--execute", help=argparse.SUPPRESS)  # module:function replacing roma.run.execute (tests)
    return p


def _load(args, fetch: bool = True, check_data: bool = True):
    """-> Loaded(spec, note, pending): the spec, or the spec on its fallback dataset (fetched unless fetch=False)."""
    from roma.launch.fallback_data import load_with_fallback

    return load_with_fallback(args.spec, parse_set(args.sets), args.data_root, fetch, check_data)


def _choose_executor(args, spec: Spec) -> tuple[str, dict | None]:
    profile_name = args.profile or spec.cluster
    executor = args.executor or ("slurm" if profile_name and slurm.available() else "local")
    if profile_name and not args.executor and executor == "local":
        print(f"cluster profile {profile_name!r} chosen but sbatch is not on PATH: running locally")
    if executor == "slurm" and not slurm.available():
        raise SystemExit("launch.py: --executor slurm needs SLURM's sbatch on PATH (not found)")
    profile = None
    if executor == "slurm" and profile_name:
        from roma.launch.profiles import load_profile

        try:
            profile = load_profile(profile_name)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"launch.py: {e}") from None
    return executor, profile


def _plan_table(planned: list[Planned], slurm_mode: bool) -> str:
    rows = [[p.cfg.run_id, run_name(p.cfg), p.cfg.model.name,
             "all" if p.cfg.data.subset is None else p.cfg.data.subset,
             describe_resources(p.cfg.resources if slurm_mode else None), p.state,
             p.action + (f" ({p.why})" if p.why and p.action == "skip" else "")] for p in planned]
    return render(["id", "name", "model", "data", "resources", "state", "action"], rows)


def cmd_launch(argv: list[str]) -> int:
    args = _launch_parser().parse_args(argv)
    spec, data_note, data_pending = _load(args, fetch=not args.dry_run)
    executor, profile = _choose_executor(args, spec)
    runs = select(spec.runs, args.only)
    if not runs:
        print(f"no run of {spec.name} matches --only {args.only!r}", file=sys.stderr)
        return 2
    if executor == "slurm":
        runs = [dataclasses.replace(r, resources=slurm.resolve_resources(r, profile, spec.resources_set)) for r in runs]
    planned = plan(runs, force=args.force, retry_failed=args.retry_failed)
    todo = [p for p in planned if p.launches]
    where = f"{executor}" + (f", profile {profile['name']}" if profile else "")
    print(f"spec {spec.name}: {len(spec.runs)} runs, {len(runs)} selected, {len(todo)} to launch ({where})")
    print(_plan_table(planned, executor == "slurm"))
    if data_note:
        print(data_note)
    if todo and not args.skip_data_check and not data_pending:
        from roma.launch.datacheck import check_runs, failed

        bad = failed(check_runs([p.cfg for p in todo]))
        if bad and not args.dry_run:
            print(f"launch.py: the data check failed for {len(bad)} dataset(s) (above): nothing was launched. "
                  "Fix the data, or pass --skip-data-check", file=sys.stderr)
            return 2
    if args.dry_run or not todo:
        return 0
    for p in todo:
        if p.action == "rerun":
            clear_for_rerun(p.cfg)
    cfgs = [p.cfg for p in todo]
    if executor == "slurm":
        out_dir = Path(cfgs[0].output_root) / cfgs[0].experiment  # --set experiment=... renames it
        folder = Path(args.submitit_folder) if args.submitit_folder else out_dir / "submitit"
        parallelism = spec.parallelism or (profile or {}).get("parallelism", 0)
        try:
            jobs = slurm.submit(cfgs, spec.name, folder, parallelism, (profile or {}).get("additional"), args.execute)
        except Exception as e:  # submitit.core.utils.FailedJobError: sbatch's own message
            print(f"launch.py: submission failed ({type(e).__name__}): {str(e).strip()[-2000:]}", file=sys.stderr)
            return 1
        for cfg, job_id in jobs:
            print(f"submitted {run_name(cfg)} ({cfg.run_id}) as SLURM job {job_id}")
        print(f"follow with: python experiments/launch.py status {args.spec} --watch 10")
        return 0
    from roma.launch.executors import EXECUTORS

    try:
        states = EXECUTORS[executor](cfgs, args.execute)
    except KeyboardInterrupt:
        print("interrupted: the current run is marked cancelled; relaunch to resume it", file=sys.stderr)
        return 130
    failed = [rid for rid, s in states.items() if s not in ("finished", "active")]
    active = [rid for rid, s in states.items() if s == "active"]
    out = Path(cfgs[0].output_root) / cfgs[0].experiment
    print(f"done: {len(states) - len(failed) - len(active)} finished, {len(failed)} failed"
          + (f", {len(active)} skipped (another launch computes them)" if active else "")
          + f". Results in {out}/<run id>/; "
          f"MLflow UI: python experiments/launch.py ui {args.spec}")
    return 1 if failed else 0


def status_rows(runs) -> list[list[object]]:
    rows = []
    for cfg in runs:
        st = reconcile(cfg, read_status(run_dir(cfg))) or {"state": "new"}
        rows.append([cfg.run_id, run_name(cfg), st.get("state"), st.get("step"), fmt_loss(st.get("loss")),
                     st.get("job_id"), (st.get("updated") or "")[:19] or None, st.get("reason")])
    return rows


def cmd_status(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="launch.py status", description="State, step, loss and failure reason of each run.")
    spec_args(p)
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until every run has ended")
    args = p.parse_args(argv)
    spec = _load(args, fetch=False, check_data=False).spec
    runs = select(spec.runs, args.only)
    headers = ["id", "name", "state", "step", "loss", "job", "updated", "reason"]
    while True:
        rows = status_rows(runs)
        if args.watch:
            print("\033[2J\033[H", end="")  # clear the terminal between refreshes
        print(f"spec {spec.name} ({len(runs)} runs)")
        print(render(headers, rows))
        if not args.watch or all(r[2] in ("finished", "failed", "cancelled", "new") for r in rows):
            return 0
        time.sleep(args.watch)


def cmd_list(argv: list[str]) -> int:
    rows = []
    for name in list_specs(runs_only=True):
        try:
            spec = load_spec(name, check_data=False, require_env=False)
            rows.append([name, len(spec.runs), spec.description])
        except ConfigError as e:
            rows.append([name, "?", f"invalid: {e.problems[0]}"])
    print(render(["spec", "runs", "description"], rows))
    return 0


def cmd_ui(argv: list[str]) -> int:
    from roma.launch.ui import main as ui_main

    return ui_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"status": cmd_status, "list": cmd_list, "ui": cmd_ui}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return cmd_launch(argv)
    except ConfigError as e:
        print(e, file=sys.stderr)
        print("nothing was launched.", file=sys.stderr)
        return 2
