"""CPU speed of tinylm against Hugging Face transformers, measured in one run.

    PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/bench.py

Sections (all on random tokens, dropout on, as in training):
  peak      matmul GFLOP/s in fp32 and bf16 (the MFU denominator, measured here)
  train     tokens/s of one optimizer step (forward, loss, backward, clip, fused AdamW),
            tinylm vs transformers' GPT2LMHeadModel with the same sizes (untied), fp32
            and bf16 autocast, steps of the two interleaved; median step times
  memory    peak training memory: max RSS of a fresh process running a few steps, minus
            its RSS after the imports (weights + gradients + AdamW state + activations)
  generate  greedy tokens/s with a KV cache, batch 1 and 8, tinylm vs transformers'
            generate, fp32 and bf16 weights, interleaved
  chunks    tinylm step time for several output-layer chunk sizes
  compile   torch.compile: cold compile time and step time, eager vs compiled
  env       THP_MEM_ALLOC_ENABLE=1 and OMP_WAIT_POLICY=PASSIVE, each a fresh process
  profile   where one tinylm training step spends its time (torch.profiler)

Writes bench/results.json and bench/RESULTS.md (tables; the notes section is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

if "--worker" not in sys.argv:  # tinylm's default (src/tinylm/__init__.py), for both sides
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = {"seed-d128": 32, "seed-d256": 16}  # preset -> batch size (block 128)
VOCAB = 50257
NOTES_MARK = "<!-- notes: kept when the tables are regenerated -->"


# ---------------------------------------------------------------- models and steps


def tinylm_model(preset: str) -> torch.nn.Module:
    from tinylm.config import MODEL_PRESETS
    from tinylm.model import GPT

    return GPT(MODEL_PRESETS[preset])


def hf_model(preset: str) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tinylm.config import MODEL_PRESETS

    cfg = MODEL_PRESETS[preset]
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu",  # exact GELU, as tinylm
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=False,
    )
    return GPT2LMHeadModel(hf_cfg)


class Trainer:
    """One implementation's optimizer step, as tinylm's trainer does it."""

    def __init__(self, impl: str, preset: str, precision: str, chunk_size: int = 0) -> None:
        torch.manual_seed(0)
        self.impl, self.precision, self.chunk_size = impl, precision, chunk_size
        self.model = tinylm_model(preset) if impl == "tinylm" else hf_model(preset)
        self.model.train()
        if impl == "tinylm":
            from tinylm.config import OptimConfig
            from tinylm.training.optim import build_optimizer

            self.opt = build_optimizer(self.model, OptimConfig())
        else:
            self.opt = torch.optim.AdamW(
                self.model.parameters(), lr=1e-3, weight_decay=0.01, fused=True
            )
        self.batch = torch.randint(0, VOCAB, (CONFIGS[preset], 128))
        self.compiled = self.model

    def loss(self) -> torch.Tensor:
        from tinylm.loss import CHUNK_SIZE, chunked_next_token_loss

        x = self.batch
        if self.impl == "tinylm":
            return chunked_next_token_loss(
                self.compiled, x, chunk_size=self.chunk_size or CHUNK_SIZE
            )
        return self.compiled(input_ids=x, labels=x).loss

    def step(self) -> float:
        start = time.perf_counter()
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = self.loss()
        else:
            loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return time.perf_counter() - start

    def tokens(self) -> int:
        return self.batch.numel()


def non_embedding_params(model: torch.nn.Module) -> int:
    """N for MFU: all parameters minus the token and position embeddings."""
    return sum(p.numel() for n, p in model.named_parameters() if "wte" not in n and "wpe" not in n)


# ---------------------------------------------------------------- sections


def peak(reps: int) -> dict:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for m, k, n in ((2048, 2048, 2048), (4096, 1024, 4096)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            a @ b
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t)
            best = max(best, 2 * m * k * n / statistics.median(times) / 1e9)
        out[name] = best
    return out


def train(warmup: int, steps: int) -> list[dict]:
    rows = []
    for preset in CONFIGS:
        for precision in ("fp32", "bf16"):
            pair = [
                Trainer("tinylm", preset, precision),
                Trainer("transformers", preset, precision),
            ]
            times: dict[str, list[float]] = {t.impl: [] for t in pair}
            for i in range(warmup + steps):
                for t in pair if i % 2 == 0 else pair[::-1]:  # alternate who goes first
                    dt = t.step()
                    if i >= warmup:
                        times[t.impl].append(dt)
            for t in pair:
                med = statistics.median(times[t.impl])
                rows.append(
                    {
                        "config": preset,
                        "batch": CONFIGS[preset],
                        "impl": t.impl,
                        "precision": precision,
                        "step_s": med,
                        "tokens_per_s": t.tokens() / med,
                        "params": sum(p.numel() for p in t.model.parameters()),
                        "non_embedding_params": non_embedding_params(t.model),
                    }
                )
                print(
                    f"train {preset} {precision} {t.impl}: {t.tokens() / med:,.0f} tok/s",
                    flush=True,
                )
            del pair
    return rows


def memory(steps: int) -> list[dict]:
    rows = []
    for preset in CONFIGS:
        for precision in ("fp32", "bf16"):
            for impl in ("tinylm", "transformers"):
                res = worker(
                    "memory", impl, preset, precision, str(steps), {"OMP_WAIT_POLICY": "PASSIVE"}
                )
                rows.append({"config": preset, "impl": impl, "precision": precision, **res})
                print(f"memory {preset} {precision} {impl}: {res['peak_mb']:.0f} MB", flush=True)
    return rows


def generate(reps: int, new_tokens: int) -> list[dict]:
    from tinylm.generate import generate as tinylm_generate

    rows = []
    models = {
        "tinylm": tinylm_model("seed-d128").eval(),
        "transformers": hf_model("seed-d128").eval(),
    }
    prompt_len = 16
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for m in models.values():
            m.to(dtype)
        for batch in (1, 8):
            prompt = torch.randint(0, VOCAB, (batch, prompt_len))
            times: dict[str, list[float]] = {k: [] for k in models}

            def run(impl: str, prompt: torch.Tensor = prompt) -> torch.Tensor:
                if impl == "tinylm":
                    return tinylm_generate(models[impl], prompt, new_tokens, temperature=0)
                with torch.no_grad():
                    return models[impl].generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                        pad_token_id=VOCAB - 1,
                    )

            for impl in models:  # warm-up
                run(impl)
            for i in range(reps):
                for impl in list(models) if i % 2 == 0 else list(models)[::-1]:
                    t = time.perf_counter()
                    out = run(impl)
                    times[impl].append(time.perf_counter() - t)
                    assert out.shape == (batch, prompt_len + new_tokens)
            for impl, ts in times.items():
                rate = batch * new_tokens / statistics.median(ts)
                rows.append(
                    {"impl": impl, "precision": precision, "batch": batch, "tokens_per_s": rate}
                )
                print(f"generate b{batch} {precision} {impl}: {rate:,.0f} tok/s", flush=True)
    return rows


def chunks(warmup: int, steps: int) -> list[dict]:
    sizes = (128, 256, 512, 1024)
    trainers = [Trainer("tinylm", "seed-d128", "bf16", chunk_size=c) for c in sizes]
    times: dict[int, list[float]] = {c: [] for c in sizes}
    for i in range(warmup + steps):
        for t in trainers:
            dt = t.step()
            if i >= warmup:
                times[t.chunk_size].append(dt)
    rows = [
        {"chunk_size": c, "tokens_per_s": 32 * 128 / statistics.median(ts)}
        for c, ts in times.items()
    ]
    for r in rows:
        print(f"chunk {r['chunk_size']}: {r['tokens_per_s']:,.0f} tok/s", flush=True)
    return rows


def compile_(warmup: int, steps: int) -> list[dict]:
    rows = []
    for precision in ("fp32", "bf16"):
        eager = Trainer("tinylm", "seed-d128", precision)
        comp = Trainer("tinylm", "seed-d128", precision)
        comp.compiled = torch.compile(comp.model)
        t = time.perf_counter()
        comp.step()  # compiles
        cold = time.perf_counter() - t
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for i in range(warmup + steps):
            for name, tr in (("eager", eager), ("compiled", comp)):
                dt = tr.step()
                if i >= warmup:
                    times[name].append(dt)
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        rows.append(
            {
                "precision": precision,
                "first_step_s": cold,
                "eager_tokens_per_s": 4096 / e,
                "compiled_tokens_per_s": 4096 / c,
                "speedup": e / c,
            }
        )
        print(f"compile {precision}: first step {cold:.0f} s, speedup {e / c:.2f}x", flush=True)
    return rows


ENVS = {  # each run in a fresh process: both are read once, when torch starts
    "OpenMP default (spin, then sleep)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "PASSIVE + THP_MEM_ALLOC_ENABLE=1": {"OMP_WAIT_POLICY": "PASSIVE", "THP_MEM_ALLOC_ENABLE": "1"},
}


def env(rounds: int, steps: int) -> list[dict]:
    results: dict[str, list[float]] = {k: [] for k in ENVS}
    for _ in range(rounds):
        for name, extra in ENVS.items():
            res = worker("steps", "tinylm", "seed-d128", "bf16", str(steps), env=extra)
            results[name].append(res["tokens_per_s"])
    rows = [{"env": k, "tokens_per_s": statistics.median(v), "runs": v} for k, v in results.items()]
    for r in rows:
        print(f"env {r['env']}: {r['tokens_per_s']:,.0f} tok/s", flush=True)
    return rows


def profile(precision: str) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tr = Trainer("tinylm", "seed-d128", precision)
    for _ in range(2):
        tr.step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step_s = tr.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    output_layer = sum(e.cpu_time_total for e in events if e.key == "_LinearCrossEntropy")
    table = events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40)
    return {
        "precision": precision,
        "step_s": step_s,
        "output_layer_share": output_layer / total,
        "table": table,
    }


# ---------------------------------------------------------------- subprocess workers


def worker(kind: str, impl: str, preset: str, precision: str, steps: str, env: dict) -> dict:
    """Run one measurement in a fresh process with exactly these speed settings."""
    cmd = [sys.executable, __file__, "--worker", kind, impl, preset, precision, steps]
    base = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "THP_MEM_ALLOC_ENABLE")
    }
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**base, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(kind: str, impl: str, preset: str, precision: str, steps: int) -> dict:
    if impl == "transformers":
        import transformers  # noqa: F401  (its import is part of the baseline, not the peak)
    base_kb = _status_kb("VmRSS")
    tr = Trainer(impl, preset, precision)
    times = [tr.step() for _ in range(steps)]
    peak_kb = _status_kb("VmHWM")  # not ru_maxrss: Linux carries that over from before exec
    return {
        "peak_mb": (peak_kb - base_kb) / 1024,
        "tokens_per_s": tr.tokens() / statistics.median(times[1:]),
    }


def _status_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in kB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


# ---------------------------------------------------------------- report


def machine() -> dict:
    import transformers

    info = Path("/proc/cpuinfo").read_text()
    cpu = next((x.split(":", 1)[1].strip() for x in info.splitlines() if "model name" in x), "?")
    flags = info
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_start": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
    }


def write_markdown(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [
        "# tinylm vs Hugging Face transformers on a CPU",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"AMX-BF16: {m['amx_bf16']}, AVX512-BF16: {m['avx512_bf16']}; Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}; {m['date']}, "
        f"OMP_WAIT_POLICY={m.get('omp_wait_policy')} for both sides; "
        f"load average at start {m['load_avg_start'][0]:.1f} (a shared machine: other jobs ran "
        "beside this one, so compare the ratios, which come from interleaved steps).",
        "",
    ]
    if "peak" in r:
        p = r["peak"]
        lines += [
            f"Measured matmul peak: fp32 {p['fp32']:,.0f} GFLOP/s, bf16 {p['bf16']:,.0f} GFLOP/s.",
            "",
        ]
    if "train" in r:
        lines += [
            "## Training tokens/s (median step, interleaved)",
            "",
            "| config | batch | precision | tinylm | transformers | ratio |",
            "|---|---|---|---|---|---|",
        ]
        by = {(x["config"], x["precision"], x["impl"]): x for x in r["train"]}
        for preset, batch in CONFIGS.items():
            for prec in ("fp32", "bf16"):
                a, b = by[(preset, prec, "tinylm")], by[(preset, prec, "transformers")]
                lines.append(
                    f"| {preset} | {batch} | {prec} | {a['tokens_per_s']:,.0f} | "
                    f"{b['tokens_per_s']:,.0f} | {a['tokens_per_s'] / b['tokens_per_s']:.2f}x |"
                )
        lines += [
            "",
            "Each side in its fastest precision:",
            "",
            "| config | tinylm | transformers | ratio | tinylm MFU (bf16 peak) |",
            "|---|---|---|---|---|",
        ]
        for preset in CONFIGS:
            a = max(
                (by[(preset, p, "tinylm")] for p in ("fp32", "bf16")),
                key=lambda x: x["tokens_per_s"],
            )
            b = max(
                (by[(preset, p, "transformers")] for p in ("fp32", "bf16")),
                key=lambda x: x["tokens_per_s"],
            )
            mfu = (
                6 * a["non_embedding_params"] * a["tokens_per_s"] / (r["peak"]["bf16"] * 1e9)
                if "peak" in r
                else float("nan")
            )
            lines.append(
                f"| {preset} | {a['tokens_per_s']:,.0f} ({a['precision']}) | "
                f"{b['tokens_per_s']:,.0f} ({b['precision']}) | "
                f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {mfu:.1%} |"
            )
        lines.append("")
    if "memory" in r:
        lines += [
            "## Peak training memory (MB above the process's RSS after imports)",
            "",
            "| config | precision | tinylm | transformers | ratio |",
            "|---|---|---|---|---|",
        ]
        by = {(x["config"], x["precision"], x["impl"]): x for x in r["memory"]}
        for preset in CONFIGS:
            for prec in ("fp32", "bf16"):
                a, b = by[(preset, prec, "tinylm")], by[(preset, prec, "transformers")]
                lines.append(
                    f"| {preset} | {prec} | {a['peak_mb']:,.0f} | {b['peak_mb']:,.0f} | "
                    f"{a['peak_mb'] / b['peak_mb']:.2f}x |"
                )
        lines.append("")
    if "generate" in r:
        lines += [
            "## Generation tokens/s (seed-d128, greedy, KV cache, 16-token prompt, 50 new tokens)",
            "",
            "| batch | weights | tinylm | transformers | ratio |",
            "|---|---|---|---|---|",
        ]
        by = {(x["batch"], x["precision"], x["impl"]): x for x in r["generate"]}
        for batch in (1, 8):
            for prec in ("fp32", "bf16"):
                a, b = by[(batch, prec, "tinylm")], by[(batch, prec, "transformers")]
                lines.append(
                    f"| {batch} | {prec} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | "
                    f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x |"
                )
        lines.append("")
    if "chunks" in r:
        lines += [
            "## Output-layer chunk size (tinylm, seed-d128 batch 32, bf16)",
            "",
            "| chunk | tokens/s |",
            "|---|---|",
        ]
        lines += [f"| {x['chunk_size']} | {x['tokens_per_s']:,.0f} |" for x in r["chunks"]] + [""]
    if "compile" in r:
        lines += [
            "## torch.compile (tinylm, seed-d128 batch 32)",
            "",
            "| precision | first step (compiles) | eager tokens/s | compiled tokens/s | speedup |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['precision']} | {x['first_step_s']:.0f} s | {x['eager_tokens_per_s']:,.0f} | "
            f"{x['compiled_tokens_per_s']:,.0f} | {x['speedup']:.2f}x |"
            for x in r["compile"]
        ] + [""]
    if "env" in r:
        lines += [
            "## Environment variables (tinylm, seed-d128 batch 32, bf16; fresh process each)",
            "",
            "| setting | tokens/s (median) | runs |",
            "|---|---|---|",
        ]
        lines += [
            f"| {x['env']} | {x['tokens_per_s']:,.0f} | "
            + ", ".join(f"{v:,.0f}" for v in x["runs"])
            + " |"
            for x in r["env"]
        ] + [""]
    if "profile" in r:
        p = r["profile"]
        lines += [
            f"## Profile of one tinylm step (seed-d128 batch 32, {p['precision']})",
            "",
            f"Step {p['step_s']:.2f} s under the profiler; the output layer and its loss "
            "(`_LinearCrossEntropy`, forward and both gradients) take "
            f"{p['output_layer_share']:.0%}.",
            "",
            "```",
            p["table"].strip(),
            "```",
            "",
        ]
    notes = ""
    if path.exists() and NOTES_MARK in path.read_text():
        notes = path.read_text().split(NOTES_MARK, 1)[1]
    path.write_text("\n".join(lines) + "\n" + NOTES_MARK + notes)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, impl, preset, precision, steps = sys.argv[2:7]
        print(json.dumps(run_worker(kind, impl, preset, precision, int(steps))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="peak,train,memory,generate,env,profile")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per side")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    r: dict = {
        "command": "PYTHONPATH=src python bench/bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
    }
    results_file = args.out / "results.json"
    if results_file.exists():  # sections not rerun keep their last results
        r = {**json.loads(results_file.read_text()), **r}
    for section in args.sections.split(","):
        t = time.time()
        if section == "peak":
            r["peak"] = peak(reps=5)
        elif section == "train":
            r["train"] = train(warmup=1, steps=args.steps)
        elif section == "memory":
            r["memory"] = memory(steps=2)
        elif section == "generate":
            r["generate"] = generate(reps=3, new_tokens=50)
        elif section == "chunks":
            r["chunks"] = chunks(warmup=1, steps=4)
        elif section == "compile":
            r["compile"] = compile_(warmup=1, steps=4)
        elif section == "env":
            r["env"] = env(rounds=2, steps=4)
        elif section == "profile":
            r["profile"] = profile("bf16")
        else:
            raise SystemExit(f"unknown section {section!r}")
        print(f"[{section}: {time.time() - t:.0f} s]", flush=True)
    results_file.write_text(json.dumps(r, indent=2) + "\n")
    write_markdown(r, args.out / "RESULTS.md")


if __name__ == "__main__":
    main()
