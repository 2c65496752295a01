#!/usr/bin/env bash
# torchrun on one CUDA GPU (nccl): the seed-d128 model in bf16 trained as a plain process,
# under DDP and under FSDP2 (one rank each), and an FSDP2 run stopped halfway and resumed
# with DDP (the consolidated checkpoint format is the same). Prints tokens/s and losses.
# About 2 minutes on one H100/H200:
#   PYTHONPATH=src bash bench/gpu_dist_check.sh [OUT_DIR]
# Dry run of the same logic on a CPU (gloo):
#   DEVICE=cpu PRECISION=fp32 STEPS=20 PYTHONPATH=src bash bench/gpu_dist_check.sh
# NPROC=2 uses two ranks (two GPUs, or two CPU processes).
set -euo pipefail
out=${1:-${OUT:-gpu_dist_out}}
device=${DEVICE:-cuda} steps=${STEPS:-200} precision=${PRECISION:-bf16} nproc=${NPROC:-1}
data=${DATA:-data/wiki}
mkdir -p "$out"
work=$(mktemp -d)
log() { echo "== $*" | tee -a "$out/dist.log"; }

log "torch $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
[ -f "$data/manifest.json" ] || python3 -m tinylm prepare builtin:wiki --out "$data" 2>&1 | tail -1
half=$((steps / 2))
common=(model=seed-d128 data.path="$data" train.device=$device train.precision=$precision
        train.batch_size=32 train.epochs=100 train.eval_interval=$half train.eval_batches=10
        train.checkpoint_interval=0 train.log_interval=10 train.tensorboard=false)
launch() { python3 -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m tinylm train "$@"; }

run() {  # name, then how to start it, then its arguments
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$work/$name.log" 2>&1; then
    grep -a -E '^(model|trained|wrote)' "$work/$name.log" | tee -a "$out/dist.log" || true
    log "$name: $((SECONDS - t0)) s wall"
  else  # keep going: the summary says which runs are missing
    tail -20 "$work/$name.log" | tee -a "$out/dist.log"
    log "$name: FAILED after $((SECONDS - t0)) s"
  fi
}
log "single process"
run single python3 -m tinylm train "${common[@]}" train.max_steps=$steps --out "$work/single"
log "torchrun x$nproc, DDP"
run ddp launch "${common[@]}" train.max_steps=$steps train.parallel=ddp --out "$work/ddp"
log "torchrun x$nproc, FSDP2"
run fsdp launch "${common[@]}" train.max_steps=$steps train.parallel=fsdp --out "$work/fsdp"
log "FSDP2 to step $half, then resumed to $steps with DDP"
run fsdp-half launch "${common[@]}" train.max_steps=$half train.parallel=fsdp --out "$work/resume"
run ddp-resume launch --out "$work/resume" --resume train.max_steps=$steps train.parallel=ddp

python3 - "$work" "$out/dist.json" <<'PY' | tee -a "$out/dist.log"
import json, statistics, sys
from pathlib import Path
work, summary = Path(sys.argv[1]), {}
for name in ("single", "ddp", "fsdp", "resume"):
    if not (work / name / "metrics.jsonl").exists():
        print(f"{name:7s} no metrics (failed)")
        continue
    recs = [json.loads(line) for line in open(work / name / "metrics.jsonl")]
    train = [r for r in recs if r["kind"] == "train"]
    val = [r["val_loss"] for r in recs if r["kind"] == "val"]
    tps = [r["tokens_per_s"] for r in train[len(train) // 2:] if r.get("tokens_per_s")]
    summary[name] = {"steps": train[-1]["step"], "last_train_loss": train[-1]["loss"],
                     "val_losses": val, "median_tokens_per_s_2nd_half": statistics.median(tps)}
    print(f"{name:7s} steps {train[-1]['step']:4d} | train loss {train[-1]['loss']:.4f} | val "
          f"{', '.join(f'{v:.4f}' for v in val)} | {statistics.median(tps):,.0f} tokens/s")
ref = summary.get("single", {}).get("val_losses", [float("nan")])[-1]
for name in [n for n in ("ddp", "fsdp", "resume") if n in summary]:
    print(f"final val loss {name} - single: {summary[name]['val_losses'][-1] - ref:+.2e}")
json.dump(summary, open(sys.argv[2], "w"), indent=2)
PY
rm -rf "$work"
