"""`python experiments/launch.py ...` (or `roma-launch ...`): launch a spec, show its status, list specs,
run evaluations alone, open the MLflow UI. One argparse parser with a subcommand each:

    launch.py [launch] SPEC [--executor local|slurm|debug] [--profile NAME] [--dry-run [--json]] [--only PATTERN]
                   [--force] [--retry-failed] [--set key=value ...] [--data-root DIR] [--skip-data-check]
    launch.py eval SPEC|RUN_DIR [--eval PATTERN ...] [--only PATTERN] [--force] [--executor local|slurm|debug]
    launch.py status SPEC [--only PATTERN] [--watch SECONDS] [--set ...] [--data-root DIR]
    launch.py list
    launch.py ui [SPEC] [--set ...] [--data-root DIR] [--only PATTERN] [--port N] [--host H]

A first word that is not a subcommand is a spec to launch (`launch.py quickstart` is
`launch.py launch quickstart`); a spec named like a subcommand is launched with `launch.py launch NAME`.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

from roma.launch import slurm
from roma.launch.plan import Planned, clear_for_rerun, plan
from roma.launch.status import ENDED
from roma.launch.table import describe_resources, render
from roma.naming import run_name
from roma.tracking import TrackingStoreError
from roma.spec import Spec, list_specs, load_spec, parse_set, select
from roma.validation import ConfigError


def spec_args(p: argparse.ArgumentParser) -> None:
    """The arguments that choose a spec's runs: the same for launch, status and ui."""
    p.add_argument("spec", help="a spec name in experiments/specs (e.g. quickstart) or a path to a YAML file")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, values in YAML (e.g. model=roma_small data.subset=250000)")
    p.add_argument("--data-root", help="pretraining data root (folder, manifest or shards); replaces data.root")
    p.add_argument("--only", metavar="PATTERN", help="only runs whose name or id matches (fnmatch, e.g. '*-4M-*')")


def launch_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    spec_args(p)
    p.add_argument("--executor", choices=("local", "slurm", "debug"),
                   help="default: slurm when sbatch is on PATH and a cluster profile is chosen, else local")
    p.add_argument("--profile", help="cluster profile (slurm/profiles/NAME.yaml); default: the spec's `cluster:`")
    p.add_argument("--dry-run", action="store_true",
                   help="print each run's recipe, steps, evaluations and GPU-hour estimate; launch nothing "
                        "(works without data: missing data and unset variables are warnings)")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON on stdout")
    p.add_argument("--force", action="store_true", help="rerun finished/failed runs from scratch (deletes their folders)")
    p.add_argument("--retry-failed", action="store_true", help="retry failed runs (resuming from last.pt)")
    p.add_argument("--submitit-folder", help="submitit logs and pickles (default <output_root>/<experiment>/submitit)")
    p.add_argument("--skip-data-check", action="store_true",
                   help="launch without checking the datasets the runs name (roma.data.check)")
    p.add_argument("--execute", help=argparse.SUPPRESS)  # module:function replacing roma.run.execute (tests)
    return p


def _load(args, fetch: bool = True, check_data: bool = True):
    """-> Loaded(spec, note, pending): the spec, or the spec on its fallback dataset (fetched unless fetch=False).

    A dry run fetches nothing and turns missing data into the spec's warnings."""
    from roma.launch.fallback_data import load_with_fallback

    return load_with_fallback(args.spec, parse_set(args.sets), args.data_root, fetch, check_data,
                              dry_run=getattr(args, "dry_run", False))


def _choose_executor(args, spec: Spec) -> tuple[str, dict | None]:
    """A dry run plans for the cluster profile even where sbatch is missing (a laptop, a login node)."""
    profile_name = args.profile or spec.cluster
    executor = args.executor or ("slurm" if profile_name and (args.dry_run or slurm.available()) else "local")
    if profile_name and not args.executor and executor == "local":
        print(f"cluster profile {profile_name!r} chosen but sbatch is not on PATH: running locally")
    if executor == "slurm" and not slurm.available() and not args.dry_run:
        raise SystemExit("launch.py: --executor slurm needs SLURM's sbatch on PATH (not found)")
    return executor, _profile(profile_name) if executor == "slurm" else None


