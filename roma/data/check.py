"""Check a local dataset copy against the layout and counts of its release, in seconds.

    python -m roma.data.check aid /data/AID            # also: ucm, levir, oscd, spacenet, pretrain, classes
    python -m roma.data.check pretrain /data/shards --sample 20000
    report = check_dataset("aid", "/data/AID"); print(report.render()); report.verdict  # OK | PARTIAL | FAIL

What is checked: the layout the loaders expect (class folders; A/B/label pairs; OSCD city lists,
bands and labels; SpaceNet tiles with their footprints; a pretraining folder, manifest or shards),
counts against the release, and every file's header and end bytes (JPEG end marker, PNG IEND chunk,
TIFF strips inside the file, BMP/WebP declared sizes). No image is decoded, so a truncated image
is found without reading it whole; `sample` limits the header checks to an evenly spread subset
for very large sets (counts always cover everything).

Verdicts: FAIL (something a run would trip over or that is not the dataset: unreadable or
truncated files, missing or unknown classes, unpaired files, more images than the release),
PARTIAL (well formed, fewer images than the release: a subset, a sample, a half), OK.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from roma.config import EVAL_DATA_ENV
from roma.data.headers import file_problem, header_problem
from roma.data.refs import is_image

SHOW = 5  # example paths per finding

# The releases (counts as published: AID's paper / the copy's manifest, UCM 21 x 100, OSCD's
# train/test city lists, SpaceNet v1 Rio's 6,940 RGB tiles as torchgeo documents them, LEVIR-CD's
# 637 pairs of 1024 px or the 10,192 256-px crops that ChangeFormer distributes).
AID_CLASSES = {
    "Airport": 360, "BareLand": 310, "BaseballField": 220, "Beach": 400, "Bridge": 360, "Center": 260,
    "Church": 240, "Commercial": 350, "DenseResidential": 410, "Desert": 300, "Farmland": 370, "Forest": 250,
    "Industrial": 390, "Meadow": 280, "MediumResidential": 290, "Mountain": 340, "Park": 350, "Parking": 390,
    "Playground": 370, "Pond": 420, "Port": 380, "RailwayStation": 260, "Resort": 290, "River": 410,
    "School": 300, "SparseResidential": 300, "Square": 330, "Stadium": 290, "StorageTanks": 360, "Viaduct": 420,
}
UCM_CLASSES = {c: 100 for c in (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
    "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
    "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt")}
CLASS_SETS = {"aid": ("AID", AID_CLASSES), "ucm": ("UC Merced Land Use", UCM_CLASSES)}
LEVIR_RELEASES = {"1024 px release": {"train": 445, "val": 64, "test": 128},
                  "256 px crops": {"train": 7120, "val": 1024, "test": 2048}}
OSCD_CITIES = {"train": 14, "test": 10}
SPACENET_TILES = 6940
OSCD_BANDS = ("B04", "B03", "B02")


# ----------------------------------------------------------------------------- reports
@dataclass
class Report:
    kind: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # -> FAIL
    partial: list[str] = field(default_factory=list)  # fewer than the release -> PARTIAL
    notes: list[str] = field(default_factory=list)  # informational (unexpected extra files, sampling)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "FAIL" if self.errors else "PARTIAL" if self.partial else "OK"

    def summary(self) -> str:
        counts = ", ".join(f"{v:,} {k}" for k, v in self.counts.items())
        return f"{self.verdict:7s} {self.kind} {self.root}: {counts or 'nothing counted'} ({self.seconds:.1f} s)"

    def render(self) -> str:
        lines = [self.summary()]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  partial: {p}" for p in self.partial]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "root": self.root, "verdict": self.verdict, "counts": self.counts,
                "errors": self.errors, "partial": self.partial, "notes": self.notes, "seconds": self.seconds}


def _examples(items: list, n: int = SHOW) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# ----------------------------------------------------------------------------- file headers (roma.data.headers)
def check_headers(paths: list[Path], report: Report, sample: int | None, what: str = "image") -> None:
    """Header/end-byte check of every path (or of `sample` evenly spread ones); errors go to report."""
    chosen = paths
    if sample is not None and len(paths) > sample:
        step = len(paths) / sample
        chosen = [paths[int(i * step)] for i in range(sample)]
        report.notes.append(f"headers of {len(chosen):,} of {len(paths):,} {what} files checked (an evenly spread "
                            f"sample); run `python -m roma.data.check` without --sample to check all")
    with ThreadPoolExecutor(max_workers=8) as pool:  # file opens overlap on network file systems
        problems = [(p, msg) for p, msg in zip(chosen, pool.map(file_problem, chosen)) if msg]
    if problems:
        by_msg: dict[str, list[str]] = {}
        for p, msg in problems:
            by_msg.setdefault(msg.split(" (")[0], []).append(str(p))
        for msg, ps in by_msg.items():
            report.errors.append(f"{len(ps)} {what} file(s): {msg}: {_examples(ps)}")


def _walk(root: Path, report: Report, within: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under root as roma.data.walk lists them; what it skips (FIFOs,
    broken links, links into the dataset, loops) is counted in a note of the report."""
    from roma.data.walk import walk

    w = walk(root, within)
    note = w.skipped_note()
    if note:
        report.notes.append(f"{root}: {note}")
    images = [f for f in w.files if is_image(f.name)]
    return images, [f for f in w.files if not is_image(f.name)]


