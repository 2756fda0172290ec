#!/usr/bin/env bash
# One GPU check of every task, under 8 minutes on an H200-class GPU:
#   bash scripts/gpu_check.sh            # on a machine with CUDA, after `make install`
#   bash scripts/gpu_check.sh --dry-run  # the same steps on the CPU, tiny, to check the script
# Each task trains briefly through train.py with trainer=gpu (bf16-mixed); the style benchmarks
# run at 512 with batch 32 (and the CIN methods at 1024 with batch 16); the GAN metrics run on
# CUDA. Prints one summary table (task | step | status | seconds | figure) and writes it to
# $OUT (default gpu_check/) as summary.md, with each step's log beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export WANDB_MODE=offline WANDB_SILENT=true HYDRA_FULL_ERROR=1

if [ "$DRY" = 1 ]; then
  TRAINER="trainer=debug trainer.accelerator=cpu"
  DEVICE=cpu; BATCH=1; SIZE=64; CIN_SIZE=64; CIN_BATCH=1; REPS=1
  GAN_BENCH="--arch dcgan --g-width 8 --d-width 8 --batch 4 --repeats 1 --warmup 1"
else
  TRAINER="trainer=gpu"
  DEVICE=cuda; BATCH=32; SIZE=512; CIN_SIZE=1024; CIN_BATCH=16; REPS=5
  GAN_BENCH=""
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: run with --dry-run on a CPU machine"; exit 2; }
  "$PY" -c "import torch; print(torch.cuda.get_device_name(0))" > "$OUT/device.txt"
fi

ROWS=()
step() {  # step <task> <name> <timeout_s> <figure-extracting python expr or ""> -- command...
  local task=$1 name=$2 limit=$3 figure=$4; shift 5
  local log="$OUT/${task}_${name}.log" t0=$(date +%s) status=ok fig=""
  if ! timeout "$limit" "$@" > "$log" 2>&1; then status="FAILED (see $log)"; fi
  local dt=$(( $(date +%s) - t0 ))
  if [ "$status" = ok ] && [ -n "$figure" ]; then
    fig=$("$PY" -c "$figure" "$OUT" 2>/dev/null | tail -1)
  fi
  ROWS+=("| $task | $name | $status | $dt | $fig |")
  echo "$task/$name: $status in ${dt}s $fig"
}
summary_metric() {  # python that prints selected metrics of <run dir>/summary.json
  echo "import json,sys; m=json.load(open(sys.argv[1]+'/$1/summary.json'))['metrics']; print(', '.join(f'{k}={m[k]:.4g}' for k in $2 if isinstance(m.get(k),(int,float))))"
}

R="$OUT/runs"
rm -rf "$R"
step classification train 90 "$(summary_metric runs/classification "['test/acc']")" -- \
  "$PY" train.py task=classification $TRAINER logger=csv hydra.run.dir="$R/classification" trainer.max_epochs=2
step style_transfer train 120 "$(summary_metric runs/style_transfer "['val/loss']")" -- \
  "$PY" train.py task=style_transfer $TRAINER logger=csv hydra.run.dir="$R/style_transfer" trainer.max_steps=60
step style_transfer cin_train 120 "" -- \
  "$PY" train.py task=style_transfer model=cin $TRAINER logger=csv hydra.run.dir="$R/cin" trainer.max_steps=40
step domain_adaptation train 150 "$(summary_metric runs/domain_adaptation "['target/none/error','target/tent/error']")" -- \
  "$PY" train.py task=domain_adaptation $TRAINER logger=csv hydra.run.dir="$R/domain_adaptation" \
  'data.target.corruption=[contrast,fog]' 'adapt=all'
step gan train 150 "" -- \
  "$PY" train.py task=gan $TRAINER logger=csv hydra.run.dir="$R/gan" gan.max_g_steps=200 gan.eval_every_g_steps=100
step slimming train 150 "" -- \
  "$PY" train.py task=slimming $TRAINER logger=csv hydra.run.dir="$R/slimming"
step quantization qat 150 "" -- \
  "$PY" train.py task=quantization $TRAINER logger=csv hydra.run.dir="$R/quantization" quant.mode=qat
step style_transfer bench_adain 150 "import json,sys; r=json.load(open(sys.argv[1]+'/bench_adain.json'))['inference']; print('; '.join(f\"{x['mode']}: {x['images_per_s']} img/s\" for x in r))" -- \
  "$PY" scripts/bench_style.py --device "$DEVICE" --sizes "$SIZE" --batch "$BATCH" --reps "$REPS" \
  --no-compile --train-steps 2 --out "$OUT/bench_adain.json"
step style_transfer bench_cin 150 "" -- \
  "$PY" scripts/bench_style.py --device "$DEVICE" --methods cin arbitrary_cin --sizes "$CIN_SIZE" \
  --batch "$CIN_BATCH" --reps "$REPS" --out "$OUT/bench_cin.json"
step gan bench 120 "" -- \
  "$PY" scripts/bench_gan.py --device "$DEVICE" $GAN_BENCH --out "$OUT/bench_gan.json"

{
  echo "# GPU check $(date -u +%Y-%m-%d) on $( [ "$DRY" = 1 ] && echo "CPU (dry run)" || cat "$OUT/device.txt")"
  echo
  echo "| task | step | status | seconds | figures |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
grep -q FAILED "$OUT/summary.md" && exit 1
exit 0
