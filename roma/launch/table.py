"""Plain-text tables for --dry-run and `launch.py status`."""
from __future__ import annotations

from roma.config import ResourcesConfig


def render(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def describe_resources(res: ResourcesConfig | None) -> str:
    """ResourcesConfig -> '1x(1 GPU, 8 CPU, 64G) 24h00 gpu', or 'this machine' for local runs."""
    if res is None:
        return "this machine"
    hours, mins = divmod(res.time_min, 60)
    gpus = f"{res.gpus_per_node} GPU, " if res.gpus_per_node else ""
    part = f" {res.partition}" if res.partition else ""
    return f"{res.nodes}x({gpus}{res.cpus_per_task} CPU, {res.mem_gb}G) {hours}h{mins:02d}{part}"


def fmt_loss(v: object) -> str | None:
    return f"{v:.4f}" if isinstance(v, (int, float)) else None
