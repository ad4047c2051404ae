"""The micro scaling study on real AID images, end to end on a CPU, with progress, an ETA and resume.

    experiments/micro_study.sh [--aid ../shared/data/AID] [--exp micro_study] [--lanes 2]
                               [--seeds 0 1 2] [--full] [--set key=value ...] [--plan] [--retry-failed]

1. Split AID (experiments/micro_split.py): a pretraining pool and a disjoint probe set.
2. Plan the union of SPECS (the data axis, the model axis, the ARES / MSP ablation, the joint L(N, D)
   grid, the fixed-steps control of the data axis) in ONE experiment (`--exp`): a run that belongs
   to two specs (micro-tiny at 2.5K with ARES+MSP is a data point, the ablation's +ARES+MSP row and a
   joint-grid point) is computed once. The joint grid's interior and the fixed-steps control run 2
   seeds (the cut to 4 h, see SPECS; `--full`: 3).
   Plus the random-init floor of each model size (the same probe on an untrained encoder).
3. Run everything in `--lanes` lanes, one torch thread each (2 cores: oversubscribed threads are
   several times slower), seed-major so that a study cut short has every point at least once.
   Each run goes through the launcher (`launch.py SPEC --only NAME`), so a finished run is never
   redone and an interrupted one resumes from its checkpoint: just run the command again.
   Progress lines give runs done, elapsed time and an ETA (the cost of each run is its images
   to process at a per-model speed, calibrated on the runs finished so far).
4. analysis/fit_scaling.py (the MLflow store -> runs.csv, fitted laws with bootstrap CIs, figures)
   into outputs/analysis/<exp>, the same with `--x train_flops` (every curve against its compute)
   into outputs/analysis/<exp>_compute, then experiments/micro_report.py (`--compute`: those laws join
   its fits table), which regenerates the results section of docs/micro_study.md (tables, figures
   under docs/results/) between its markers; last, the run table, both fits files, the scaling,
   ablation and frontier figures and the timings are copied to docs/results/<exp>_* (not with
   --no-readme), so every committed artefact comes from the one store.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from roma import atomic  # noqa: E402
from roma.spec import load_spec, parse_set, run_name  # noqa: E402

SPLIT_DIR = REPO / "outputs" / "micro_data"  # the micro specs' data.root and probe root live here
# Every spec of the study (each config once: the joint grid holds the data and model axes) and the
# seeds it runs. The cut that keeps the study inside 4 h of 2 cores (docs/micro_study.md, Time): the
# joint grid's interior (small / base below 5,000 images) and the fixed-steps control run seeds 0
# and 1; the data axis, the model axis and the ablation keep 3 seeds. `--full` runs every spec at
# every seed of --seeds (4 h 20 min estimated; a later session adds the missing seeds by resuming).
SPECS = {"scaling_data_micro": (0, 1, 2), "scaling_model_micro": (0, 1, 2), "ablation_ares_msp_micro": (0, 1, 2),
         "scaling_joint_micro": (0, 1), "scaling_data_micro_fixed_steps": (0, 1)}
# The cost of a run in CPU-seconds of one torch thread: a per-model overhead (start-up, data indexing,
# held-out loss, the linear probe) plus its training images at a per-model speed. Calibrated on the
# 2026-12-06 study's per-run CPU times (docs/results/micro_study_timings.json: 82 / 54 / 30 images per
# CPU-second at 4x4-patch clusters), times the cost of the 2x2-patch-cluster geometry measured on
# 2026-12-07 (tiny 1.25K: 186.6 CPU-s, x1.10 on training; base 625: 277.6 CPU-s, x1.29; small
# interpolated, x1.2). LANE_EFFICIENCY: CPU-seconds per wall-second of a lane in that study (195
# CPU-min in 118 wall-min on 2 lanes). The prior of the ETA, rescaled by the runs finished.
PRIOR_IMAGES_PER_CPU_S = {"roma_micro_tiny": 75.0, "roma_micro_small": 44.8, "roma_micro_base": 23.5}
PRIOR_OVERHEAD_CPU_S = {"roma_micro_tiny": 53.0, "roma_micro_small": 61.0, "roma_micro_base": 70.0}
LANE_EFFICIENCY = 0.82
FLOOR_S = 40.0


@dataclasses.dataclass
class Job:
    name: str  # what the progress lines call it
    kind: str  # run | floor
    cmd: list[str]
    folder: Path
    model: str
    images: int  # training images to process (0 for a floor)
    seed: int = 0
    seconds: float | None = None  # measured, once finished
    cpu_seconds: float | None = None

    def estimate(self) -> float:
        if self.kind == "floor":
            return FLOOR_S
        cpu = PRIOR_OVERHEAD_CPU_S.get(self.model, 70.0) + self.images / PRIOR_IMAGES_PER_CPU_S.get(self.model, 10.0)
        return cpu / LANE_EFFICIENCY

    def done(self) -> bool:
        if self.kind == "floor":
            return (self.folder / "probe_aid.json").is_file()
        from roma.launch.status import read_status  # an unreadable status.json reads as failed, never raises

        return (read_status(self.folder) or {}).get("state") == "finished"


def images_of(cfg) -> int:
    """Training images one run processes (epochs x subset, or max_steps x global batch when smaller)."""
    from roma.train.batching import schedule

    return schedule(cfg.train, cfg.data.subset or 0).images_seen if cfg.data.subset else \
        (cfg.train.max_steps or 0) * cfg.train.global_batch


def plan(args, check_data: bool = True) -> tuple[list[Job], dict]:
    """The study's jobs (unique runs, then floors) and the facts the report needs."""
    sets = [f"experiment={args.exp}", f"output_root={args.out}", *args.set]
    overrides = parse_set(sets)
    runs: dict[str, Job] = {}
    probe = None
    models: dict[str, int] = {}  # model -> pretraining img_size (the floor's encoder geometry)
    for spec_name, spec_seeds in SPECS.items():
        spec = load_spec(spec_name, overrides, data_root=None, check_data=check_data)
        for cfg in spec.runs:
            if cfg.train.seed not in args.seeds or not (args.full or cfg.train.seed in spec_seeds):
                continue
            folder = Path(cfg.run_dir)
            if str(folder) in runs:
                continue  # the same config in two specs: one run
            name = run_name(cfg)
            cmd = [sys.executable, str(REPO / "experiments" / "launch.py"), spec_name, "--executor", "local",
                   "--only", name, "--set", *sets]
            if args.retry_failed:
                cmd.append("--retry-failed")
            runs[str(folder)] = Job(name, "run", cmd, folder, cfg.model.name, images_of(cfg), cfg.train.seed)
            probe = probe or cfg.eval.probes[0]
            models.setdefault(cfg.model.name, cfg.model.img_size)
    floors = []
    floor_root = Path(args.out) / args.exp / "floor"
    for m, img in models.items():
        cmd = [sys.executable, "-m", "roma.eval.classification", "--root", probe.root, "--model", m,
               "--model-img-size", str(img), "--max-per-class", str(probe.max_per_class),
               "--batch-size", str(probe.batch_size), "--seeds", "0", "1", "2",
               "--out", str(floor_root / m), "--device", "cpu"]
        floors.append(Job(f"floor {m}", "floor", cmd, floor_root / m, m, 0))
    # seed-major, the costliest first inside a seed (shorter tail when two lanes share the work)
    ordered = sorted(runs.values(), key=lambda j: (j.seed, -j.estimate()))
    return floors + ordered, {"floor_root": floor_root, "models": list(models)}


