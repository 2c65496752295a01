#!/usr/bin/env bash
# Rebuild every report in docs/results/ from run directories (nothing else is read).
#   bash docs/results/reports.sh
# The runs come from (see docs/results/README.md):
#   runs/seed_study-cpu/   tinylm sweep configs/seed_study.yaml --scale cpu          (2-core CPU)
#   runs/ablations/        tinylm sweep configs/ablations.yaml                        (2-core CPU)
#   runs/gpu/              PYTHONPATH=src bash bench/gpu_ablations.sh, unpacked there (one H200):
#                          the same sweeps with train.device=cuda for seeds 1337 and 1, and
#                          configs/ablation_epochs.yaml
set -euo pipefail
tl=${TINYLM:-tinylm}
R=docs/results G=runs/gpu
report() { "$tl" report "$@" > /dev/null; echo "wrote ${*: -3:1}"; }
both() { for s in 1337 1; do for r in "$@"; do echo "$G/$r" | sed "s/SEED/$s/"; done; done; }

# The study at CPU scale, on the CPU (the headline) and on the GPU with two seeds (noise).
report runs/seed_study-cpu/exp{1,2,3} --out "$R/seed-study-cpu.md" --title "Reference study, CPU scale (2-core CPU)"
"$tl" report $(both study-sSEED/exp1 study-sSEED/exp2 study-sSEED/exp3) --out "$R/seed-study-gpu-seeds.md" \
  --title "Reference study, CPU scale, two seeds (H200)" > /dev/null && echo "wrote $R/seed-study-gpu-seeds.md"

# Ablations against Exp 1 (H200, seed 1337; seed 1's numbers are in README.md's table,
# from docs/results/summary.py, and its run directories in runs/gpu/*-s1/).
ablation() {  # NAME TITLE RUN...
  local name=$1 title=$2; shift 2
  "$tl" report $(for r in "$@"; do echo "$G/${r/SEED/1337}"; done) --out "$R/ablation-$name.md" \
    --title "$title" > /dev/null
  echo "wrote $R/ablation-$name.md"
}
ablation schedule "LR schedule: constant vs warmup+cosine vs WSD, at lr 1e-3 (exp1) and 2e-3" \
  study-sSEED/exp1 ablations-sSEED/cosine ablations-sSEED/wsd \
  ablations-sSEED/lr-0.002 ablations-sSEED/cosine-lr-0.002 ablations-sSEED/wsd-lr-0.002
ablation lr "Learning rate (exp1 = 1e-3, exp2 = 5e-4)" \
  ablations-sSEED/lr-0.00025 study-sSEED/exp2 study-sSEED/exp1 ablations-sSEED/lr-0.002 ablations-sSEED/lr-0.004
ablation dropout "Dropout 0.1 (exp1) vs 0" study-sSEED/exp1 ablations-sSEED/dropout-0
ablation tied "Untied (exp1) vs tied embeddings" study-sSEED/exp1 ablations-sSEED/tied
ablation tokenizer "GPT-2 BPE (exp1) vs byte-level BPE 8k / 16k trained on the corpus" \
  study-sSEED/exp1 ablations-sSEED/bpe-8k ablations-sSEED/bpe-16k
report $G/epochs/dropout-0.1 $G/epochs/dropout-0.0 --out "$R/ablation-epochs.md" --title "16 epochs over builtin:wiki (H200)"

# The ablations that ran on the CPU too (seed 1337): agreement with the GPU runs.
cpu_runs=$(ls -d runs/ablations/*/ 2>/dev/null | grep -v logs || true)
report runs/seed_study-cpu/exp1 runs/seed_study-cpu/exp2 $cpu_runs --out "$R/ablations-cpu.md" --title "Ablations on the 2-core CPU (seed 1337)"
