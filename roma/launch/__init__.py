"""Launching runs of a spec: status files, the job wrapper, executors (debug, local, slurm), the CLI."""
