"""One-shot GPU check of tinylm's speed work (about 3 minutes on one H100).

    PYTHONPATH=src python3 bench/gpu_check.py [--out DIR] [--smoke]

Checks (each recorded as passed/failed with its numbers):
  precision   fp32, bf16 autocast and fp16 + GradScaler training steps run, and their
              losses over a few steps stay close to fp32's
  chunked     the chunked output-layer loss equals the plain loss (value and gradients)
  kv_cache    greedy generation with the KV cache equals greedy without it
  compile     torch.compile: cold compile time and the speedup over eager
  train       tokens/s and peak memory, tinylm vs transformers' GPT2LMHeadModel,
              seed-d128 batch 32 and seed-d256 batch 16, block 128
  generate    greedy tokens/s with a KV cache, batch 1 and 8, tinylm vs transformers
Writes DIR/results.json and DIR/results.md (DIR defaults to $OUT, else ./gpu_out).
Random tokens only: nothing is downloaded. --smoke runs the same code on the CPU with
tiny sizes in seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from tinylm.config import MODEL_PRESETS, ModelConfig, OptimConfig
from tinylm.generate import generate
from tinylm.loss import chunked_next_token_loss, next_token_loss
from tinylm.model import GPT
from tinylm.precision import autocast, grad_scaler
from tinylm.training.optim import build_optimizer


@dataclasses.dataclass
class Setup:
    device: torch.device
    smoke: bool

    def configs(self) -> dict[str, tuple[ModelConfig, int]]:
        """name -> (model config, batch size): the reference configs, or tiny ones."""
        if self.smoke:
            tiny = ModelConfig(vocab_size=512, block_size=32, n_layer=1, n_head=2, n_embd=32)
            return {"tiny-d32": (tiny, 4), "tiny-d64": (dataclasses.replace(tiny, n_embd=64), 2)}
        return {
            "seed-d128": (MODEL_PRESETS["seed-d128"], 32),
            "seed-d256": (MODEL_PRESETS["seed-d256"], 16),
        }

    def precisions(self) -> list[str]:
        return ["fp32", "bf16", "fp16"] if self.device.type == "cuda" else ["fp32", "bf16"]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def tokens(cfg: ModelConfig, batch: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=g).to(device)


def hf_model(cfg: ModelConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.block_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            activation_function="gelu",
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            tie_word_embeddings=False,
        )
    )


class Stepper:
    """tinylm's training step (autocast, loss, scaler, clip, fused AdamW) for either model."""

    def __init__(self, model, impl: str, precision: str, x: torch.Tensor, device) -> None:
        self.model, self.impl, self.precision, self.x, self.device = (
            model,
            impl,
            precision,
            x,
            device,
        )
        self.forward = model
        if impl == "tinylm":
            self.opt = build_optimizer(model, OptimConfig())
        else:
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
        self.scaler = grad_scaler(precision, device)

    def step(self) -> torch.Tensor:
        with autocast(self.precision, self.device):
            if self.impl == "tinylm":
                loss = chunked_next_token_loss(self.forward, self.x)
            else:
                loss = self.forward(input_ids=self.x, labels=self.x).loss
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach()


def check_precision(s: Setup) -> dict:
    cfg, batch = next(iter(s.configs().values()))
    cfg = dataclasses.replace(cfg, dropout=0.0)
    x = tokens(cfg, batch, s.device)
    curves = {}
    for precision in s.precisions():
        torch.manual_seed(0)
        st = Stepper(GPT(cfg).to(s.device), "tinylm", precision, x, s.device)
        curves[precision] = [st.step().item() for _ in range(10 if s.smoke else 30)]
    ref = curves["fp32"]
    worst = {p: max(abs(a - b) / a for a, b in zip(ref, c, strict=True)) for p, c in curves.items()}
    learned = ref[-1] < ref[0] - 0.5
    return {
        "passed": learned and all(w < 0.03 for w in worst.values()),
        "max_rel_diff_vs_fp32": worst,
        "curves": curves,
    }


