#!/usr/bin/env bash
# Training throughput of one process against torchrun with 2 processes (gloo, DDP and
# FSDP2) on the same machine, same model, same global batch; rounds interleaved so a
# busy machine slows each alike. Reports each run's median tokens/s over its second half.
#   PYTHONPATH=src bash bench/dist_throughput.sh [STEPS] [ROUNDS]
# MODEL (default seed-d128), BATCH (32), PRECISION (auto), DATA (data/wiki) change the setup.
set -euo pipefail
steps=${1:-20} rounds=${2:-2}
model=${MODEL:-seed-d128} batch=${BATCH:-32} precision=${PRECISION:-auto} data=${DATA:-data/wiki}
work=$(mktemp -d)
common=(model=$model data.path="$data" data.val_split= train.batch_size=$batch
        train.precision=$precision train.max_steps=$steps train.checkpoint_interval=0
        train.tensorboard=false train.device=cpu)
launch() { OMP_NUM_THREADS=1 python3 -m torch.distributed.run --standalone --nproc_per_node 2 \
             -m tinylm train "$@"; }
median() {  # median tokens/s of the second half of a run's train records
  python3 - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
recs = [json.loads(line) for line in open(sys.argv[1]) if '"train"' in line]
print(round(statistics.median(r["tokens_per_s"] for r in recs[len(recs) // 2:])))
PY
}
echo "model $model, global batch $batch x 128 tokens, $precision, $steps steps, $(nproc) cores"
for round in $(seq "$rounds"); do
  # One process uses both cores (2 threads); each of the 2 ranks gets one thread.
  python3 -m tinylm train "${common[@]}" train.num_threads=2 --out "$work/single" --overwrite \
    >/dev/null 2>&1
  launch "${common[@]}" train.num_threads=1 train.parallel=ddp --out "$work/ddp" --overwrite \
    >/dev/null 2>&1
  launch "${common[@]}" train.num_threads=1 train.parallel=fsdp --out "$work/fsdp" --overwrite \
    >/dev/null 2>&1
  echo "round $round: tokens/s single $(median "$work/single") | 2 ranks DDP" \
       "$(median "$work/ddp") | 2 ranks FSDP2 $(median "$work/fsdp")"
done
rm -rf "$work"