def _plan_table(planned: list[Planned], slurm_mode: bool) -> str:
    rows = [[p.cfg.run_id, run_name(p.cfg), p.cfg.model.name,
             "all" if p.cfg.data.subset is None else p.cfg.data.subset,
             describe_resources(p.cfg.resources if slurm_mode else None), p.state,
             p.action + (f" ({p.why})" if p.why and p.action == "skip" else "")] for p in planned]
    return render(["id", "name", "model", "data", "resources", "state", "action"], rows)


def missing_eval_data(runs) -> list[str]:
    """One line per evaluation dataset the runs need and that is absent, naming its variable."""
    from roma.eval.plan import evaluation_data

    lines: dict[str, str] = {}
    for cfg in runs:
        for d in evaluation_data(cfg):
            if not d.present:
                how = f"set {d.env}" if d.env else "set its root"
                lines.setdefault(d.root, f"{d.name}: {d.dataset} data not found at {d.root or '(no root)'} ({how})")
    return list(lines.values())


def _submit_evaluations(jobs, spec_name: str, folder: Path, profile, only=None, force: bool = False) -> int:
    try:
        ev = slurm.submit_evaluations(jobs, spec_name, folder, (profile or {}).get("additional"), only, force)
    except Exception as e:  # submitit.core.utils.FailedJobError: sbatch's own message
        print(f"launch.py: submitting the evaluations failed ({type(e).__name__}): {str(e).strip()[-2000:]}",
              file=sys.stderr)
        return 1
    for cfg, name, job_id in ev:
        print(f"submitted {name} of {run_name(cfg)} ({cfg.run_id}) as SLURM job {job_id}")
    return 0


def _devices(cfg, executor: str, profile: dict | None):
    from roma.launch.dryrun import Devices, local_devices, profile_devices

    if executor == "slurm":
        if profile is None:
            return Devices(None, cfg.resources.nodes * max(cfg.resources.gpus_per_node, 1), "default resources")
        return profile_devices(cfg, profile)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun ... launch.py --executor debug
    return dataclasses.replace(local_devices(), count=world) if world > 1 else local_devices()


def _check_layouts(runs, executor: str, profile: dict | None) -> None:
    """Every run's global batch splits evenly over the ranks it will get, or nothing is submitted."""
    from roma.train.batching import BatchLayoutError, layout

    problems = []
    for cfg in runs:
        world = _devices(cfg, executor, profile).count if executor == "slurm" else int(os.environ.get("WORLD_SIZE", "1"))
        try:
            layout(cfg.train.global_batch, world, cfg.train.max_device_batch)
        except BatchLayoutError as e:
            problems.append(f"run {cfg.run_id} ({run_name(cfg)}): {e}")
    if problems:
        raise ConfigError(problems)


def _print_plan_notes(planned: list[Planned]) -> None:
    for p in planned:
        if p.note:
            print(f"note: {run_name(p.cfg)}: {p.note}")


