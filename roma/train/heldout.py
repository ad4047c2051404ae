"""The pretraining objective on the held-out images (roma.data.heldout): val_loss and its terms.

    metrics = heldout_losses(model, dataset, collate, batch_size, device, amp_dtype, dist)
    # {"val_loss": ..., "val_loss_token": ..., "val_loss_block_s6": ...}

Each rank scores every world_size-th image; the per-term sums and the image count are averaged over
the ranks, so the result is the mean over all held-out images whatever the number of ranks (equal up
to float summation order). No gradient, eval mode, and the global RNG states are restored after, so
a run's training is the same with or without these evaluations (tests/test_heldout.py).

Which number compares what: the held-out inputs and targets are the same tensors for every run
(roma.data.heldout builds them without ARES), so `val_loss_token` (the next-cluster token loss, no
MSP term) is comparable across every run of a study, ablation variants included; `val_loss` is the
run's own objective (token loss + msp.weight x the mean MSP block loss when MSP is on), comparable
only between runs of one MSP setting.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from roma.train.batching import model_inputs
from roma.train.distributed import DistInfo, all_reduce_mean

PREFIX = "val_"  # the model's loss terms (loss, loss_token, loss_block_s<k>) -> val_loss, val_loss_token, ...


@torch.no_grad()
def heldout_losses(model: torch.nn.Module, dataset, collate, batch_size: int, device: torch.device,
                   amp_dtype: torch.dtype | None, dist: DistInfo) -> dict[str, float]:
    """The mean of each loss term over the held-out images (images that fail to decode are skipped)."""
    share = Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    loader = DataLoader(share, batch_size=batch_size, collate_fn=collate, num_workers=0, shuffle=False)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for batch in loader:
            images = batch.get("image")
            if images is None:  # every image of the batch was unreadable
                continue
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(**model_inputs(batch, device))
            n = images.shape[0]
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * n
            count += n
    model.train(was_training)
    if not sums:
        raise RuntimeError("no held-out image could be read: see data.heldout_root / data.root")
    keys = sorted(sums)
    totals = all_reduce_mean(torch.stack([count, *(sums[k] for k in keys)]), dist)
    return {PREFIX + k: float(totals[i + 1] / totals[0]) for i, k in enumerate(keys)}