# ----------------------------------------------------------------------------- class folders (AID, UCM)
def check_classes(root: Path, kind: str = "classes", sample: int | None = None) -> Report:
    """<root>/<class>/<image>; for aid/ucm the class names and counts of the release."""
    report = Report(kind, str(root))
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    title, expected = CLASS_SETS.get(kind, (kind, None))
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    stray = sorted(p.name for p in root.iterdir() if not p.is_dir())
    if stray:
        report.notes.append(f"{len(stray)} file(s) beside the class folders are ignored: {_examples(stray)}")
    counts: dict[str, int] = {}
    images: list[Path] = []
    for c in classes:
        imgs, other = _walk(root / c, report, within=root)  # a link into a sibling class: not followed
        counts[c] = len(imgs)
        images += imgs
        if other:
            report.notes.append(f"{c}/: {len(other)} non-image file(s) ignored: "
                                f"{_examples([p.relative_to(root).as_posix() for p in other])}")
    report.counts = {"images": len(images), "classes": len(classes)}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        report.errors.append(f"{len(empty)} class folder(s) hold no image: {_examples(empty)}")
    if expected is None:
        if len(classes) < 2:
            report.errors.append(f"found {len(classes)} class folder(s); a class-folder dataset needs at least 2")
    else:
        missing = sorted(set(expected) - set(classes))
        unknown = sorted(set(classes) - set(expected))
        if missing:
            report.errors.append(f"{len(missing)} of the {len(expected)} {title} classes are missing: {_examples(missing)}")
        if unknown:
            lower = {c.lower(): c for c in expected}
            hint = [f"{u} (expected {lower[u.lower()]})" for u in unknown if u.lower() in lower]
            report.errors.append(f"{len(unknown)} class folder(s) that {title} does not have: {_examples(unknown)}"
                                 + (f"; names differ in case: {_examples(hint)}" if hint else ""))
        over = [f"{c} {counts[c]} > {n}" for c, n in expected.items() if counts.get(c, 0) > n]
        under = [f"{c} {counts[c]} of {n}" for c, n in expected.items() if 0 < counts.get(c, 0) < n]
        total = sum(expected.values())
        if over:
            report.errors.append(f"more images than the release in {len(over)} class(es): {_examples(over)}")
        elif under and not missing:
            report.partial.append(f"{len(images):,} of the release's {total:,} images "
                                  f"({len(under)} class(es) short: {_examples(under)})")
    check_headers(images, report, sample)
    return report


# ----------------------------------------------------------------------------- LEVIR-CD-style pairs
def _pairs(folder: Path, report: Report, split: str = "") -> tuple[int, list[Path]]:
    names = {}
    for sub in ("A", "B", "label"):
        d = folder / sub
        if not d.is_dir():
            report.errors.append(f"{d} is missing (LEVIR-CD layout: A/, B/, label/ with the same file names)")
            return 0, []
        files = sorted(p for p in d.iterdir() if p.is_file())
        other = [p.name for p in files if not is_image(p.name)]
        if other:
            report.notes.append(f"{d}: {len(other)} non-image file(s) ignored: {_examples(other)}")
        names[sub] = {p.name for p in files if is_image(p.name)}
    a = names["A"]
    for sub in ("B", "label"):
        if a - names[sub]:
            report.errors.append(f"{len(a - names[sub])} image(s) in {folder / 'A'} have no {sub}/ partner: "
                                 f"{_examples(sorted(a - names[sub]))}")
        if names[sub] - a:
            report.errors.append(f"{len(names[sub] - a)} file(s) in {folder / sub} have no A/ partner: "
                                 f"{_examples(sorted(names[sub] - a))}")
    files = [folder / sub / n for sub in ("A", "B", "label") for n in sorted(names[sub])]
    return len(a & names["B"] & names["label"]), files


