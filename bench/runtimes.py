"""One model, four runtimes: greedy tokens/s and parity of tinylm's exports, in one run.

    flock /tmp/tinylm-heavy.lock nice -n 19 .venv/bin/python bench/runtimes.py
    (llama.cpp needs `make llamacpp`; writes bench/runtimes.json, prints a Markdown table)

For each model (seed-d128: the reference GPT-2-family model, 13.3M parameters untied;
modern-d128: the llama family, tied, 6.8M), with weights drawn at random (norm gains
from U(0.5, 1.5), so no weight is a trivial one), the same 8-token prompt is continued
greedily for 120 tokens (8 + 120 = the 128-token context) at batch 1 and 2 threads by:

    tinylm         tinylm's generate (KV cache), fp32
    transformers   the --format hf export, AutoModelForCausalLM.generate (KV cache), fp32
    onnxruntime    the --format onnx export; no KV cache: each step runs the whole window
    llama.cpp      the --format gguf export (f32, f16, q8_0) through node-llama-cpp's
                   prebuilt binaries (KV cache); timed inside node, model load excluded;
                   also at 1 thread (ggml's threads spin-wait, which a busy machine punishes)

Runtimes are interleaved round by round (--rounds, median of the rounds' times), each
round timing every runtime once; the first, warm-up round is not counted. Parity against
tinylm is measured on the same prompt: max |Δlogit| over all positions (transformers,
onnxruntime), max |Δ log p| and |Δp| of the next-token distribution (llama.cpp exposes
probabilities, not logits), equal token ids for a sample text (llama.cpp's tokenizer),
and whether the 120 greedy tokens are equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # tinylm's default, for every side

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tinylm.config import MODEL_PRESETS, Config  # noqa: E402
from tinylm.data.tokenizer import get_tokenizer  # noqa: E402
from tinylm.generate import generate  # noqa: E402
from tinylm.interop.tokenizer import SAMPLE_TEXT  # noqa: E402
from tinylm.model import GPT  # noqa: E402
from tinylm.training.checkpoint import save_checkpoint  # noqa: E402

HERE = Path(__file__).resolve().parent
PROMPT = "The history of the city began in the"
THREADS = 2


def make_checkpoint(path: Path, preset: str) -> GPT:
    """A randomly initialised preset model saved as a tinylm checkpoint (GPT-2 tokenizer)."""
    config = dataclasses.replace(MODEL_PRESETS[preset], dropout=0.0)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.uniform_(0.5, 1.5)
    tok = get_tokenizer("gpt2")
    run_config = Config(model=config)
    run_config.data.path = str(path.parent / "no-dataset")
    meta = {"step": 0, "tokenizer": {"name": tok.name, "fingerprint": tok.fingerprint}}
    save_checkpoint(path, model, run_config, meta)
    return model.eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_model(preset: str, work: Path, rounds: int, new_tokens: int) -> dict:
    import onnxruntime as ort
    import transformers

    from tinylm.interop.gguf import export_gguf
    from tinylm.interop.hf import export_hf
    from tinylm.interop.llamacpp import llamacpp_available, run_llamacpp
    from tinylm.interop.onnx import export_onnx, onnx_greedy, onnx_session

    model = make_checkpoint(work / preset / "ckpt", preset)
    config = model.config
    tok = get_tokenizer("gpt2")
    prompt = tok.encode(PROMPT)
    idx = torch.tensor([prompt])
    export_hf(work / preset / "ckpt", work / preset / "hf")
    export_onnx(work / preset / "ckpt", work / preset / "onnx")
    types = ("f32", "f16", "q8_0") if llamacpp_available() else ()
    ggufs = {}
    for t in types:
        export_gguf(work / preset / "ckpt", work / preset / f"gguf-{t}", t)
        ggufs[t] = work / preset / f"gguf-{t}" / "model.gguf"
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        work / preset / "hf", dtype=torch.float32
    ).eval()
    session = onnx_session(ort, work / preset / "onnx" / "model.onnx", threads=THREADS)

    def run_tinylm():
        with torch.no_grad():
            out = generate(model, idx, new_tokens, temperature=0.0)
        return out[0, len(prompt) :].tolist()

    def run_hf():
        with torch.no_grad():
            out = hf.generate(
                idx, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens
            )
        return out[0, len(prompt) :].tolist()

    def run_onnx():
        return onnx_greedy(session, prompt, new_tokens, config.block_size, stop=None)

    def run_llamacpp_type(t, threads):
        def go():
            answer = run_llamacpp({"model": str(ggufs[t]), "prompt": prompt, "greedy": new_tokens,
                                   "context": config.block_size, "threads": threads})  # fmt: skip
            return answer["greedy"], answer["greedy_seconds"]

        return go

    runners = {"tinylm": run_tinylm, "transformers": run_hf, "onnxruntime": run_onnx}
    # ggml's threads spin at every barrier: on a shared 2-core machine one thread can beat two.
    runners |= {
        f"llama.cpp {t}, {n} thread{'s' if n > 1 else ''}": run_llamacpp_type(t, n)
        for t in types
        for n in (THREADS, 1)
    }
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, list[int]] = {}
    for r in range(rounds + 1):  # round 0 warms up every runtime
        for name, fn in runners.items():
            result, wall = timed(fn)
            ids, wall = result if name.startswith("llama.cpp") else (result, wall)
            outputs[name] = ids
            if r > 0:
                seconds[name].append(wall)
        print(f"{preset}: round {r}/{rounds} done", flush=True)

    # Parity on the prompt, against tinylm in fp32.
    with torch.no_grad():
        ours = model(idx)[0]  # (T, V)
        ours_p = torch.softmax(ours[-1], -1).numpy()
        hf_logits = hf(idx).logits[0]
    onnx_logits = session.run(["logits"], {"input_ids": idx.numpy()})[0][0]
    rows = {}
    for name, secs in seconds.items():
        made = len(outputs[name])
        row = {
            "tokens_per_s": made / statistics.median(secs),
            "median_seconds": statistics.median(secs),
            "new_tokens": made,
            "greedy_equal": outputs[name] == outputs["tinylm"],
            "greedy_equal_prefix": next(
                (
                    i
                    for i, (a, b) in enumerate(zip(outputs[name], outputs["tinylm"], strict=False))
                    if a != b
                ),
                made,
            ),  # fmt: skip
        }
        if name == "transformers":
            row["max_abs_logit_diff"] = float((hf_logits - ours).abs().max())
        if name == "onnxruntime":
            row["max_abs_logit_diff"] = float(np.abs(onnx_logits - ours.numpy()).max())
        if name.startswith("llama.cpp"):
            t = name.split()[1].rstrip(",")
            answer = run_llamacpp({"model": str(ggufs[t]), "texts": [SAMPLE_TEXT], "prompt": prompt,
                                   "probabilities": True, "context": config.block_size,
                                   "vocab_size": config.vocab_size})  # fmt: skip
            p = np.array(answer["probabilities"])
            row["max_abs_log_prob_diff"] = float(np.abs(np.log(p) - np.log(ours_p)).max())
            row["max_abs_prob_diff"] = float(np.abs(p - ours_p).max())
            row["token_ids_equal"] = answer["ids"][0] == tok.encode(SAMPLE_TEXT)
            row["file_mib"] = ggufs[t].stat().st_size / 2**20
        rows[name] = row
    return {"preset": preset, "parameters": model.num_parameters(), "runtimes": rows}


def table(results: list[dict]) -> str:
    lines = [
        "| model | runtime | tokens/s | × tinylm | greedy = tinylm | max Δ vs tinylm |",
        "|---|---|---:|---:|---|---|",
    ]
    for result in results:
        base = result["runtimes"]["tinylm"]["tokens_per_s"]
        for name, row in result["runtimes"].items():
            if "max_abs_logit_diff" in row:
                delta = f"logit {row['max_abs_logit_diff']:.1e}"
            elif "max_abs_log_prob_diff" in row:
                delta = (f"log p {row['max_abs_log_prob_diff']:.1e}, "
                         f"p {row['max_abs_prob_diff']:.1e}")  # fmt: skip
            else:
                delta = "—"
            same = "yes" if row["greedy_equal"] else f"first {row['greedy_equal_prefix']}"
            lines.append(
                f"| {result['preset']} | {name} | {row['tokens_per_s']:.0f} | "
                f"{row['tokens_per_s'] / base:.2f} | {same} | {delta} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["seed-d128", "modern-d128"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=120)
    parser.add_argument("--out", type=Path, default=HERE / "runtimes.json")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_model(p, Path(tmp), args.rounds, args.new_tokens) for p in args.presets]
    import onnxruntime
    import transformers

    from tinylm.interop.llamacpp import LLAMACPP_DIR

    lock = json.loads((LLAMACPP_DIR / "package.json").read_text())["dependencies"]
    report = {
        "command": "flock /tmp/tinylm-heavy.lock nice -n 19 .venv/bin/python bench/runtimes.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({THREADS} threads used), "
        "shared with other jobs",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
            "node-llama-cpp": lock["node-llama-cpp"],
        },  # fmt: skip
        "prompt_tokens": len(get_tokenizer("gpt2").encode(PROMPT)),
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