def _dry_run(spec: Spec, runs, planned: list[Planned], executor: str, profile: dict | None, args,
             data_note: str | None, data_pending: bool) -> int:
    from roma.launch.dryrun import HEADERS, estimate_json, notes, plan_run, table_row

    devices = _devices(runs[0], executor, profile)
    plans = [plan_run(cfg, _devices(cfg, executor, profile), spec.data_counts) for cfg in runs]
    if args.json:
        out = {"spec": spec.name, "executor": executor, "profile": profile["name"] if profile else None,
               "runs": [dict(p.to_json(), state=pl.state, action=pl.action) for p, pl in zip(plans, planned)],
               "warnings": spec.warnings, "data_note": data_note,
               "notes": spec.notes + [f"{run_name(pl.cfg)}: {pl.note}" for pl in planned if pl.note]}
        total = [p.estimate for p in plans if estimate_json(p.estimate)["gpu_hours"] is not None]
        out["total_gpu_hours"] = round(sum(e.gpu_hours for e in total), 2) if total else None
        print(json.dumps(out, indent=1))
        return 0
    where = f"{executor}" + (f", profile {profile['name']}" if profile else "")
    print(f"spec {spec.name}: {len(spec.runs)} runs, {len(runs)} selected ({where}); dry run, nothing launched")
    rows = [table_row(p) + [describe_resources(p.cfg.resources if executor == "slurm" else None), pl.state,
                            pl.action + (f" ({pl.why})" if pl.why and pl.action == "skip" else "")]
            for p, pl in zip(plans, planned)]
    print(render(HEADERS + ["resources", "state", "action"], rows))
    _print_plan_notes(planned)
    for line in notes(plans, devices):
        print(line)
    for w in spec.warnings:
        print(f"warning: {w} (a real launch refuses this)")
    for n in spec.notes:
        print(f"note: {n}")
    if data_note:
        print(data_note)
    # the data check of a real launch, shown (not enforced) when the data is there to check
    if not (args.skip_data_check or data_pending or spec.warnings):
        from roma.launch.datacheck import check_runs

        check_runs(runs)
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    spec, data_note, data_pending = _load(args, fetch=not args.dry_run)
    executor, profile = _choose_executor(args, spec)
    runs = select(spec.runs, args.only)
    if not runs:
        print(f"no run of {spec.name} matches --only {args.only!r}", file=sys.stderr)
        return 2
    if executor == "slurm":
        runs = [dataclasses.replace(r, resources=slurm.resolve_resources(r, profile, spec.resources_set)) for r in runs]
    planned = plan(runs, force=args.force, retry_failed=args.retry_failed)
    if args.dry_run:
        return _dry_run(spec, runs, planned, executor, profile, args, data_note, data_pending)
    _check_layouts(runs, executor, profile)
    todo = [p for p in planned if p.launches]
    where = f"{executor}" + (f", profile {profile['name']}" if profile else "")
    print(f"spec {spec.name}: {len(spec.runs)} runs, {len(runs)} selected, {len(todo)} to launch ({where})")
    print(_plan_table(planned, executor == "slurm"))
    for n in spec.notes:  # roma.validation.advisories: runs, but probably not what was meant
        print(f"note: {n}")
    _print_plan_notes(planned)
    if data_note:
        print(data_note)
    missing = [] if data_pending else missing_eval_data(p.cfg for p in todo)  # a fallback fetches its data later
    if missing:  # (the dry run shows these as warnings: roma.validation.check_config names the variable)
        print("launch.py: evaluation data missing, nothing was launched:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    if todo and not args.skip_data_check and not data_pending:
        from roma.launch.datacheck import check_runs, failed

        bad = failed(check_runs([p.cfg for p in todo]))
        if bad:
            print(f"launch.py: the data check failed for {len(bad)} dataset(s) (above): nothing was launched. "
                  "Fix the data, or pass --skip-data-check", file=sys.stderr)
            return 2
    if not todo:
        return 0
    for p in todo:
        if p.action == "rerun":
            clear_for_rerun(p.cfg)
    cfgs = [p.cfg for p in todo]
    if executor == "slurm":
        out_dir = Path(cfgs[0].output_root) / cfgs[0].experiment  # --set experiment=... renames it
        folder = Path(args.submitit_folder) if args.submitit_folder else out_dir / "submitit"
        parallelism = spec.parallelism or (profile or {}).get("parallelism", 0)
        # each evaluation is its own job, started once the run's pretraining job has succeeded
        separate = any(c.eval.probes or c.eval.dense for c in cfgs)
        try:
            jobs = slurm.submit(cfgs, spec.name, folder, parallelism, (profile or {}).get("additional"), args.execute,
                                evaluate=not separate)
        except Exception as e:  # submitit.core.utils.FailedJobError: sbatch's own message
            print(f"launch.py: submission failed ({type(e).__name__}): {str(e).strip()[-2000:]}", file=sys.stderr)
            return 1
        for cfg, job_id in jobs:
            print(f"submitted {run_name(cfg)} ({cfg.run_id}) as SLURM job {job_id}")
        rc = _submit_evaluations(jobs, spec.name, folder, profile) if separate else 0
        print(f"follow with: python experiments/launch.py status {args.spec} --watch 10")
        return rc
    from roma.launch.executors import EXECUTORS

    try:
        states = EXECUTORS[executor](cfgs, args.execute)
    except KeyboardInterrupt:
        print("interrupted: the current run is marked cancelled; relaunch to resume it", file=sys.stderr)
        return 130
    failed = [rid for rid, s in states.items() if s not in ("finished", "active", "interrupted")]
    active = [rid for rid, s in states.items() if s == "active"]
    stopped = [rid for rid, s in states.items() if s == "interrupted"]  # killed by a signal: a relaunch resumes
    out = Path(cfgs[0].output_root) / cfgs[0].experiment
    print(f"done: {len(states) - len(failed) - len(active) - len(stopped)} finished, {len(failed)} failed"
          + (f", {len(stopped)} interrupted (relaunch to resume)" if stopped else "")
          + (f", {len(active)} skipped (another launch computes them)" if active else "")
          + f". Results in {out}/<run id>/; "
          f"MLflow UI: python experiments/launch.py ui {args.spec}")
    _print_compare_urls(runs, args.spec)
    return 1 if failed or stopped else 0


def _print_compare_urls(runs, spec_arg: str) -> None:
    """Where to compare the spec's runs once `launch.py ui` serves them (its default port)."""
    from roma.launch.ui import DEFAULT_PORT, print_compare_urls
    from roma.tracking import store_of

    try:
        uri, experiment = store_of(runs)
        if uri.startswith(("http://", "https://")):
            return
        buf = io.StringIO()
        if print_compare_urls(f"http://127.0.0.1:{DEFAULT_PORT}", uri, experiment, [c.run_id for c in runs], buf):
            print(f"then, with `python experiments/launch.py ui {spec_arg}` running:")
            print("  " + buf.getvalue().rstrip("\n").replace("\n", "\n  "))
    except Exception as e:  # noqa: BLE001 - a URL hint must never fail a finished launch
        print(f"(no compare URLs: {type(e).__name__}: {e})", file=sys.stderr)


def eval_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("target", help="a spec (name or YAML path) or a run folder (<output_root>/<experiment>/<run id>)")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys of the spec (as when it was launched)")
    p.add_argument("--data-root", help="pretraining data root, as when the spec was launched")
    p.add_argument("--only", metavar="PATTERN", help="only runs whose name or id matches (fnmatch)")
    p.add_argument("--eval", dest="evals", nargs="+", action="extend", default=[], metavar="PATTERN",
                   help="only evaluations whose name matches (fnmatch, e.g. 'probe_aid_*' dense_oscd_v3)")
    p.add_argument("--force", action="store_true", help="rerun the chosen evaluations from scratch")
    p.add_argument("--executor", choices=("local", "slurm", "debug"), default="local",
                   help="local/debug: here, one evaluation after another; slurm: one job per evaluation")
    p.add_argument("--profile", help="cluster profile for --executor slurm (default: the spec's `cluster:`)")
    p.add_argument("--submitit-folder", help="submitit logs and pickles (default <output_root>/<experiment>/submitit)")
    return p


def _eval_parser() -> argparse.ArgumentParser:
    """`launch.py eval`'s own parser (the subcommand's, standalone: tests/test_docs_commands.py parses with it)."""
    return eval_args(argparse.ArgumentParser(prog="launch.py eval", description=EVAL_DESCRIPTION))


def _eval_runs(args) -> tuple[list, str, str | None]:
    """(runs, name, cluster) of `launch.py eval`'s target: a run folder's config.yaml, or a spec's runs."""
    target = Path(args.target)
    if target.is_dir() and (target / "config.yaml").is_file():
        import yaml

        from roma.validation import load_config

        try:
            cfg = load_config((target / "config.yaml").read_text())
        except (yaml.YAMLError, ConfigError, UnicodeDecodeError) as e:  # an alias bomb included (roma.yamlio)
            raise SystemExit(f"launch.py eval: {target / 'config.yaml'}: cannot read it: {e}") from None
        if cfg.run_dir.resolve() != target.resolve():  # a moved study: its folder, not the recorded output_root
            cfg = dataclasses.replace(cfg, output_root=str(target.resolve().parent.parent))
        return [cfg], cfg.experiment, None
    args.spec = args.target  # the same runs as the launch gave (a fallback dataset included)
    spec = _load(args, fetch=False, check_data=False).spec
    return select(spec.runs, args.only), spec.name, spec.cluster


def cmd_eval(args: argparse.Namespace) -> int:
    from roma.launch.job import eval_one
    from roma.run import EvaluationError, evaluation_done, results_path, select_evaluations

    runs, name, cluster = _eval_runs(args)
    ready = [c for c in runs if (c.run_dir / "encoder.pt").exists()]
    for c in runs:
        if c not in ready:
            print(f"{run_name(c)} ({c.run_id}): pretraining not finished (no encoder.pt): skipped")
    try:
        picked = {c.run_id: select_evaluations(c, args.evals) for c in ready}
    except ValueError as e:
        print(f"launch.py eval: {e}", file=sys.stderr)
        return 2
    # a done evaluation is not run again (unless --force): it needs no data and is only pointed to
    todo = {c.run_id: [n for n in picked[c.run_id] if args.force or not evaluation_done(c, n)] for c in ready}
    missing = missing_eval_data(dataclasses.replace(c, eval=_only(c, todo[c.run_id])) for c in ready)
    if missing:
        print("launch.py eval: evaluation data missing, nothing was run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    if not ready:
        return 1 if runs else 2
    if args.executor == "slurm":
        if not slurm.available():
            raise SystemExit("launch.py: --executor slurm needs SLURM's sbatch on PATH (not found)")
        profile = _profile(args.profile or cluster)
        if profile:
            ready = [dataclasses.replace(c, resources=slurm.resolve_resources(c, profile, {})) for c in ready]
        folder = Path(args.submitit_folder) if args.submitit_folder else ready[0].run_dir.parent / "submitit"
        return _submit_evaluations([(c, None) for c in ready], name, folder, profile, args.evals or None, args.force)
    failed = 0
    for c in ready:
        print(f"{run_name(c)} ({c.run_id}): {', '.join(picked[c.run_id]) or 'no evaluations'}", flush=True)
        for n in picked[c.run_id]:
            if n not in todo[c.run_id]:
                print(f"    {n}: skipped, already done (results in {results_path(c, n)}; --force reruns it)")
        if not todo[c.run_id]:
            continue
        try:
            res = eval_one(c, todo[c.run_id], args.force)
        except EvaluationError as e:
            failed += 1
            print(f"    -> failed: {e}", file=sys.stderr)
            if args.executor == "debug":
                raise
            continue
        metrics = {k: v for k, v in res.items() if isinstance(v, float)}
        print("    -> " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items()))
              + (f" (skipped, computed elsewhere: {res['skipped']})" if res["skipped"] else ""))
    return 1 if failed else 0