def check_levir(root: Path, sample: int | None = None) -> Report:
    report = Report("levir", str(root))
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    splits = ("train", "val", "test")
    files: list[Path] = []
    per_split: dict[str, int] = {}
    if all((root / s / "A").is_dir() for s in splits):
        for s in splits:
            per_split[s], f = _pairs(root / s, report, s)
            files += f
    else:
        n, files = _pairs(root, report)
        if files:
            names = sorted(p.name for p in files if p.parent.name == "A")
            lists = {s: root / "list" / f"{s}.txt" for s in splits}
            if all(p.is_file() for p in lists.values()):
                for s, p in lists.items():
                    listed = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
                    absent = sorted(set(listed) - set(names))
                    if absent:
                        report.errors.append(f"{p} names {len(absent)} file(s) absent from A/: {_examples(absent)}")
                    per_split[s] = len(listed)
            else:
                per_split = {s: sum(x.startswith(s + "_") for x in names) for s in splits}
                if not all(per_split.values()):
                    report.errors.append("no split found: need {train,val,test}/ folders, list/{train,val,test}.txt "
                                         f"or train_/val_/test_ file-name prefixes (found {per_split})")
    report.counts = {"pairs": sum(per_split.values()), **{f"{s} pairs": n for s, n in per_split.items()}}
    if per_split and not report.errors:
        if per_split not in LEVIR_RELEASES.values():
            largest = {s: max(rel[s] for rel in LEVIR_RELEASES.values()) for s in splits}
            releases = "; ".join(f"{name}: {sum(r.values()):,} ({'/'.join(str(r[s]) for s in splits)})"
                                 for name, r in LEVIR_RELEASES.items())
            msg = (f"{sum(per_split.values()):,} pairs (train/val/test {'/'.join(str(per_split[s]) for s in splits)}); "
                   f"LEVIR-CD has {releases}")
            (report.errors if any(per_split[s] > largest[s] for s in splits) else report.partial).append(msg)
    check_headers(files, report, sample)
    return report


# ----------------------------------------------------------------------------- OSCD
def check_oscd(root: Path, labels_root: Path | None = None, sample: int | None = None) -> Report:
    report = Report("oscd", str(root))
    labels_root = labels_root or root
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    cities: dict[str, list[str]] = {}
    for s in OSCD_CITIES:
        p = root / f"{s}.txt"
        if not p.is_file():
            report.errors.append(f"{p} is missing (the release's comma-separated city list)")
            continue
        cities[s] = [c.strip() for c in p.read_text().replace("\n", ",").split(",") if c.strip()]
    files: list[Path] = []
    for s, names in cities.items():
        missing_img, missing_lab = [], []
        for c in names:
            for folder in ("imgs_1_rect", "imgs_2_rect"):
                for b in OSCD_BANDS:
                    f = root / c / folder / f"{b}.tif"
                    (files.append(f) if f.is_file() else missing_img.append(f"{c}/{folder}/{b}.tif"))
            lab = labels_root / c / "cm" / "cm.png"
            (files.append(lab) if lab.is_file() else missing_lab.append(f"{c}/cm/cm.png"))
        if missing_img:
            report.errors.append(f"{len(missing_img)} band file(s) of {s} cities are missing: {_examples(missing_img)}")
        if missing_lab:
            report.errors.append(f"{len(missing_lab)} label(s) of {s} cities are missing under {labels_root}: "
                                 f"{_examples(missing_lab)}")
        n_want = OSCD_CITIES[s]
        if len(names) > n_want:
            report.errors.append(f"{s}.txt lists {len(names)} cities; the release has {n_want}")
        elif len(names) < n_want:
            report.partial.append(f"{s}.txt lists {len(names)} of the release's {n_want} cities")
    report.counts = {f"{s} cities": len(v) for s, v in cities.items()}
    check_headers(files, report, sample)
    return report


# ----------------------------------------------------------------------------- SpaceNet v1
def _first_last_char(path: Path) -> tuple[bytes, bytes]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
        f.seek(max(0, size - 64))
        tail = f.read().rstrip()
    return head[:1], tail[-1:]


