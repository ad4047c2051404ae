"""GPU-hours and wall time of a pretraining run, from the throughput table experiments/throughput.csv.

    est = estimate("roma_base", 192, "h200", gpu_count=4, images_seen=400 * 62_500)
    est.gpu_hours, est.wall_hours, est.row.source      # or a NoEntry: est.message, est.closest

The table holds images/s per device for (model, img_size, gpu_type), each row with its basis:
`measured` (on a lent GPU or on this machine's CPU; `source` says where the number is recorded)
or `scaled` (an assumption: `factor` x the row `scaled_from`, the factor being a FLOPs ratio from
roma.models.registry.pretrain_flops or a stated GPU-to-GPU ratio, explained in `source`).

Assumed, not measured: data-parallel scaling is linear in gpu_count x `scaling_efficiency`
(default 1.0: an optimistic bound; no multi-GPU run was available to measure it). The time of
evaluations, start-up and checkpointing is not included.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from roma import atomic

TABLE = Path(__file__).resolve().parents[2] / "experiments" / "throughput.csv"
COLUMNS = ("model", "img_size", "gpu_type", "images_per_s", "gflops", "basis", "scaled_from", "factor", "source")
BASES = ("measured", "scaled")


@dataclass(frozen=True)
class Row:
    model: str
    img_size: int
    gpu_type: str
    images_per_s: float  # per device
    gflops: float | None  # pretraining forward GFLOPs per image (registry.pretrain_flops); None if not counted
    basis: str  # measured | scaled
    scaled_from: str  # "model@img_size/gpu_type" of the row it is scaled from ("" when measured)
    factor: float | None  # images_per_s = factor x scaled_from's images_per_s
    source: str

    @property
    def name(self) -> str:
        return row_name(self.model, self.img_size, self.gpu_type)


@dataclass(frozen=True)
class Estimate:
    model: str
    img_size: int
    gpu_type: str
    gpu_count: int
    images_seen: int
    images_per_s: float  # all devices together
    wall_hours: float
    gpu_hours: float  # device-hours (CPU tasks on a "cpu" row)
    row: Row
    assumptions: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return (f"{self.gpu_hours:,.1f} {self.gpu_type.upper()}-hours, {self.wall_hours:,.1f} h on {self.gpu_count}; "
                f"{self.row.images_per_s:g} img/s per device ({self.row.basis}: {self.row.name})")


@dataclass(frozen=True)
class NoEntry:
    model: str
    img_size: int
    gpu_type: str
    closest: tuple[Row, ...]

    @property
    def message(self) -> str:
        near = "; ".join(f"{r.name} {r.images_per_s:g} img/s ({r.basis})" for r in self.closest)
        return (f"no throughput entry for {self.model} at {self.img_size} px on {self.gpu_type} in {TABLE.name}"
                f"{'; closest: ' + near if near else ''}")

    def describe(self) -> str:
        return self.message


def row_name(model: str, img_size, gpu_type: str) -> str:
    """How a row is named in the table's scaled_from column and in messages: roma_base@192/h200."""
    return f"{model}@{img_size}/{gpu_type}"


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _number(text: str, what: str, where: str, optional: bool = False) -> float | None:
    if optional and text.strip() == "":
        return None
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{where}: {what} must be a positive number, got {text!r}")
    return x


