"""The modern family against the transformers class it exports to, measured in one run.

    PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/modern.py

For modern-d128 and modern-d256 (RoPE, RMSNorm, SwiGLU, no biases, tied output; block 128,
GPT-2 vocabulary) tinylm's GPT and transformers' LlamaForCausalLM are built with the same
sizes and the very same weights (the Llama one from tinylm's export adapter), then run the
same training loop on random tokens: forward, next-token loss, backward, gradient clipping,
fused AdamW (tinylm's parameter groups on both sides).

  train   tokens/s: the two sides' steps interleaved (who goes first alternates), median
          step time after a warmup step; fp32 and bf16 autocast
  memory  peak training memory: max RSS of a fresh process running a few steps, minus its
          RSS after the imports (weights + gradients + AdamW state + activations)

Writes bench/modern-results.json and prints a markdown table.
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

if "--worker" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # tinylm's default, for both sides

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = {"modern-d128": 32, "modern-d256": 16}  # preset -> batch size (block 128)


def build(impl: str, preset: str, same_weights: bool = True) -> torch.nn.Module:
    """tinylm's GPT, or the LlamaForCausalLM it exports to, with the same sizes and (with
    same_weights) tinylm's initial weights copied by the export adapter."""
    import transformers

    from tinylm.config import MODEL_PRESETS
    from tinylm.interop.family import export_family
    from tinylm.model import GPT

    cfg = MODEL_PRESETS[preset]
    torch.manual_seed(0)
    ours = GPT(cfg)  # first, so both sides get the weights of the same seed
    if impl == "tinylm":
        return ours
    family = export_family(cfg)
    hf_config = family.hf_config(cfg, bos_id=50256, eos_id=50256)
    model = getattr(transformers, family.architecture)(
        getattr(transformers, family.config_class)(**hf_config)
    )
    if same_weights:
        weights = family.to_hf(ours)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model


class Side:
    """One implementation's optimizer step, as tinylm's trainer does it."""

    def __init__(self, impl: str, preset: str, precision: str, same_weights: bool = True) -> None:
        from tinylm.config import OptimConfig
        from tinylm.training.optim import build_optimizer

        self.impl, self.precision = impl, precision
        self.model = build(impl, preset, same_weights).train()
        self.opt = build_optimizer(self.model, OptimConfig())
        self.batch = torch.randint(0, 50257, (CONFIGS[preset], 128))

    def loss(self) -> torch.Tensor:
        from tinylm.loss import chunked_next_token_loss

        if self.impl == "tinylm":
            return chunked_next_token_loss(self.model, self.batch)
        return self.model(input_ids=self.batch, labels=self.batch).loss

    def step(self) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return time.perf_counter() - start


def train(warmup: int, steps: int) -> list[dict]:
    rows = []
    for preset, batch in CONFIGS.items():
        for precision in ("fp32", "bf16"):
            pair = [Side("tinylm", preset, precision), Side("transformers", preset, precision)]
            times: dict[str, list[float]] = {s.impl: [] for s in pair}
            for i in range(warmup + steps):
                for side in pair if i % 2 == 0 else pair[::-1]:
                    dt = side.step()
                    if i >= warmup:
                        times[side.impl].append(dt)
            for side in pair:
                med = statistics.median(times[side.impl])
                rows.append({"config": preset, "batch": batch, "impl": side.impl,
                             "precision": precision, "step_s": med,
                             "tokens_per_s": side.batch.numel() / med})  # fmt: skip
                print(f"train {preset} {precision} {side.impl}: "
                      f"{side.batch.numel() / med:,.0f} tok/s", flush=True)  # fmt: skip
    return rows


def memory(steps: int) -> list[dict]:
    rows = []
    for preset in CONFIGS:
        for precision in ("fp32", "bf16"):
            for impl in ("tinylm", "transformers"):
                cmd = [sys.executable, __file__, "--worker", impl, preset, precision, str(steps)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"config": preset, "impl": impl, "precision": precision, **res})
                print(f"memory {preset} {precision} {impl}: {res['peak_mb']:.0f} MB", flush=True)
    return rows


def run_worker(impl: str, preset: str, precision: str, steps: int) -> dict:
    import transformers  # noqa: F401  (imports are the baseline, not the peak)

    import tinylm.model  # noqa: F401

    base_kb = _status_kb("VmRSS")
    side = Side(impl, preset, precision, same_weights=False)  # one model only
    for _ in range(steps):
        side.step()
    return {"peak_mb": (_status_kb("VmHWM") - base_kb) / 1024}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def table(r: dict) -> str:
    train = {(x["config"], x["precision"], x["impl"]): x for x in r["train"]}
    mem = {(x["config"], x["precision"], x["impl"]): x for x in r.get("memory", [])}
    lines = [
        "| config | precision | tinylm tok/s | Llama tok/s | ratio | tinylm peak MB | "
        "Llama peak MB | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset in CONFIGS:
        for prec in ("fp32", "bf16"):
            a, b = train[(preset, prec, "tinylm")], train[(preset, prec, "transformers")]
            ma, mb = mem.get((preset, prec, "tinylm")), mem.get((preset, prec, "transformers"))
            memory_cells = "- | - | -"
            if ma and mb:
                a_mb, b_mb = ma["peak_mb"], mb["peak_mb"]
                memory_cells = f"{a_mb:,.0f} | {b_mb:,.0f} | {a_mb / b_mb:.2f}x"
            lines.append(
                f"| {preset} | {prec} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | "
                f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {memory_cells} |"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        impl, preset, precision, steps = sys.argv[2:6]
        print(json.dumps(run_worker(impl, preset, precision, int(steps))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per side")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    args = parser.parse_args()
    import transformers

    r: dict = {
        "command": "PYTHONPATH=src python bench/modern.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },  # fmt: skip
        "train": train(warmup=1, steps=args.steps),
    }
    if not args.no_memory:
        r["memory"] = memory(steps=2)
    (HERE / "modern-results.json").write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))


if __name__ == "__main__":
    main()
