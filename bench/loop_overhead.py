"""What the training loop costs beyond its step, and how fast evaluation runs, in one run.

    PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/loop_overhead.py

For each model size, rounds of (interleaved, order alternating per round, after two
untimed bare steps that let the process settle on this size):
  bare   the step alone, in this process: forward, chunked loss, backward, clip, fused
         AdamW, on batches already in memory (on the device), in the precision `tinylm
         train` resolves; steps timed after warmup steps, the device synchronised at the end
  train  `tinylm train` (the real CLI, in this process) on the same model, data, batch
         and precision; its tokens/s is read from its own metrics.jsonl: the tokens and
         elapsed_s between its first record after warmup and its last, so start-up, the
         final checkpoint and plot are outside the window (validation is off: it is not
         counted in the trainer's tokens/s either)
  eval   `tinylm.evaluate.evaluate` on the first --eval-tokens tokens of the train split,
         with its defaults (the model `train` just wrote), tokens/s of the forward passes
Reported per size: medians over rounds of each, train/bare (median of the per-round
ratios, which is what interleaving makes robust on a shared machine) and eval/train.

Sizes (block 128, dropout 0.1 as the defaults):
  tiny       2 layers, n_embd 64, 4 heads, byte vocab (256), batch 16: a CPU step of ms
  small      4 layers, n_embd 128, 4 heads, byte vocab (256), batch 16
  seed-d128  the reference preset (GPT-2 vocab 50,257), batch 32
  seed-d256  the reference preset, batch 16
  modern-d128  the modern family's preset, batch 32 (not in the default set; for GPU runs)

Writes bench/loop_overhead.json (--out) and the markdown table between the
loop-overhead markers in bench/RESULTS.md (--no-markdown to leave it). Runs on CUDA when
one is present (--device).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as tinylm's CLI
import torch  # noqa: E402

SIZES: dict[str, dict] = {
    "tiny": {"tokenizer": "bytes", "batch": 16,
             "model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 256}},
    "small": {"tokenizer": "bytes", "batch": 16,
              "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "vocab_size": 256}},
    "seed-d128": {"tokenizer": "gpt2", "batch": 32, "model": {"preset": "seed-d128"}},
    "seed-d256": {"tokenizer": "gpt2", "batch": 16, "model": {"preset": "seed-d256"}},
    # Not in the default set (the CPU tables): the modern family's default, for GPU runs.
    "modern-d128": {"tokenizer": "gpt2", "batch": 32, "model": {"preset": "modern-d128"}},
}  # fmt: skip
DEFAULT_SIZES = "tiny,small,seed-d128,seed-d256"
BEGIN, END = "<!-- loop-overhead:begin -->", "<!-- loop-overhead:end -->"


def model_config(size: str):
    from tinylm.config import MODEL_PRESETS, ModelConfig

    fields = dict(SIZES[size]["model"])
    preset = fields.pop("preset", None)
    base = MODEL_PRESETS[preset] if preset else ModelConfig()
    import dataclasses

    return dataclasses.replace(base, **fields)


def overrides(size: str) -> list[str]:
    fields = SIZES[size]["model"]
    if "preset" in fields:
        return [f"model={fields['preset']}"]
    return [f"model.{k}={v}" for k, v in fields.items()]


# ---------------------------------------------------------------- the three measurements


def bare(size: str, data: Path, device: torch.device, precision: str, warmup: int, steps: int
         ) -> tuple[float, float]:  # fmt: skip
    """Tokens/s of the step alone (the work `tinylm train` cannot avoid): over the whole
    window, and from the median step (CPU; on CUDA the window's)."""
    from tinylm.data.dataset import PreparedDataset
    from tinylm.data.loader import BlockLoader
    from tinylm.loss import chunked_next_token_loss
    from tinylm.model import GPT
    from tinylm.precision import autocast
    from tinylm.training.optim import build_optimizer

    cfg = model_config(size)
    torch.manual_seed(1337)
    model = GPT(cfg).to(device)
    model.train()
    optimizer = build_optimizer(model, _optim_config())
    loader = BlockLoader(
        PreparedDataset.open(data).tokens("train"), cfg.block_size, SIZES[size]["batch"], 1337
    )
    batches = [loader.next_batch().to(device) for _ in range(8)]  # in memory, on the device
    params = list(model.parameters())

    def step(batch: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = chunked_next_token_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    _sync(device)
    times = [time.perf_counter()]
    for i in range(steps):
        step(batches[i % len(batches)])
        if device.type != "cuda":  # per-step times only where they need no sync
            times.append(time.perf_counter())
    _sync(device)
    times.append(time.perf_counter())
    tokens = batches[0].numel()
    window = steps * tokens / (times[-1] - times[0])
    per_step = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    return window, (tokens / statistics.median(per_step) if device.type != "cuda" else window)


def train(size: str, data: Path, run: Path, device: torch.device, precision: str, warmup: int,
          steps: int, *extra: str) -> tuple[float, float, float]:  # fmt: skip
    """`tinylm train` tokens/s between its first record after warmup and its last, and from
    the median of its records' step-to-step times (CPU, log_interval 1); and the seconds of
    its first step (with train.compile=true: compiling)."""
    from tinylm.cli import main

    batch = SIZES[size]["batch"]
    args = ["train", f"data.path={data}", *overrides(size), f"train.batch_size={batch}",
            f"train.max_steps={warmup + steps}", "data.val_split=", f"train.device={device}",
            f"train.precision={precision}", *extra, "--out", str(run), "--overwrite"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    first = next(r for r in train if r["step"] >= warmup)
    last = train[-1]
    assert last["step"] - first["step"] >= steps // 2, "too few records after warmup"
    window = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
    after = [r for r in train if r["step"] >= first["step"]]
    pairs = zip(after[:-1], after[1:], strict=True)
    rates = [(b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])
             for a, b in pairs if b["step"] == a["step"] + 1]  # fmt: skip
    median = statistics.median(rates) if rates and device.type != "cuda" else window
    return window, median, train[0]["elapsed_s"]


def evaluate_speed(size: str, data: Path, run: Path, device: torch.device, tokens: int,
                   **kwargs) -> tuple[float, float]:  # fmt: skip
    """(tokens/s, loss) of evaluate() with its defaults on the first `tokens` train tokens."""
    from tinylm.data.dataset import PreparedDataset
    from tinylm.evaluate import evaluate
    from tinylm.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, device)
    dataset = PreparedDataset.open(data)
    split = dataset.tokens("train")[:tokens]
    params = inspect.signature(evaluate).parameters
    if "batch_size" in params and params["batch_size"].default is inspect.Parameter.empty:
        kwargs.setdefault("batch_size", 32)  # `tinylm eval`'s default before it chose its own
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    args = (ckpt.model, split, ckpt.config.model.block_size)
    evaluate(*args, device=device, max_batches=1, **kwargs)  # warm-up (allocations)
    _sync(device)
    start = time.perf_counter()
    result = evaluate(*args, device=device, token_bytes=dataset.tokenizer.token_bytes, **kwargs)
    _sync(device)
    return result.tokens / (time.perf_counter() - start), result.loss


def record_cost(tmp: Path, n: int = 2000) -> dict[str, float]:
    """Microseconds per metrics record (a train record's fields), JSON only and with
    TensorBoard: what train.log_interval=1 adds to every step."""
    from tinylm.training.metrics import MetricsLog

    record = {"kind": "train", "step": 0, "tokens": 0, "elapsed_s": 0.0, "epoch": 0.1,
              "loss": 3.2, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 1e4,
              "skipped_steps": 0}  # fmt: skip
    out = {}
    for name, tb in (("json", None), ("json+tensorboard", tmp / "tb")):
        log = MetricsLog(tmp / f"metrics-{name}.jsonl", tb, None)
        start = time.perf_counter()
        for i in range(n):
            log.write({**record, "step": i})
        out[name] = (time.perf_counter() - start) / n * 1e6
        log.close()
    return out


def _optim_config():
    from tinylm.config import OptimConfig

    return OptimConfig()  # the trainer's defaults: AdamW 1e-3, clip 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- data, report


def prepare_data(root: Path, tokenizer: str) -> Path:
    from tinylm.data.prepare import PrepareOptions, prepare

    out = root / f"wiki-{tokenizer}"
    if not (out / "manifest.json").exists():
        prepare(PrepareOptions(sources=["builtin:wiki"], out=out, tokenizer=tokenizer))
    return out


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
            f"torch {torch.__version__}, load average at start {load:.1f}")  # fmt: skip


