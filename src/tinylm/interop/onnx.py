"""`tinylm export RUN OUT --format onnx`: the model for onnxruntime (Python, C++, web).

    OUT/model.onnx    GPT.forward as an ONNX graph (opset 18, torch.onnx.export with the
                      dynamo exporter, which needs onnxscript): input_ids int64 (batch, T)
                      -> logits float32 (batch, T, vocab_size); batch and T are dynamic
                      (1 <= T <= block_size)
    OUT/model.json    what a caller needs beside it: model config, tokenizer, eot id
    OUT/tokenizer.json  the tokenizer (GPT-2's or the dataset's BPE), for tokenizers in
                      Python or transformers.js in a browser (none for `bytes`: UTF-8
                      bytes are the ids, end of text 0)

The graph has no key/value cache inputs: each step recomputes the whole window, which
for tinylm's context lengths (128-1024 tokens) keeps the file simple and every runtime
able to run it (docs/interop.md has the measured cost). Before it is put in place the file
is run in onnxruntime (CPU) on two input shapes, and its logits must be within 1e-4 of
tinylm's.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tinylm.atomic import built_dir
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.inference import load_for_inference
from tinylm.interop.hf import check_logits, check_output_dir, random_tokens
from tinylm.interop.tokenizer import export_tokenizer

ONNX_FILE = "model.onnx"
OPSET = 18


@dataclass
class OnnxResult:
    out: Path
    num_parameters: int
    max_logit_diff: float
    """Largest |onnxruntime logit - tinylm logit| on the check's random inputs (fp32)."""


def require_onnx() -> Any:
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError:
        raise TinyLMError(
            "exporting to ONNX needs onnx, onnxscript and onnxruntime: pip install "
            "'tinylm[onnx]' (or onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.31.1)"
        ) from None
    return onnxruntime


def export_onnx(source: str | Path, out: str | Path, overwrite: bool = False) -> OnnxResult:
    ort = require_onnx()
    out = Path(out)
    ckpt = load_for_inference(source, device="cpu", precision="fp32").checkpoint
    check_output_dir(out, overwrite, source)
    model, config = ckpt.model, ckpt.config.model  # fp32, eval mode
    example = random_tokens(config)  # (2, block_size)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("T", max=config.block_size)}
    dataset = Path(ckpt.config.data.path)
    with built_dir(out) as tmp:
        name = ckpt.meta["tokenizer"]["name"]
        if name == "bytes":  # UTF-8 bytes are their own ids: no file needed beside it
            eot_id = get_tokenizer("bytes").eot_id
        else:
            where = dataset if dataset.is_dir() else None
            eot_id = export_tokenizer(name, where, tmp, config.block_size).eos_id
            for extra in ("tokenizer_config.json", "special_tokens_map.json"):
                (tmp / extra).unlink(missing_ok=True)  # transformers' settings: not needed
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")  # the exporter's notes are not the user's
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input_ids"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                opset_version=OPSET,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        program.save(str(tmp / ONNX_FILE))
        info = {
            "model": asdict(config),
            "tokenizer": name,
            "eot_id": eot_id,
            "input": "input_ids: int64 (batch, T), 1 <= T <= block_size",
            "output": "logits: float32 (batch, T, vocab_size)",
        }
        (tmp / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        session = onnx_session(ort, tmp / ONNX_FILE)
        diff = check_logits(model, lambda idx: onnx_logits(session, idx), "onnxruntime's")
    return OnnxResult(out, model.num_parameters(), diff)


def onnx_session(ort: Any, file: Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session (threads 0: onnxruntime's default)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, idx: torch.Tensor) -> torch.Tensor:
    """onnxruntime's logits (B, T, V) for token ids idx (B, T)."""
    return torch.from_numpy(session.run(["logits"], {"input_ids": idx.numpy()})[0])


def onnx_greedy(
    session: Any, prompt: list[int], max_new_tokens: int, block_size: int, stop: int | None
) -> list[int]:
    """Greedy continuation in onnxruntime: without a key/value cache, each step runs the
    last block_size tokens whole and takes the argmax of the last position."""
    import numpy as np

    ids, new = list(prompt), []
    for _ in range(max_new_tokens):
        window = np.array([ids[-block_size:]], dtype=np.int64)  # (1, T)
        logits = session.run(["logits"], {"input_ids": window})[0]  # (1, T, V)
        token = int(logits[0, -1].argmax())
        ids.append(token)
        new.append(token)
        if token == stop:
            break
    return new


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Errors only from a logger (the exporter logs a line per optional op library)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
