"""Pretraining: optimizer/schedule, resumable sampler, atomic checkpoints, DDP setup, the loop."""