def check_spacenet(root: Path, sample: int | None = None) -> Report:
    import re

    report = Report("spacenet", str(root))
    tif_dir, geo_dir = root / "3band", root / "geojson"
    for d in (tif_dir, geo_dir):
        if not d.is_dir():
            report.errors.append(f"{d} is missing (SpaceNet v1 layout: 3band/*img<N>.tif, geojson/*img<N>.geojson)")
    if report.errors:
        return report
    key = re.compile(r"img(\d+)$")
    tifs = {m.group(1): p for p in sorted(tif_dir.glob("*.tif")) if (m := key.search(p.stem)) and p.is_file()}
    geos = {m.group(1): p for p in sorted(geo_dir.glob("*.geojson")) if (m := key.search(p.stem)) and p.is_file()}
    odd = sorted(p.name for d in (tif_dir, geo_dir) for p in d.iterdir()
                 if p.is_file() and not key.search(p.stem))
    if odd:
        report.notes.append(f"{len(odd)} file(s) without an img<N> name ignored: {_examples(odd)}")
    report.counts = {"tiles": len(tifs), "footprint files": len(geos)}
    if set(tifs) - set(geos):
        report.errors.append(f"{len(set(tifs) - set(geos))} tile(s) have no geojson: "
                             f"{_examples(sorted(set(tifs) - set(geos), key=int))}")
    if len(tifs) > SPACENET_TILES:
        report.errors.append(f"{len(tifs):,} tiles; SpaceNet v1 (Rio) has {SPACENET_TILES:,}")
    elif len(tifs) < SPACENET_TILES:
        report.partial.append(f"{len(tifs):,} of SpaceNet v1's {SPACENET_TILES:,} RGB tiles")
    bad = []
    for p in geos.values():
        try:
            first, last = _first_last_char(p)
        except OSError as e:
            bad.append(f"{p.name} ({e.strerror})")
            continue
        if first != b"{" or last != b"}":
            bad.append(p.name)
    if bad:
        report.errors.append(f"{len(bad)} geojson file(s) are not whole JSON objects: {_examples(bad)}")
    check_headers(list(tifs.values()), report, sample)
    return report


# ----------------------------------------------------------------------------- segfolder
def check_segfolder(root: Path, sample: int | None = None) -> Report:
    report = Report("segfolder", str(root))
    folders = [root / s for s in ("train", "val", "test")] if (root / "train" / "images").is_dir() else [root]
    files, n = [], 0
    for f in folders:
        imgs = {p.stem: p for p in sorted((f / "images").glob("*")) if is_image(p.name)} if (f / "images").is_dir() else {}
        masks = {p.stem: p for p in sorted((f / "masks").glob("*")) if is_image(p.name)} if (f / "masks").is_dir() else {}
        if not imgs:
            report.errors.append(f"{f / 'images'} holds no image")
        if set(imgs) - set(masks):
            report.errors.append(f"{len(set(imgs) - set(masks))} image(s) in {f / 'images'} have no mask: "
                                 f"{_examples(sorted(set(imgs) - set(masks)))}")
        files += list(imgs.values()) + list(masks.values())
        n += len(imgs)
    report.counts = {"images": n}
    check_headers(files, report, sample)
    return report


# ----------------------------------------------------------------------------- pretraining set
def _shard_member_problem(ref) -> str | None:
    size = os.path.getsize(ref.path)
    if ref.offset + ref.size > size:
        return f"truncated shard: {ref.key} wants bytes up to {ref.offset + ref.size:,}, the shard has {size:,}"
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        head = f.read(min(16, ref.size))
        f.seek(ref.offset + max(0, ref.size - 256))
        tail = f.read(min(256, ref.size))
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return None  # TIFF inside a shard: its IFD offsets are relative to the member; not checked here
    from roma.data.decode import header_problem as decode_problem

    with open(ref.path, "rb") as f:  # mode and size sit in the first bytes (a JPEG's after its EXIF block)
        f.seek(ref.offset)
        first = f.read(min(ref.size, 1 << 18))
    return header_problem(head, tail, ref.size) or decode_problem(first)