def _only(cfg, names: list[str]):
    """cfg.eval restricted to the named evaluations (for the data check of `eval --eval ...`)."""
    from roma.eval.plan import evaluations

    keep = {id(sub) for n, _, sub, _ in evaluations(cfg) if n in names}
    return dataclasses.replace(cfg.eval, probes=tuple(p for p in cfg.eval.probes if id(p) in keep),
                               dense=tuple(d for d in cfg.eval.dense if id(d) in keep))


def _profile(name: str | None):
    if not name:
        return None
    from roma.launch.profiles import load_profile

    try:
        return load_profile(name)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"launch.py: {e}") from None


def status_extra_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    spec_args(p)
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until every run has ended")
    return p


def cmd_status(args: argparse.Namespace) -> int:
    from roma.launch.overview import footer, status_rows, table

    args.dry_run = True  # evaluation data is not in the run ids: a missing root is a warning, as in a dry run
    spec = _load(args, fetch=False, check_data=False).spec
    runs = select(spec.runs, args.only)
    if not runs:
        print(f"no run of {spec.name} matches --only {args.only!r}", file=sys.stderr)
        return 2
    notes = [f"warning: {w} (status does not need it)" for w in spec.warnings]
    if any(not c.data.checksum for c in runs):
        notes.append("warning: the pretraining data is not found: run ids hold its checksum, so runs launched on it "
                     "show as new here (give the --data-root / --set / variables of the launch)")
    from roma.launch.plan import store_problems

    stores = store_problems(runs)  # the table still lists every run (from status.json); the exit code says it
    for problem in stores:
        print(f"error: {problem}", file=sys.stderr)
    while True:
        rows = status_rows(runs, spec.data_counts)
        if args.watch:
            print("\033[2J\033[H", end="")  # clear the terminal between refreshes
        print(f"spec {spec.name} ({len(runs)} runs)")
        print(table(rows))
        print(footer(rows))
        for line in notes:
            print(line, file=sys.stderr)
        if not args.watch or all(r.state in (*ENDED, "new") for r in rows):
            return 1 if stores else 0
        time.sleep(args.watch)


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_specs(runs_only=True):
        try:
            spec = load_spec(name, check_data=False, require_env=False)
            rows.append([name, len(spec.runs), spec.description])
        except ConfigError as e:
            rows.append([name, "?", f"invalid: {e.problems[0]}"])
    print(render(["spec", "runs", "description"], rows))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from roma.launch import ui

    return ui.run(args)