def check_chunked(s: Setup) -> dict:
    cfg, batch = next(iter(s.configs().values()))
    cfg = dataclasses.replace(cfg, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(cfg).to(s.device)
    x = tokens(cfg, batch, s.device)
    out = {}
    for name, fn in (
        ("plain", lambda: next_token_loss(model(x), x)),
        ("chunked", lambda: chunked_next_token_loss(model, x)),
    ):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        out[name] = (loss.item(), [p.grad.clone() for p in model.parameters()])
    loss_diff = abs(out["plain"][0] - out["chunked"][0])
    grad_rel = max(
        ((a - b).norm() / a.norm()).item()
        for a, b in zip(out["plain"][1], out["chunked"][1], strict=True)
    )
    return {
        "passed": loss_diff < 1e-4 and grad_rel < 1e-3,
        "loss_plain": out["plain"][0],
        "loss_chunked": out["chunked"][0],
        "max_rel_grad_diff": grad_rel,
    }


def check_kv_cache(s: Setup) -> dict:
    cfg, _ = next(iter(s.configs().values()))
    torch.manual_seed(0)
    model = GPT(cfg).to(s.device).eval()
    prompt = tokens(cfg, 4, s.device)[:, : cfg.block_size // 2]
    new = cfg.block_size  # runs past block_size, where the cache gives way to recomputing
    cached = generate(model, prompt, new, temperature=0, use_cache=True)
    plain = generate(model, prompt, new, temperature=0, use_cache=False)
    return {"passed": bool(torch.equal(cached, plain)), "tokens_compared": int(cached.numel())}


def check_compile(s: Setup) -> dict:
    if s.smoke:
        return {"passed": True, "skipped": "smoke mode (compiling on a CPU takes minutes)"}
    cfg, batch = next(iter(s.configs().values()))
    x = tokens(cfg, batch, s.device)
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        eager = Stepper(GPT(cfg).to(s.device), "tinylm", precision, x, s.device)
        torch.manual_seed(0)
        comp = Stepper(GPT(cfg).to(s.device), "tinylm", precision, x, s.device)
        comp.forward = torch.compile(comp.model)
        s.sync()
        t = time.perf_counter()
        comp.step()
        s.sync()
        cold = time.perf_counter() - t
        e = timed(s, eager.step, 3, 10)
        c = timed(s, comp.step, 3, 10)
        out[precision] = {
            "first_step_s": cold,
            "eager_step_ms": e * 1e3,
            "compiled_step_ms": c * 1e3,
            "speedup": e / c,
        }
    return {"passed": True, **out}


def timed(s: Setup, fn, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    s.sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        s.sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_train(s: Setup) -> dict:
    rows = []
    for name, (cfg, batch) in s.configs().items():
        x = tokens(cfg, batch, s.device)
        for precision in s.precisions():
            for impl in ("tinylm", "transformers"):
                torch.manual_seed(0)
                model = (GPT(cfg) if impl == "tinylm" else hf_model(cfg)).to(s.device).train()
                st = Stepper(model, impl, precision, x, s.device)
                if s.device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                step_s = timed(s, st.step, 3, 5 if s.smoke else 20)
                peak = (
                    torch.cuda.max_memory_allocated() / 2**20 if s.device.type == "cuda" else None
                )
                rows.append(
                    {
                        "config": name,
                        "batch": batch,
                        "precision": precision,
                        "impl": impl,
                        "tokens_per_s": x.numel() / step_s,
                        "peak_mb": peak,
                    }
                )
                del st, model
    return {"passed": True, "rows": rows}


def bench_generate(s: Setup) -> dict:
    cfg, _ = next(iter(s.configs().values()))
    new = 8 if s.smoke else 100
    rows = []
    for impl in ("tinylm", "transformers"):
        torch.manual_seed(0)
        model = (GPT(cfg) if impl == "tinylm" else hf_model(cfg)).to(s.device).eval()
        for batch in (1, 8):
            prompt = tokens(cfg, batch, s.device)[:, :16]

            def run(model=model, prompt=prompt, impl=impl):
                if impl == "tinylm":
                    return generate(model, prompt, new, temperature=0)
                with torch.no_grad():
                    return model.generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                        pad_token_id=0,
                    )

            sec = timed(s, run, 1, 2 if s.smoke else 3)
            rows.append({"impl": impl, "batch": batch, "tokens_per_s": batch * new / sec})
    return {"passed": True, "rows": rows}


CHECKS = {
    "precision": check_precision,
    "chunked": check_chunked,
    "kv_cache": check_kv_cache,
    "compile": check_compile,
    "train": bench_train,
    "generate": bench_generate,
}


def to_markdown(results: dict) -> str:
    lines = [
        f"# tinylm GPU check: {results['device']}",
        "",
        f"torch {results['torch']}, {results['seconds']:.0f} s, smoke={results['smoke']}",
        "",
        "| check | passed |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v.get('passed')} |" for k, v in results["checks"].items()]
    train = results["checks"].get("train", {}).get("rows", [])
    if train:
        lines += [
            "",
            "| config | precision | tinylm tok/s | transformers tok/s | ratio "
            "| tinylm MB | transformers MB |",
            "|---|---|---|---|---|---|---|",
        ]
        by = {(r["config"], r["precision"], r["impl"]): r for r in train}
        for (cfg, prec, impl), a in by.items():
            if impl != "tinylm":
                continue
            b = by[(cfg, prec, "transformers")]
            mem = (
                f"{a['peak_mb']:.0f} | {b['peak_mb']:.0f}" if a["peak_mb"] is not None else "- | -"
            )
            lines.append(
                f"| {cfg} | {prec} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | "
                f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {mem} |"
            )
    gen = results["checks"].get("generate", {}).get("rows", [])
    if gen:
        lines += [
            "",
            "| generation batch | tinylm tok/s | transformers tok/s | ratio |",
            "|---|---|---|---|",
        ]
        by = {(r["batch"], r["impl"]): r for r in gen}
        for batch in (1, 8):
            a, b = by[(batch, "tinylm")], by[(batch, "transformers")]
            lines.append(
                f"| {batch} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | "
                f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x |"
            )
    for k in ("precision", "chunked", "kv_cache", "compile"):
        v = {key: val for key, val in results["checks"].get(k, {}).items() if key != "curves"}
        lines += ["", f"`{k}`: `{json.dumps(v)}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_out"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in seconds")
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma-separated subset")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --smoke to run on the CPU", file=sys.stderr)
        return 2
    s = Setup(torch.device("cpu" if args.smoke else "cuda"), args.smoke)
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops: a second thread would only wait on a busy machine
    start = time.perf_counter()
    results = {
        "device": torch.cuda.get_device_name() if s.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "checks": {},
    }
    for name in args.checks.split(","):
        t = time.perf_counter()
        try:
            results["checks"][name] = CHECKS[name](s)
        except Exception as err:  # record and go on: one failure must not hide the others
            results["checks"][name] = {
                "passed": False,
                "error": repr(err),
                "traceback": traceback.format_exc(),
            }
        results["checks"][name]["seconds"] = time.perf_counter() - t
        print(
            f"{name}: passed={results['checks'][name]['passed']} "
            f"({results['checks'][name]['seconds']:.1f} s)",
            flush=True,
        )
    results["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0 if all(c["passed"] for c in results["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