def check_pretrain(root: str, sample: int | None = None, expect: int | None = None) -> Report:
    """A pretraining source as the data layer reads it: folder tree, manifest, or tar shards."""
    from roma.data.sources import list_images

    report = Report("pretrain", str(root))
    try:
        refs = list_images(root)
    except (OSError, ValueError) as e:
        report.errors.append(str(e))
        return report
    report.counts = {"images": len(refs)}
    shards = [r for r in refs if r.in_shard]
    if shards:
        report.counts["shards"] = len({r.path for r in shards})
        chosen = shards
        if sample is not None and len(shards) > sample:
            step = len(shards) / sample
            chosen = [shards[int(i * step)] for i in range(sample)]
            report.notes.append(f"headers of {len(chosen):,} of {len(shards):,} shard members checked (a sample)")
        with ThreadPoolExecutor(max_workers=8) as pool:
            bad = [(r, m) for r, m in zip(chosen, pool.map(_shard_member_problem, chosen)) if m]
        if bad:
            report.errors.append(f"{len(bad)} shard member(s): {bad[0][1]}; e.g. {_examples([str(r) for r, _ in bad])}")
    else:
        check_headers([Path(r.path) for r in refs], report, sample)
        p = Path(root)
        if p.is_dir():
            other = [q for q in _walk(p, report)[1] if not q.name.endswith(".tar")]
            if other:
                report.notes.append(f"{len(other)} non-image file(s) ignored: "
                                    f"{_examples([q.relative_to(p).as_posix() for q in other])}")
    if expect is not None:
        if len(refs) > expect:
            report.errors.append(f"{len(refs):,} images, {expect:,} expected")
        elif len(refs) < expect:
            report.partial.append(f"{len(refs):,} of the expected {expect:,} images")
    return report


# ----------------------------------------------------------------------------- entry points
KINDS = ("aid", "ucm", "classes", "levir", "oscd", "spacenet", "segfolder", "pretrain")


def check_dataset(kind: str, root: str | os.PathLike, sample: int | None = None, labels_root: str | None = None,
                  expect: int | None = None) -> Report:
    """One dataset copy; kind is one of KINDS."""
    t0 = time.monotonic()
    p = Path(root)
    if kind in ("aid", "ucm", "classes"):
        r = check_classes(p, kind, sample)
    elif kind == "levir":
        r = check_levir(p, sample)
    elif kind == "oscd":
        r = check_oscd(p, Path(labels_root) if labels_root else None, sample)
    elif kind == "spacenet":
        r = check_spacenet(p, sample)
    elif kind == "segfolder":
        r = check_segfolder(p, sample)
    elif kind == "pretrain":
        r = check_pretrain(str(root), sample, expect)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}: one of {', '.join(KINDS)}")
    r.seconds = round(time.monotonic() - t0, 2)
    return r


def check_many(items: Iterable[tuple[str, str, str | None]], sample: int | None = None,
               on_report: Callable[[Report], None] | None = None) -> list[Report]:
    """(kind, root, labels_root) items, each checked once."""
    out, seen = [], set()
    for kind, root, labels in items:
        if (kind, root, labels) in seen:
            continue
        seen.add((kind, root, labels))
        r = check_dataset(kind, root, sample, labels)
        out.append(r)
        if on_report:
            on_report(r)
    return out


ENV_VARS = {**EVAL_DATA_ENV, "levir": "ROMA_LEVIR", "pretrain": "ROMA_PRETRAIN_DATA"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m roma.data.check",
        description="Check local dataset copies against their release's layout and counts (headers, not a "
                    "decode). Without arguments: every dataset whose environment variable is set "
                    f"({', '.join(f'{v} ({k})' for k, v in ENV_VARS.items())}).")
    p.add_argument("kind", nargs="?", choices=KINDS)
    p.add_argument("root", nargs="?", help="the dataset's root folder (pretrain: folder, manifest or shards)")
    p.add_argument("--labels-root", help="OSCD: the folder of <city>/cm/cm.png (default: the root)")
    p.add_argument("--expect", type=int, help="pretrain: the number of images the copy should hold")
    p.add_argument("--sample", type=int, help="check the headers of this many evenly spread files only")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 on PARTIAL too (a copy smaller than the release)")
    a = p.parse_args(argv)
    if a.kind and not a.root:
        p.error("give the dataset's root after its kind")
    items = [(a.kind, a.root, a.labels_root)] if a.kind else [
        (k, os.environ[v], None) for k, v in ENV_VARS.items() if os.environ.get(v)]
    if not items:
        p.error(f"give KIND ROOT, or set one of {', '.join(ENV_VARS.values())}")
    reports = [check_dataset(k, r, a.sample, lab, a.expect) for k, r, lab in items]
    if a.json:
        print(json.dumps([r.to_dict() for r in reports], indent=1))
    else:
        print("\n".join(r.render() for r in reports))
    bad = [r for r in reports if r.verdict == "FAIL" or (a.strict and r.verdict == "PARTIAL")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