# ---------------------------------------------------------------- the parser
LAUNCH_DESCRIPTION = "Validate a spec and launch its runs (finished runs are skipped, interrupted ones resume)."
EVAL_DESCRIPTION = ("Run (or rerun) evaluations alone on finished pretraining runs; their metrics land in each "
                    "run's MLflow run. Done evaluations are skipped (their results are read back) unless --force.")
STATUS_DESCRIPTION = "State, step, loss and failure reason of each run of a spec."


def _ui_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from roma.launch import ui  # imports no mlflow or torch: cheap enough for every --help

    return ui.add_args(p)


# name -> (how it fills its parser, what it runs, one-line help, description)
SUBCOMMANDS = {
    "launch": (launch_args, cmd_launch, "launch a spec's runs (the default: `launch.py SPEC`)", LAUNCH_DESCRIPTION),
    "list": (lambda p: p, cmd_list, "the built-in specs with their run counts", "The built-in specs (experiments/specs) "
             "with their run counts and descriptions."),
    "status": (status_extra_args, cmd_status, "state and progress of a spec's runs", STATUS_DESCRIPTION),
    "eval": (eval_args, cmd_eval, "run missing evaluations of finished runs", EVAL_DESCRIPTION),
    "ui": (_ui_args, cmd_ui, "serve a spec's MLflow store and print its compare URLs",
           "Serve a spec's MLflow store (one worker, 127.0.0.1) and print the runs-table and compare URLs."),
}