def load_table(path: str | Path = TABLE) -> list[Row]:
    """The rows of a throughput table; every row checked (numbers, basis, a source, a scaled row's base)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        lines = [ln for ln in f if not _is_comment(ln)]
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{path}: columns must be {', '.join(COLUMNS)}; got {', '.join(reader.fieldnames or [])}")
    rows: list[Row] = []
    for i, raw in enumerate(reader, start=2):
        where = f"{path}, row {i} ({raw['model']} {raw['img_size']} {raw['gpu_type']})"
        if raw["basis"] not in BASES:
            raise ValueError(f"{where}: basis {raw['basis']!r} is not one of {', '.join(BASES)}")
        if not raw["source"].strip():
            raise ValueError(f"{where}: every number needs its source")
        scaled = raw["basis"] == "scaled"
        if scaled != bool(raw["scaled_from"].strip()) or scaled != bool(raw["factor"].strip()):
            raise ValueError(f"{where}: a scaled row names scaled_from and factor, a measured row neither")
        size = _number(raw["img_size"], "img_size", where)
        rows.append(Row(raw["model"].strip(), int(size), raw["gpu_type"].strip().lower(),
                        _number(raw["images_per_s"], "images_per_s", where),
                        _number(raw["gflops"], "gflops", where, optional=True), raw["basis"],
                        raw["scaled_from"].strip(), _number(raw["factor"], "factor", where, optional=True),
                        raw["source"].strip()))
    names = [r.name for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: {', '.join(dup)} listed more than once")
    unknown = [(r.name, r.scaled_from) for r in rows if r.scaled_from and r.scaled_from not in names]
    if unknown:
        raise ValueError(f"{path}: {unknown[0][0]} is scaled from {unknown[0][1]}, which is not in the table")
    return rows


def merge_into_table(table: Path, new: list[dict]) -> None:
    """Measured rows replace the rows of the same (model, img_size, gpu_type); scaled rows are
    recomputed from their base (images_per_s = factor x scaled_from's). Comment lines are kept."""
    lines = table.read_text().splitlines(True)
    comments = [ln for ln in lines if _is_comment(ln)]
    rows = list(csv.DictReader(ln for ln in lines if not _is_comment(ln)))
    key = lambda r: (r["model"], str(r["img_size"]), r["gpu_type"])
    by_key = {key(r): i for i, r in enumerate(rows)}
    for r in new:
        r = {c: str(r[c]) for c in COLUMNS}
        if key(r) in by_key:
            rows[by_key[key(r)]] = r
        else:
            by_key[key(r)] = len(rows)
            rows.append(r)
    for _ in rows:  # scaled rows may chain (h100 <- h200 tiny <- h200 base): settle in as many passes
        rate = {row_name(*key(r)): float(r["images_per_s"]) for r in rows}
        for r in rows:
            if r["basis"] == "scaled" and r["scaled_from"] in rate:
                r["images_per_s"] = f"{float(r['factor']) * rate[r['scaled_from']]:.1f}"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(table, "".join(comments) + buf.getvalue())


def gpu_types(table: list[Row] | None = None) -> list[str]:
    return sorted({r.gpu_type for r in (table or load_table())})


def _closest(table: list[Row], model: str, img_size: int, gpu_type: str, n: int = 3) -> tuple[Row, ...]:
    def distance(r: Row) -> tuple:
        return (r.model != model, r.gpu_type != gpu_type, abs(math.log(r.img_size / img_size)), r.name)

    return tuple(sorted(table, key=distance)[:n])


def estimate(model: str, img_size: int, gpu_type: str, gpu_count: int, images_seen: int,
             table: list[Row] | None = None, scaling_efficiency: float = 1.0) -> Estimate | NoEntry:
    """Wall time and device-hours to show `images_seen` training images to `model` at `img_size` on
    `gpu_count` devices of `gpu_type`; a NoEntry (with the closest rows) when the table lacks it."""
    if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count < 1:
        raise ValueError(f"gpu_count must be a positive integer, got {gpu_count!r}")
    if images_seen < 0:
        raise ValueError(f"images_seen must be >= 0, got {images_seen}")
    if not 0 < scaling_efficiency <= 1:
        raise ValueError(f"scaling_efficiency must be in (0, 1], got {scaling_efficiency}")
    table = load_table() if table is None else table
    gpu_type = gpu_type.strip().lower()
    row = next((r for r in table if (r.model, r.img_size, r.gpu_type) == (model, img_size, gpu_type)), None)
    if row is None:
        return NoEntry(model, img_size, gpu_type, _closest(table, model, img_size, gpu_type))
    rate = row.images_per_s * gpu_count * (scaling_efficiency if gpu_count > 1 else 1.0)
    wall_h = images_seen / rate / 3600
    assumptions = [f"{row.name}: {row.source}"] if row.basis == "scaled" else []
    if gpu_count > 1:
        assumptions.append(f"data-parallel scaling over {gpu_count} devices at efficiency {scaling_efficiency:g} "
                           f"(not measured)")
    return Estimate(model, img_size, gpu_type, gpu_count, int(images_seen), rate, wall_h, wall_h * gpu_count, row,
                    tuple(assumptions))
