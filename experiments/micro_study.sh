#!/usr/bin/env bash
# The micro scaling study on real AID images, end to end on a CPU, with one command:
#
#   experiments/micro_study.sh [AID_ROOT]            (default ../shared/data/AID; log: outputs/micro_study.log)
#
# 1. Split AID by the stratified TR = 50% split (experiments/micro_split.py): the pretraining pool
#    (5,000 images) and the probe set (the other 5,000) are disjoint; pretraining never sees a probe image.
# 2. Launch scaling_data_micro, scaling_model_micro and ablation_ares_msp_micro (local executor) into
#    ONE experiment, micro_study, so that identical runs are computed once (micro-tiny at 2.5K with
#    ARES+MSP is both a data-scaling point and the ablation's +ARES+MSP row; micro-tiny at 5K is on both
#    curves). Two lanes run side by side, one torch thread each (2 cores; oversubscribed threads are
#    several times slower); their run sets are disjoint (--only), so no run is computed twice.
#    Every run: pretraining for a fixed number of optimizer steps (same compute at every data size,
#    warm-up 0 so that the lr schedule does not depend on the data size), then the AID fast linear
#    probe on the probe set (50 images per class, TR = 50% inside it).
# 3. The floor: the same probe on a randomly initialised encoder of each micro size (3 probe seeds).
# 4. analysis/fit_scaling.py: data- and model-scaling figures, fitted exponents with bootstrap CIs;
#    experiments/micro_report.py: the tables with the floor and one summary figure (<EXP>_summary.png).
#
# Relaunching skips finished runs and resumes unfinished ones (the launcher's rules).
# Knobs (environment): STEPS (50), BATCH (32), BLR (2e-3), PER_CLASS (50), SEEDS ("0 1 2"), EXP (micro_study),
# RETRY=1 (also retry failed runs).
set -euo pipefail
cd "$(dirname "$0")/.."
AID=${1:-../shared/data/AID}
STEPS=${STEPS:-50}
BATCH=${BATCH:-32}
BLR=${BLR:-2e-3}
PER_CLASS=${PER_CLASS:-50}
SEEDS=${SEEDS:-0 1 2}
EXP=${EXP:-micro_study}  # the MLflow experiment and output folder
OUT=outputs
DATA=$OUT/micro_data
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one torch thread per process (see above)
[ -f .venv/bin/activate ] && . .venv/bin/activate

PROBE="eval.probes=[{dataset: aid, root: $DATA/aid_probe, train_ratios: [0.5], protocol: fast, batch_size: 128, max_per_class: $PER_CLASS}]"
COMMON=(--executor local --data-root "$DATA/aid_pool"
        --set "$PROBE" "experiment=$EXP" "output_root=$OUT" "train.max_steps=$STEPS"
        "train.global_batch=$BATCH" "train.blr=$BLR" "train.warmup_epochs=0")

launch() {  # launch SPEC SEED [--only PATTERN]; a failed run does not stop the lane
  local spec=$1 seed=$2; shift 2
  python experiments/launch.py "$spec" "${COMMON[@]}" "train.seed=$seed" ${RETRY:+--retry-failed} "$@" || echo "[micro_study] $spec seed $seed: some runs failed"
}

floor() {  # the random-init probe of one micro size (the same probe config as the runs)
  local model=$1 dir=$OUT/$EXP/floor/$1
  [ -f "$dir/probe_aid.json" ] && return 0
  python -m roma.eval.classification --root "$DATA/aid_probe" --model "$model" --model-img-size 64 \
    --max-per-class "$PER_CLASS" --batch-size 128 --seeds 0 1 2 --out "$dir" --device cpu
}

T0=$(date +%s)
echo "[micro_study] start $(date -u +%FT%TZ) on $(nproc --all) cores: steps $STEPS x batch $BATCH, blr $BLR, seeds $SEEDS"
python experiments/micro_split.py --aid "$AID" --out "$DATA"

# lane A: micro-tiny data scaling (15 runs; seed-major so that a cut-short study has every size)
( for s in $SEEDS; do launch scaling_data_micro "$s"; done
  for m in roma_micro_tiny roma_micro_small roma_micro_base; do floor "$m"; done ) &
LANE_A=$!
sleep 20  # let lane A create the MLflow experiment first
# lane B: small/base model scaling (tiny at 5K comes from lane A), then baseline and +ARES ablation rows
( for s in $SEEDS; do launch scaling_model_micro "$s" --only 'roma_micro_[sb]*'; done
  for s in $SEEDS; do for row in baseline ares; do launch ablation_ares_msp_micro "$s" --only "*-$row"; done; done ) &
LANE_B=$!
wait $LANE_A $LANE_B
T1=$(date +%s)
echo "[micro_study] runs done in $(( (T1 - T0) / 60 )) min $(( (T1 - T0) % 60 )) s"

mkdir -p "$OUT/analysis"
python analysis/fit_scaling.py --experiment "$EXP" --tracking-uri "sqlite:///$OUT/$EXP/mlflow.db" \
  --out "$OUT/analysis/$EXP" --form power --allow-missing | tee "$OUT/analysis/$EXP.md" || true
python experiments/micro_report.py --analysis "$OUT/analysis/$EXP" --floor "$OUT/$EXP/floor" --out "$OUT/analysis/$EXP" \
  --name "$EXP" --title "RoMA micro study on AID: $STEPS steps x $BATCH images per run" | tee -a "$OUT/analysis/$EXP.md" || true
echo "[micro_study] total $(( ($(date +%s) - T0) / 60 )) min; results: $OUT/$EXP, figures: $OUT/analysis/$EXP"
