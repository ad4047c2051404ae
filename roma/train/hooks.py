"""What the training loop tells whoever runs it: the loop's only outside interface.

    class MyHooks(TrainHooks):
        def on_log(self, step, metrics): print(step, metrics["loss"])
    pretrain(cfg, run_dir, hooks=MyHooks())

The loop calls these on rank 0 only. roma.run adds MLflow tracking (TrackingHooks), roma.launch.job
adds the status file and SLURM preemption; `Hooks(a, b)` calls several in order. The base class
does nothing, so a plain `pretrain(cfg, run_dir)` writes only its run folder.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable


class TrainHooks:
    def on_start(self, step: int, facts: dict[str, Any]) -> None:
        """Model and data are built; training starts (or resumes) after `step`.

        facts: param_count, data_size (unique images), data_checksum, global_batch, world_size,
        device_batch, accum_steps, steps_per_epoch, total_steps, images_seen (total_steps x global_batch),
        scan_backend (roma.models.scan: which selective scan the encoder runs)."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """A log step: loss terms, lr, images_per_s, bad_images, grad_norm (averaged over ranks)."""

    def on_checkpoint(self, step: int) -> None:
        """last.pt of `step` is about to be written: nothing reported may lag behind it (flush now)."""

    def on_preempt(self, save: Callable[[], None]) -> Callable[[], None]:
        """Arrange for `save()` to run if the job is preempted; returns the undo. Default: nothing."""
        return lambda: None


class Hooks(TrainHooks):
    """Several hooks called in the order given (the preempt undos in reverse)."""

    def __init__(self, *hooks: TrainHooks | None):
        self.hooks = [h for h in hooks if h is not None]

    def on_start(self, step: int, facts: dict[str, Any]) -> None:
        for h in self.hooks:
            h.on_start(step, facts)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        for h in self.hooks:
            h.on_log(step, metrics)

    def on_checkpoint(self, step: int) -> None:
        for h in self.hooks:
            h.on_checkpoint(step)

    def on_preempt(self, save: Callable[[], None]) -> Callable[[], None]:
        undos = [h.on_preempt(save) for h in self.hooks]

        def undo() -> None:
            for u in reversed(undos):
                with contextlib.suppress(Exception):
                    u()
        return undo
