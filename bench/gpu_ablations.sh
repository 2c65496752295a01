#!/usr/bin/env bash
# Seed replicates of the CPU-scale study and ablations (configs/seed_study.yaml --scale cpu,
# configs/ablations.yaml, configs/ablation_epochs.yaml) on one CUDA GPU: the same configs
# and token budgets as on the CPU, only train.device=cuda and train.seed change.
#   PYTHONPATH=src bash bench/gpu_ablations.sh          # results: $OUT/gpu_ablations.tgz
# Needs data/wiki-study, data/wiki-bpe8k, data/wiki-bpe16k and data/tok-wiki-{8k,16k}
# (made by the sweeps' prepare commands on a machine with the built-in corpora).
# Run directories stay in a temp dir; the tarball keeps everything but the weights.
# ONLY="cosine wsd" runs just those runs of configs/ablations.yaml.
# PYTHON=.venv/bin/python DEVICE=cpu SEEDS=1 EXTRA="model.n_embd=16 train.max_steps=2" checks the script on a CPU.
set -euo pipefail
py=${PYTHON:-python3}
out=${OUT:-gpu_out} device=${DEVICE:-cuda} seeds=${SEEDS:-1337 1 2} jobs=${JOBS:-4}
budget=${BUDGET_S:-330}   # start no new sweep after this many seconds
read -ra extra <<< "${EXTRA:-}"
mkdir -p "$out"
work=$(mktemp -d) start=$SECONDS
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' | tee "$work/device.txt"
sweep() {  # FILE OUT_NAME [ARGS...]
  if (( SECONDS - start > budget )); then echo "== skip $2 (time budget)"; return; fi
  echo "== $2 at $((SECONDS - start)) s"
  "$py" -m tinylm sweep "$1" train.device="$device" "${@:3}" "${extra[@]}" \
    --out "$work/$2" --jobs "$jobs" > "$work/$2.log" 2>&1 || echo "   exit $? (see $2.log)"
  tail -n 1 "$work/$2.log"
  find "$work" -name '*.safetensors' -delete
  tar czf "$out/gpu_ablations.tgz" --exclude=tensorboard -C "$work" .
}
read -ra seeds <<< "$seeds"
for i in "${!seeds[@]}"; do
  seed=${seeds[$i]}
  if [[ -n ${ONLY:-} ]]; then  # ONLY="run names" of configs/ablations.yaml, nothing else
    sweep configs/ablations.yaml "ablations-s$seed" train.seed="$seed" --only "${ONLY// /,}"
    continue
  fi
  sweep configs/seed_study.yaml "study-s$seed" --scale cpu train.seed="$seed"
  sweep configs/ablations.yaml "ablations-s$seed" train.seed="$seed"
  if (( i == 0 )); then sweep configs/ablation_epochs.yaml epochs; fi  # before more seeds
done
echo "== done in $((SECONDS - start)) s"
