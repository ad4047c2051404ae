"""The launcher's data check: every dataset the selected runs name, checked before anything starts.

Pretraining roots (folder, manifest, shards), probe datasets (aid / ucm by their release, any other
as class folders) and dense datasets (levir, oscd, spacenet, segfolder) go through roma.data.check
with the headers of at most LAUNCH_SAMPLE files per dataset (counts always cover everything), so
the check takes seconds even for millions of images. A FAIL stops a real launch; PARTIAL (a copy
smaller than the release: a subset, a half, a sample) is shown and does not.
"""
from __future__ import annotations

from typing import Iterable

from roma.config import RunConfig
from roma.data.check import Report, check_many

LAUNCH_SAMPLE = 20_000
CLASS_KINDS = ("aid", "ucm")


def datasets_of(runs: Iterable[RunConfig]) -> list[tuple[str, str, str | None]]:
    """(kind, root, labels_root) of every dataset the runs read, in first-seen order, once each."""
    items: list[tuple[str, str, str | None]] = []
    for cfg in runs:
        items.append(("pretrain", cfg.data.root, None))
        for p in cfg.eval.probes:
            items.append((p.dataset if p.dataset in CLASS_KINDS else "classes", p.root, None))
        for d in cfg.eval.dense:
            items.append((d.task, d.root, (d.labels_root or None) if d.task == "oscd" else None))
    return list(dict.fromkeys(items))


def check_runs(runs: list[RunConfig], sample: int = LAUNCH_SAMPLE) -> list[Report]:
    """Check the runs' datasets, printing one verdict line (and its findings) per dataset."""
    items = datasets_of(runs)
    print(f"data check: {len(items)} dataset(s) (layout, counts, file headers; --skip-data-check skips it)", flush=True)
    return check_many(items, sample, on_report=lambda r: print("  " + r.render().replace("\n", "\n  "), flush=True))


def failed(reports: list[Report]) -> list[Report]:
    return [r for r in reports if r.verdict == "FAIL"]
