"""Progress of the long steps people wait for: a tqdm bar in a terminal, plain lines in batch logs.

    with progress(total=len(ds), desc="features", unit="img") as bar:
        for x in loader:
            ...
            bar.update(len(x))

In a terminal (stderr is a TTY) this is a tqdm bar with rate and estimated time left. Elsewhere
(SLURM logs, pipes, CI) it prints one plain line at most every `every_s` seconds, and a final one:

    [features] 1200/5000 img (24%), 40.1 img/s, 1m35s left

With `every_n` (the training loop: a line per train.log_every_steps steps) the plain lines come
every `every_n` units instead, each `<unit> <n>/<total> <postfix> <time> left` (`done in <time>` at
the end), one grep-able line per report:

    step 400/2000 epoch 3 loss 5.1234 lr 1.500e-04 images/s 61.2 bad 0 12m30s left

ROMA_PROGRESS=bar|plain|off forces a style (off: silent), for every loop that reports progress.
"""
from __future__ import annotations

import os
import sys
import time

STYLES = ("bar", "plain", "off")


def style() -> str:
    """The style this process uses: ROMA_PROGRESS if set, else bar on a terminal, plain elsewhere."""
    forced = os.environ.get("ROMA_PROGRESS", "").strip().lower()
    if forced:
        if forced not in STYLES:
            raise ValueError(f"ROMA_PROGRESS={forced!r}: expected one of {', '.join(STYLES)}")
        return forced
    return "bar" if sys.stderr.isatty() else "plain"


def fmt_seconds(s: float) -> str:
    """75 -> '1m15s', 3725 -> '1h02m', 9 -> '9s'."""
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def fmt_amount(n: float, unit: str) -> str:
    """Bytes as KiB/MiB/GiB; anything else as a plain number."""
    if unit != "B":
        return f"{n:.0f}"
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


class Rate:
    """Units done per second since `start` (when this process began counting), and the time left."""

    def __init__(self, total: float | None = None, start: float = 0, t0: float | None = None):
        self.total, self.start = total, start
        self.t0 = time.monotonic() if t0 is None else t0

    def seconds_per_unit(self, n: float) -> float | None:
        done = n - self.start
        return (time.monotonic() - self.t0) / done if done > 0 else None

    def left(self, n: float) -> float | None:
        """Seconds until `total` at the rate so far (None: no unit done yet, or no total)."""
        per = self.seconds_per_unit(n)
        return None if per is None or not self.total else max(0.0, (self.total - n) * per)


class Progress:
    """One progress display; update(n) adds n units done. Use as a context manager, or call close()."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 every_s: float = 30.0, file=None, every_n: int | None = None, enabled: bool = True):
        if every_n is not None and every_n < 1:
            raise ValueError(f"Progress every_n must be >= 1, got {every_n}")
        self.total, self.desc, self.unit, self.every_s, self.every_n = total, desc, unit, every_s, every_n
        self.n = self._start_n = self._printed_n = initial
        self.file = file or sys.stdout
        self.style = style() if enabled else "off"  # enabled=False: a process that must not report (rank > 0)
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self.bar = None
        if self.style == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                            unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """n more units done; postfix: a new status first (as set_postfix)."""
        if postfix is not None:
            self.set_postfix(postfix)
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.style != "plain":
            return
        elif self.every_n is not None:
            if self.n // self.every_n > self._printed_n // self.every_n or (self.total and self.n >= self.total):
                self._line()
        elif time.monotonic() - self._last >= self.every_s:
            self._line()

    def set_postfix(self, text: str) -> None:
        """A short status appended to the bar / line (e.g. 'loss 0.41')."""
        self._postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def line(self) -> str:
        """The plain progress line as it stands now."""
        elapsed = time.monotonic() - self._t0
        if self.every_n is not None:  # the time left at the rate of this process (a resume counts from its start)
            secs = Rate(self.total, self._start_n, self._t0).left(self.n)
            when = (f"done in {fmt_seconds(elapsed)}" if self.total and self.n >= self.total else
                    f"{fmt_seconds(secs)} left" if secs is not None else "")
            return " ".join(filter(None, [f"{self.unit} {self.n}/{self.total}", self._postfix, when]))
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = fmt_amount(self.n, self.unit)
        parts = [f"[{self.desc}] {done}"]
        if self.total:
            parts[0] += f"/{fmt_amount(self.total, self.unit)} {self.unit if self.unit != 'B' else ''}".rstrip()
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}" if self.unit != "B" else ""
        parts.append(f"{fmt_amount(rate, self.unit)} {self.unit}/s" if self.unit == "B"
                     else f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{fmt_seconds((self.total - self.n) / rate)} left")
        elif self.total and self.n >= self.total:
            parts.append(f"done in {fmt_seconds(elapsed)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _line(self) -> None:
        self._last, self._printed_n = time.monotonic(), self.n
        print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.style == "plain" and self.n > self._start_n and self.n != self._printed_n:  # not printed yet
            self._line()
        self.style = "off"  # closed: further calls print nothing

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             every_s: float = 30.0) -> Progress:
    return Progress(total, desc, unit, initial, every_s)