class Progress:
    """Runs done / total, elapsed, and an ETA calibrated on the jobs finished in this session."""

    def __init__(self, jobs: list[Job], lanes: int):
        self.jobs, self.lanes, self.t0 = jobs, lanes, time.time()
        self.lock = threading.Lock()
        self.running: dict[str, tuple[Job, float]] = {}

    def scale(self) -> float:
        timed = [j for j in self.jobs if j.seconds is not None and j.kind == "run"]
        if not timed:
            return 1.0
        return sum(j.seconds for j in timed) / sum(j.estimate() for j in timed)

    def line(self) -> str:
        with self.lock:
            now, k = time.time(), self.scale()
            left = [j for j in self.jobs if not j.done() and j.name not in self.running]
            work = sum(j.estimate() for j in left) * k
            work += sum(max(j.estimate() * k - (now - t), 0.0) for j, t in self.running.values())
            eta = work / self.lanes
            done = sum(j.done() for j in self.jobs)
            end = datetime.now(timezone.utc) + timedelta(seconds=eta)
            return (f"[micro_study] {done}/{len(self.jobs)} done, {len(self.running)} running, "
                    f"elapsed {_hm(now - self.t0)}, ETA {_hm(eta)} (~{end:%H:%M} UTC; speed x{1 / k:.2f} of the prior)")


