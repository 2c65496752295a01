#!/usr/bin/env bash
# End-to-end CUDA smoke of the whole pipeline (about 2 minutes on one H100/H200):
# train a 1k BPE and prepare (no downloads) -> train on cuda in each precision, with a
# SIGTERM and an automatic resume -> eval -> generate -> export to transformers.
#   PYTHONPATH=src bash bench/gpu_e2e.sh [OUT_DIR]
# DEVICE=cpu STEPS=20 PRECISIONS="fp32 bf16" runs the same steps on the CPU (a dry run).
# Uses only what the repository holds: its own docs and sources are the corpus.
set -euo pipefail
out=${1:-${OUT:-gpu_out}}
device=${DEVICE:-cuda} steps=${STEPS:-300} precisions=${PRECISIONS:-fp32 bf16 fp16}
mkdir -p "$out"
work=$(mktemp -d)
tl() { python3 -m tinylm "$@"; }
log() { echo "== $*" | tee -a "$out/e2e.log"; }

log "torch $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
# One document per paragraph of the repo's Markdown and Python files (a few thousand).
python3 - "$work/corpus.jsonl" <<'PY'
import json, pathlib, sys
with open(sys.argv[1], "w") as f:
    for path in sorted(pathlib.Path(".").glob("**/*.md")) + sorted(pathlib.Path("src").glob("**/*.py")):
        for para in path.read_text().split("\n\n"):
            if len(para) > 40:
                f.write(json.dumps({"text": para}) + "\n")
PY
tl tokenizer train "$work/corpus.jsonl" --vocab-size 1024 --split 90,10,0 --out "$work/tok" 2>&1 | tail -1 | tee -a "$out/e2e.log"
tl prepare "$work/corpus.jsonl" --tokenizer "$work/tok/tokenizer.json" --split 90,10,0 --out "$work/data" 2>&1 | tail -2 | tee -a "$out/e2e.log"
common=(model.vocab_size=0 model.n_layer=4 model.n_head=4 model.n_embd=256 model.block_size=256
        data.path="$work/data" train.device=$device train.batch_size=32 train.eval_interval=$((steps / 3))
        train.epochs=1000 train.eval_batches=8 train.checkpoint_interval=$((steps / 3)) train.log_interval=$((steps / 6)))
for prec in $precisions; do
  log "train $prec"
  tl train "${common[@]}" train.max_steps=$steps train.precision=$prec --out "$work/run-$prec" 2>&1 \
    | grep -v '^\s*$' | tail -3 | tee -a "$out/e2e.log"
  python3 - "$work/run-$prec/metrics.jsonl" <<'PY' | tee -a "$out/e2e.log"
import json, sys
recs = [json.loads(line) for line in open(sys.argv[1])]
val = [r["val_loss"] for r in recs if r.get("kind") == "val"]
tps = [r["tokens_per_s"] for r in recs if r.get("kind") == "train" and r.get("tokens_per_s")]
print(f"val losses {[round(v, 4) for v in val]}; tokens/s last {tps[-1]:,.0f}")
PY
done

log "SIGTERM after 3 train records, then the same command resumes (bf16)"
args=("${common[@]}" train.max_steps=$steps train.precision=bf16 --out "$work/run-resume")
python3 -m tinylm train "${args[@]}" > "$work/first.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  n=$(grep -c '"kind": "train"' "$work/run-resume/metrics.jsonl" 2>/dev/null || true)
  [ "${n:-0}" -ge 3 ] && break; sleep 0.1
done
kill -TERM $pid; wait $pid || echo "first run exit $?" | tee -a "$out/e2e.log"
tl train "${args[@]}" 2>&1 | tail -2 | tee -a "$out/e2e.log"
python3 - "$work/run-bf16/metrics.jsonl" "$work/run-resume/metrics.jsonl" <<'PY' | tee -a "$out/e2e.log"
import json, sys
def losses(p): return [(r["step"], r["loss"]) for r in map(json.loads, open(p)) if r.get("kind") == "train"]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
same = sum(x == y for x, y in zip(a, b))
print(f"resumed vs uninterrupted bf16: {same}/{len(a)} train records equal (bitwise only on CPU with one thread)")
PY

log "eval / generate / export"
tl eval "$work/run-bf16" --split val 2>&1 | tail -2 | tee -a "$out/e2e.log"
tl generate "$work/run-bf16" --prompt "tinylm " --max-new-tokens 80 --seed 0 2>&1 | tail -3 | tee -a "$out/e2e.log"
tl export "$work/run-bf16" "$work/hf" 2>&1 | tail -2 | tee -a "$out/e2e.log" || true
log "done"