def summarize(rounds: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for size, rs in rounds.items():
        b = statistics.median(r["bare"] for r in rs)
        t = statistics.median(r["train"] for r in rs)
        row = {"size": size, "batch": SIZES[size]["batch"], "bare": b, "train": t,
               "ratio": statistics.median(r["train"] / r["bare"] for r in rs),
               "ratio_window": statistics.median(r["train_window"] / r["bare_window"]
                                                 for r in rs),
               "ratios": [r["train"] / r["bare"] for r in rs]}  # fmt: skip
        if "compiled" in rs[0]:
            first = rs[0]
            row.update(compile_first_step_s=first["compile_first_step_s"],
                       compiled=first["compiled"],
                       compiled_vs_bare=first["compiled"] / b)  # fmt: skip
        if rs[0].get("eval"):
            e = statistics.median(r["eval"] for r in rs)
            row.update(eval=e, eval_vs_train=e / t, eval_loss=rs[-1]["eval_loss"])
            if rs[0].get("eval_fp32"):
                row.update(eval_fp32=statistics.median(r["eval_fp32"] for r in rs),
                           eval_fp32_loss=rs[-1]["eval_fp32_loss"])  # fmt: skip
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; {result['date']}; precision {result['precision']} "
        f"(both sides), device {result['device']}; {result['steps']} timed steps after "
        f"{result['warmup']} warm-up steps per side, {result['rounds']} interleaved rounds. "
        "Tokens/s from the median step time of each side (robust to bursts of load from other "
        "jobs); the last column divides whole-window averages instead.",
        "",
        "| size | batch | bare loop tokens/s | `tinylm train` tokens/s | train / bare "
        "| per round | train / bare, whole windows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per = ", ".join(f"{x:.0%}" for x in r["ratios"])
        lines.append(f"| {r['size']} | {r['batch']} | {r['bare']:,.0f} | {r['train']:,.0f} | "
                     f"{r['ratio']:.1%} | {per} | {r['ratio_window']:.1%} |")  # fmt: skip
    if "record_us" in result:
        us = result["record_us"]
        lines += ["", f"One metrics record (train.log_interval=1: one per step) costs "
                  f"{us['json']:.0f} µs as a JSON line and {us['json+tensorboard']:.0f} µs with "
                  "TensorBoard's scalars (train.tensorboard=true), timed over 2,000 "
                  "records."]  # fmt: skip
    if any("compiled" in r for r in result["rows"]):
        lines += [
            "",
            "`train.compile=true` (one run per size: the first step includes compiling):",
            "",
            "| size | first step (compiles), s | compiled tokens/s | vs the bare eager loop "
            "| compile time / time saved per step |",
            "|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            if "compiled" not in r:
                continue
            tokens = r["batch"] * 128
            saved = tokens / r["train"] - tokens / r["compiled"]  # s per step
            payback = f"{r['compile_first_step_s'] / saved:,.0f} steps" if saved > 0 else "never"
            lines.append(f"| {r['size']} | {r['compile_first_step_s']:.1f} | {r['compiled']:,.0f} "
                         f"| {r['compiled_vs_bare']:.2f}x | {payback} |")  # fmt: skip
    if any("eval" in r for r in result["rows"]):
        lines += [
            "",
            "Evaluation (`tinylm.evaluate.evaluate` as `tinylm eval` calls it: precision auto, "
            "batch size 0 = chosen by evaluate; before those options existed, fp32 at `tinylm "
            "eval`'s batch of 32), on the model `train` wrote, the first tokens of the train "
            "split; per size: "
            + ", ".join(f"{k} {v:,}" for k, v in result["eval_tokens"].items())
            + "):",
            "",
            "| size | eval tokens/s | eval / train | loss | fp32 eval tokens/s | fp32 loss | "
            "difference |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            if "eval" not in r:
                continue
            fp32 = r.get("eval_fp32")
            diff = f"{r['eval_loss'] - r['eval_fp32_loss']:+.2e}" if fp32 else "-"
            lines.append(
                f"| {r['size']} | {r['eval']:,.0f} | {r['eval_vs_train']:.1f}x | "
                f"{r['eval_loss']:.5f} | {f'{fp32:,.0f}' if fp32 else '-'} | "
                f"{r['eval_fp32_loss']:.5f} | {diff} |"
                if fp32 else f"| {r['size']} | {r['eval']:,.0f} | {r['eval_vs_train']:.1f}x | "
                f"{r['eval_loss']:.5f} | - | - | - |"
            )  # fmt: skip
    return "\n".join(lines)


def write_markdown(text: str, path: Path, label: str) -> None:
    block = f"{BEGIN}\n### {label}\n\n{text}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"of {', '.join(SIZES)}")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="interleaved rounds; even, so each side goes first equally often",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    parser.add_argument(
        "--steps", default="40,20,6,6", help="timed steps per size (one number or one per size)"
    )
    parser.add_argument(
        "--eval-tokens",
        default="65536,32768,16384,16384",
        help="tokens per eval measurement (one number or one per size; 0: none)",
    )
    parser.add_argument(
        "--no-eval-fp32",
        dest="eval_fp32",
        action="store_false",
        help="skip the fp32 evaluation (the difference against fp32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time `tinylm train train.compile=true` (first round only)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", type=Path, help="prepared datasets kept here (default: temp)")
    parser.add_argument("--out", type=Path, default=HERE / "loop_overhead.json")
    parser.add_argument("--label", default="Loop overhead", help="markdown section title")
    parser.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()

    from tinylm.device import resolve_device
    from tinylm.precision import resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    sizes = args.sizes.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    steps_of = {s: steps[min(i, len(steps) - 1)] for i, s in enumerate(sizes)}
    eval_tokens = [int(s) for s in args.eval_tokens.split(",")]
    eval_of = {s: eval_tokens[min(i, len(eval_tokens) - 1)] for i, s in enumerate(sizes)}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data or Path(tmp)
        data = {s: prepare_data(data_root, SIZES[s]["tokenizer"]) for s in sizes}
        rounds: dict[str, list[dict]] = {s: [] for s in sizes}
        for k in range(args.rounds):
            for size in sizes:
                run = Path(tmp) / f"run-{size}"
                r: dict = {}
                order = ("bare", "train") if k % 2 == 0 else ("train", "bare")
                # Untimed: after another size's work (an eval at a large batch) the first
                # steps of a size ran slower whichever side came first (the allocator
                # settling); this absorbs it so that order does not decide the ratio.
                bare(size, data[size], device, precision, 1, 2)
                for side in order:
                    if side == "bare":
                        r["bare_window"], r["bare"] = bare(
                            size, data[size], device, precision, args.warmup, steps_of[size]
                        )
                    else:
                        r["train_window"], r["train"], _ = train(
                            size, data[size], run, device, precision, args.warmup, steps_of[size]
                        )
                if args.compile and k == 0:  # once: compiling is slow, its cost stable
                    _, r["compiled"], r["compile_first_step_s"] = train(
                        size, data[size], Path(tmp) / f"compiled-{size}", device, precision,
                        args.warmup, steps_of[size], "train.compile=true",
                    )  # fmt: skip
                if eval_of[size]:
                    # As `tinylm eval` runs it: its default precision and batch size.
                    r["eval"], r["eval_loss"] = evaluate_speed(
                        size, data[size], run, device, eval_of[size], precision="auto"
                    )
                    if args.eval_fp32:
                        r["eval_fp32"], r["eval_fp32_loss"] = evaluate_speed(
                            size, data[size], run, device, eval_of[size], precision="fp32"
                        )
                print(f"round {k + 1} {size}: " + ", ".join(
                    f"{key} {v:,.1f}" for key, v in r.items()), flush=True)  # fmt: skip
                rounds[size].append(r)
        records = record_cost(Path(tmp))
    result = {
        "record_us": records,
        "command": "PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/loop_overhead.py "
        + " ".join(sys.argv[1:]),
        "machine": machine(device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device),
        "precision": precision,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "steps": args.steps,
        "eval_tokens": eval_of,
        "rows": summarize(rounds),
        "raw": rounds,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    if not args.no_markdown:
        write_markdown(text, args.markdown, args.label)


if __name__ == "__main__":
    main()
