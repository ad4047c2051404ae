"""A spec's stand-in dataset: when its data root is absent, fetch a small public dataset instead.

A spec with `fallback_data: ucm` (the quickstart) whose data.root does not exist, and that is not
given `--data-root` or `--set data.root=...`, runs on UC Merced Land Use instead: downloaded once
into the cache (roma.data.download; or $ROMA_UCM, an existing copy), split into two disjoint
stratified halves (roma.eval.splits.write_halves, as the micro study splits AID), pretrained on
the whole pool half (data.subset: all) and probed on the other half (each probe that read the
pretraining root reads the probe half, as dataset `ucm`). On machines that have the data root,
nothing changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from roma.config import to_plain
from roma.spec import Spec, load_spec
from roma.validation import ConfigError, root_exists

FALLBACKS = ("ucm",)


class Loaded(NamedTuple):
    spec: Spec
    note: str | None = None  # which data the spec runs on, when it is the fallback
    pending: bool = False  # the fallback data is not there yet (fetch=False): nothing to check


def halves_dir() -> Path:
    from roma.cache import cache_root
    from roma.data.download import UCM

    return cache_root() / UCM.name / "halves"


def load_with_fallback(name: str, overrides: dict[str, Any], data_root: str | None, fetch: bool = True,
                       check_data: bool = True, dry_run: bool = False) -> Loaded:
    """The spec as load_spec gives it, or on its fallback dataset (with a note saying so).

    fetch=False (dry run, status) computes the fallback's paths without downloading anything.
    """
    spec = load_spec(name, overrides, data_root=data_root, check_data=False, require_env=False)
    missing = sorted({r.data.root for r in spec.runs if not root_exists(r.data.root)})
    if not spec.fallback_data or data_root is not None or "data.root" in overrides or not missing:
        return Loaded(load_spec(name, overrides, data_root=data_root, check_data=check_data, dry_run=dry_run))
    if spec.fallback_data not in FALLBACKS:
        raise ConfigError([f"{spec.path}: fallback_data: {spec.fallback_data!r} is not one of {', '.join(FALLBACKS)}"])
    from roma.data.download import UCM, DownloadError, dataset_root

    out = halves_dir()
    pool, probe = out / "ucm_pool", out / "ucm_probe"
    size = f"{UCM.size / 2**20:.0f} MiB" if UCM.size else "an archive"
    note = (f"data root {', '.join(missing)} not found: {spec.name} runs on UC Merced Land Use instead "
            f"(2,100 images in 21 classes; $ROMA_UCM if set, else downloaded once, {size}, into {out.parent}): pretraining on half of "
            f"every class ({pool}), probing on the other half ({probe})")
    if fetch:
        from roma.eval.splits import write_halves

        from roma import atomic

        print(note, flush=True)
        try:
            atomic.check_writable(out, "the UC Merced halves folder (under $ROMA_CACHE or ~/.cache/roma)")
            info = write_halves(dataset_root(UCM), out, "ucm")
        except (DownloadError, atomic.NotWritable) as e:
            raise SystemExit(f"launch.py: {spec.name} needs UC Merced Land Use: {e}") from None
        note = f"UC Merced halves: {info['pool']:,} pretraining images, {info['probe']:,} probe images ({out})"
    pending = not fetch and not pool.is_dir()
    if pending:
        note += "; nothing is fetched before a real launch"
    runs_root = spec.runs[0].data.root
    probes = [{**to_plain(p), "dataset": "ucm", "root": str(probe)} if p.root == runs_root else to_plain(p)
              for p in spec.runs[0].eval.probes]
    extra = {"data.subset": None, "eval.probes": probes}
    heldout = spec.runs[0].data.heldout_size
    if heldout:  # the whole pool half trains: the held-out images (val_loss) come from the probe half
        extra["data.heldout_root"] = str(probe)
        if probe.is_dir():  # a probe half smaller than the spec's held-out set gives all its images
            from roma.validation import count_images

            extra["data.heldout_size"] = min(heldout, count_images(str(probe)))
            note += f"; held-out loss on {extra['data.heldout_size']:,} probe-half images"
    spec = load_spec(name, {**overrides, **extra}, data_root=str(pool), check_data=check_data and not pending,
                     dry_run=dry_run and not pending)
    return Loaded(spec, note, pending)