def _hm(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_lanes(jobs: list[Job], lanes: int, log_dir: Path, progress: Progress) -> list[Job]:
    """Run the unfinished jobs in `lanes` threads; -> the jobs that failed."""
    todo: queue.Queue[Job] = queue.Queue()
    for j in jobs:
        if not j.done():
            todo.put(j)
    failed: list[Job] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log_dir.mkdir(parents=True, exist_ok=True)

    def lane():
        while True:
            try:
                j = todo.get_nowait()
            except queue.Empty:
                return
            t = time.time()
            with progress.lock:
                progress.running[j.name] = (j, t)
            log = log_dir / (j.name.replace(" ", "_") + ".log")
            with open(log, "a") as f:
                proc = subprocess.Popen(j.cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
                _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time (its workers included)
                proc.returncode = rc = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            with progress.lock:
                progress.running.pop(j.name, None)
                if rc == 0 and j.done():
                    j.seconds, j.cpu_seconds = time.time() - t, cpu
                else:
                    failed.append(j)
            state = "done" if j.seconds is not None else f"FAILED (exit {rc}; log {log})"
            print(f"[micro_study] {j.name}: {state} in {_hm(time.time() - t)} (CPU {_hm(cpu)})", flush=True)
            print(progress.line(), flush=True)

    threads = [threading.Thread(target=lane, daemon=True) for _ in range(lanes)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        for th in threads:
            th.join(timeout=300)
            if th.is_alive():
                print(progress.line(), flush=True)  # a heartbeat every 5 minutes while runs are long
                break
    return failed


def record_timings(path: Path, jobs: list[Job], wall: float) -> None:
    """Per-job wall and CPU seconds, merged over sessions (a resumed study keeps earlier timings)."""
    doc = json.loads(path.read_text()) if path.is_file() else {"sessions_wall_s": 0.0, "jobs": {}}
    for j in jobs:
        if j.seconds is not None:
            doc["jobs"][j.name] = {"wall_s": round(j.seconds, 1), "cpu_s": round(j.cpu_seconds or 0.0, 1),
                                   "model": j.model, "images": j.images}
    doc["sessions_wall_s"] += wall
    doc["wall_min"] = doc["sessions_wall_s"] / 60
    doc["cpu_min"] = sum(v["cpu_s"] for v in doc["jobs"].values()) / 60
    doc["jobs_count"] = len(doc["jobs"])
    doc["jobs"] = dict(sorted(doc["jobs"].items()))
    atomic.write_json(path, doc)


def analysis_dirs(args) -> tuple[Path, Path]:
    """fit_scaling.py's --out folders: the main analysis (data and model axes) and, beside it, the
    compute axis (every curve against train_flops; the report's compute rows of the fits table)."""
    root = Path(args.out) / "analysis"
    return root / args.exp, root / f"{args.exp}_compute"


def analysis_commands(args, facts: dict, timings: Path) -> list[tuple[str, list[str]]]:
    """(step, command) of the analysis after the runs, in order: the laws from the MLflow store
    (--form auto: chosen by evidence), the same against train_flops, then the report, which takes the
    compute laws into its fits table (--compute) and rewrites docs/micro_study.md (unless --no-readme)."""
    analysis, compute = analysis_dirs(args)
    uri = f"sqlite:///{Path(args.out).resolve() / args.exp / 'mlflow.db'}"
    fit = [sys.executable, str(REPO / "analysis" / "fit_scaling.py"), "--experiment", args.exp, "--tracking-uri", uri,
           "--allow-missing"]
    report = [sys.executable, str(REPO / "experiments" / "micro_report.py"), "--analysis", str(analysis),
              "--compute", str(compute), "--floor", str(facts["floor_root"]), "--name", args.exp,
              # figures beside docs/micro_study.md only when its section is rewritten (not for pilots)
              "--out", str(analysis if args.no_readme else REPO / "docs" / "results"),
              "--tracking-uri", uri, "--experiment", args.exp, "--timings", str(timings)]
    if not args.no_readme:
        report += ["--readme", str(args.readme)]
    return [("fit_scaling.py", fit + ["--out", str(analysis)]),
            ("fit_scaling.py --x train_flops", fit + ["--x", "train_flops", "--out", str(compute)]),
            ("micro_report.py", report)]


# What each analysis leaves that docs/micro_study.md links or quotes, and its name under docs/results
# (<exp>_<name>): the run table, both fits files, the fit_scaling figures (the report draws its own
# summary and loss-curve figures there) and the timings.
PUBLISHED = {"main": {"runs.csv": "runs.csv", "fits.json": "fits.json", "data_scaling.png": "data_scaling.png",
                      "model_scaling.png": "model_scaling.png", "ablation.png": "ablation.png",
                      "frontier.png": "frontier.png"},
             "compute": {"fits.json": "compute_fits.json"}}


def publish(analysis: Path, compute: Path, timings: Path, dest: Path, name: str) -> list[Path]:
    """Copy the analyses' artefacts (PUBLISHED) and timings.json to dest/<name>_<file>, each
    atomically; a figure the analysis did not draw (no ablation, no joint grid) is skipped, a missing
    fits file, run table or timings file is an error naming it. -> the paths written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src_dir, files in ((analysis, PUBLISHED["main"]), (compute, PUBLISHED["compute"]),
                           (timings.parent, {timings.name: "timings.json"})):
        for src, target in files.items():
            path = src_dir / src
            if not path.is_file():
                if src.endswith(".png"):
                    continue
                raise SystemExit(f"micro_study: {path} not found: the analysis did not write it")
            out = dest / f"{name}_{target}"
            atomic.write_bytes(out, path.read_bytes())
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--aid", type=Path, default=REPO.parent / "shared" / "data" / "AID")
    p.add_argument("--exp", default="micro_study", help="the MLflow experiment and output folder")
    p.add_argument("--out", default="outputs", help="output root (relative to the repository)")
    p.add_argument("--lanes", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--full", action="store_true",
                   help="every spec at every seed (no cut: the joint grid's interior and the fixed-steps control at 3 seeds too)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (e.g. train.epochs=3)")
    p.add_argument("--retry-failed", action="store_true", help="retry runs that failed (resuming them)")
    p.add_argument("--only", nargs="+", default=[], metavar="PATTERN",
                   help="only the jobs whose name matches (fnmatch; a pilot, e.g. 'roma_micro_tiny-1.25K-seed0')")
    p.add_argument("--plan", action="store_true", help="print the jobs and the time estimate, run nothing")
    p.add_argument("--readme", type=Path, default=REPO / "docs" / "micro_study.md", help="the file whose results section (between the markers) is rewritten")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite docs/micro_study.md (tables go to stdout)")
    args = p.parse_args(argv)
    os.chdir(REPO)

    sys.path.insert(0, str(REPO / "experiments"))
    import micro_split

    if not args.aid.is_dir():
        raise SystemExit(f"micro_study: AID root {args.aid} is not a folder (give --aid)")
    info = micro_split.build(args.aid, SPLIT_DIR)  # where the micro specs read pool and probe set
    print(f"[micro_study] AID split: pool {info['pool']} / probe set {info['probe']} images ({info['out']})", flush=True)
    jobs, facts = plan(args)
    if args.only:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(j.name, pat) for pat in args.only)]
    progress = Progress(jobs, args.lanes)
    runs = [j for j in jobs if j.kind == "run"]
    print(f"[micro_study] {len(runs)} runs + {len(jobs) - len(runs)} floors, "
          f"{sum(j.done() for j in jobs)} already done; {args.lanes} lanes", flush=True)
    if args.plan:
        for j in jobs:
            print(f"  {'done' if j.done() else 'todo'}  {j.name:<44} {j.images:>7} images  ~{_hm(j.estimate())}")
        print(progress.line())
        return 0
    print(progress.line(), flush=True)
    failed = run_lanes(jobs, args.lanes, Path(args.out) / args.exp / "logs", progress)
    wall = time.time() - progress.t0
    print(f"[micro_study] jobs finished in {_hm(wall)}; {len(failed)} failed", flush=True)
    timings = Path(args.out) / args.exp / "timings.json"
    record_timings(timings, jobs, wall)

    for step, cmd in analysis_commands(args, facts, timings):
        rc = subprocess.run(cmd, cwd=REPO).returncode
        if rc:
            print(f"[micro_study] {step} failed (exit {rc})", flush=True)
            return rc
    if not args.no_readme:  # the committed artefacts beside docs/micro_study.md, from this one store
        for path in publish(*analysis_dirs(args), timings, REPO / "docs" / "results", args.exp):
            print(f"[micro_study] published {path.relative_to(REPO)}", flush=True)
    print(f"[micro_study] total {_hm(time.time() - progress.t0)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
