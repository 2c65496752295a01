"""`tinylm eval RUN [--split val test]`: loss, perplexity and bits per byte -> RUN/eval.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.commands.options import add_checkpoint_args, number
from tinylm.config import COUNT, PRECISIONS, Limit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="loss, perplexity and bits per byte on held-out splits",
        description="Evaluate a run's latest checkpoint on whole splits of its dataset. Prints "
        "a table and records the results in RUN/eval.json.",
    )
    add_checkpoint_args(p)
    p.add_argument("--split", nargs="+", default=["val", "test"], help="splits (default: val test)")
    p.add_argument("--data", type=Path, help="dataset directory (default: the one it trained on)")
    p.add_argument(
        "--batch-size",
        type=number(int, Limit(0, COUNT)),
        default=0,
        help="blocks per forward pass (default 0: chosen for the device, 128 blocks of 128 "
        "on a CPU)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast precision of the forward passes (default auto: bf16 where the device "
        "has native bf16 matmuls, else fp32 on a CPU; the sums are fp32/fp64 in any case)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.data.dataset import PreparedDataset
    from tinylm.evaluate import evaluate
    from tinylm.inference import load_for_inference

    loaded = load_for_inference(args.run, args.device)
    config = loaded.checkpoint.config
    dataset = PreparedDataset.open(args.data or config.data.path)
    own_data = dataset.path.resolve() == Path(config.data.path).resolve()
    tok = loaded.checkpoint.meta["tokenizer"]
    dataset.check_tokenizer(tok["fingerprint"], tok["name"], "the model")
    tokenizer = dataset.tokenizer
    results = {}
    print(f"{'split':>6} {'tokens':>10} {'loss':>8} {'perplexity':>11} {'bits/byte':>10}")
    for split in args.split:
        r = evaluate(
            loaded.model,
            dataset.tokens(split),
            loaded.block_size,
            args.batch_size,
            loaded.device,
            tokenizer.token_bytes,
            precision=args.precision,
            desc=f"eval {split}",
        )
        # Results on another dataset than the run's own are kept apart from its val/test.
        key = split if own_data else f"{dataset.path}:{split}"
        results[key] = {**r.to_dict(), "dataset": str(dataset.path), "step": loaded.step}
        bpb = f"{r.bits_per_byte:.4f}" if r.bits_per_byte is not None else "-"
        print(f"{split:>6} {r.tokens:>10,} {r.loss:>8.4f} {r.perplexity:>11.2f} {bpb:>10}")
    if loaded.run is not None:
        loaded.run.record_eval_results(results)
    return 0
