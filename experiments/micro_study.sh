#!/usr/bin/env bash
# The micro scaling study on real AID images, end to end on a CPU, with one command:
#
#   experiments/micro_study.sh [--aid AID_ROOT] [--exp micro_study] [--plan] [--full] [--set key=value ...]
#
# Splits AID into a pretraining pool and a disjoint probe set, runs scaling_data_micro,
# scaling_model_micro, ablation_ares_msp_micro, scaling_joint_micro and
# scaling_data_micro_fixed_steps (each unique run once; the joint grid's interior and the fixed-steps
# control at 2 seeds unless --full) and the random-init floors
# in two lanes with progress lines and an ETA, then fits the laws from the MLflow store and
# regenerates the results section of docs/micro_study.md. Relaunching resumes: finished runs are skipped,
# interrupted ones resume from their checkpoint. Details: experiments/micro_study.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
mkdir -p outputs
python experiments/micro_study.py "$@" 2>&1 | tee -a outputs/micro_study.log