def _prog() -> str:
    """The name usage lines show: `roma-launch` when run as the console script, else launch.py."""
    return "roma-launch" if Path(sys.argv[0]).name == "roma-launch" else "launch.py"


def build_parser() -> argparse.ArgumentParser:
    prog = _prog()
    p = argparse.ArgumentParser(
        prog=prog, description="Launch the runs of an experiment spec, follow them, evaluate and compare them.",
        epilog="A first argument that is not a command is a spec to launch: `launch.py quickstart` is "
               "`launch.py launch quickstart`. A spec named like a command: `launch.py launch NAME`. "
               "`launch.py COMMAND --help` shows a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fill, run, help_, description) in SUBCOMMANDS.items():
        sp = fill(sub.add_parser(name, help=help_, description=description, prog=f"{prog} {name}"))
        sp.set_defaults(run=run, parser=sp)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; a first word that is no subcommand (nor -h/--help) means `launch`."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["launch", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "launch" and args.json and not args.dry_run:
        args.parser.error("--json needs --dry-run")
    if args.command == "ui":
        from roma.launch import ui

        ui.check_args(args, args.parser)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        if args.command == "launch":
            print("nothing was launched.", file=sys.stderr)
        return 2
    except TrackingStoreError as e:  # `eval`: the run's store went down or bad since its launch
        print(f"launch.py: {e}", file=sys.stderr)
        return 2
