"""`tinylm export RUN OUT --format gguf`: one file for llama.cpp, Ollama and LM Studio.

    OUT/model.gguf    weights, hyper-parameters and tokenizer, written with the `gguf`
                      package (llama.cpp's own Python writer)
    OUT/Modelfile     `ollama create NAME -f OUT/Modelfile`: tinylm's sampling defaults,
                      <|endoftext|> as the stop token, the prompt passed through as is

The architecture is the model's family (family.py): `gpt2` (learned positions, fused
q|k|v, biases), `llama` (query and key rows reordered to llama.cpp's adjacent-pair RoPE)
or `qwen3` (QK-norm; rotate-half RoPE as tinylm). The tokenizer is GPT-2's BPE (all of
it, or gpt2-N: its first merges) or a byte-level BPE tokenizer.json with GPT-2's
pre-tokenizer, all llama.cpp's `gpt2` tokenizer model; anything else is refused in one
line.

Weight types: f32 (exact), f16 (matrices in half precision, norms and biases in f32, as
llama.cpp's own converter does) and q8_0 (matrices whose rows are multiples of 32 in
8-bit blocks of 32 with one fp16 scale each, the rest as in f16).

The written file is read back with gguf's reader before it is put in place: every key
and every tensor (dequantized) must be what was meant to be written. That llama.cpp
computes tinylm's numbers from it is checked by the tests (tests/test_gguf.py) with
real llama.cpp; docs/interop.md gives the measured differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.atomic import built_dir
from tinylm.config import GGUF_TYPES
from tinylm.data.dataset import model_tokenizer
from tinylm.data.tokenizer import EOT
from tinylm.errors import TinyLMError
from tinylm.inference import load_for_inference
from tinylm.interop.family import Family, export_family
from tinylm.interop.hf import SAMPLING, check_output_dir
from tinylm.interop.tokenizer import GGUF_PRE_TOKENIZER, GgufVocab, gguf_vocab

GGUF_FILE = "model.gguf"
Q8_BLOCK = 32
"""q8_0 quantizes rows in blocks of 32 values; a matrix whose rows are not a multiple of
32 long stays in f16."""


@dataclass
class GgufResult:
    out: Path
    num_parameters: int
    family: Family
    weight_type: str
    tokenizer: str
    file_bytes: int
    max_weight_error: float
    """Largest |written - tinylm| over every weight, read back (0 for f32)."""


def require_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise TinyLMError(
            "exporting to GGUF needs the gguf package: pip install 'tinylm[gguf]' (or gguf==0.19.0)"
        ) from None
    return gguf


def export_gguf(
    source: str | Path, out: str | Path, weight_type: str = "f32", overwrite: bool = False
) -> GgufResult:
    """Write the checkpoint (or a run's latest) as OUT/model.gguf (+ an Ollama Modelfile)."""
    gguf = require_gguf()
    if weight_type not in GGUF_TYPES:
        raise TinyLMError(f"--type {weight_type}: GGUF weights are {', '.join(GGUF_TYPES)}")
    out = Path(out)
    ckpt = load_for_inference(source, device="cpu", precision="fp32").checkpoint
    config = ckpt.config.model
    family = export_family(config, "GGUF")  # refuses what no llama.cpp architecture expresses
    dataset = Path(ckpt.config.data.path)
    name = ckpt.meta["tokenizer"]["name"]
    vocab = gguf_vocab(name, dataset if dataset.is_dir() else None, config.vocab_size)
    if vocab.kind == "tokenizer.json":  # refuse a dataset re-prepared with another
        model_tokenizer(ckpt.meta["tokenizer"], dataset)  # tokenizer since training
    check_output_dir(out, overwrite, source)
    model = ckpt.model  # fp32, eval mode
    tensors = {k: v.float().cpu().numpy() for k, v in family.gguf_tensors(model).items()}
    keys = gguf_keys(family, config, vocab, weight_type, _model_name(source))
    with built_dir(out) as tmp:
        file = tmp / GGUF_FILE
        types = write_gguf(gguf, file, family.gguf_arch, keys, tensors, weight_type)
        error = check_gguf(gguf, file, keys, tensors, types)
        (tmp / "Modelfile").write_text(ollama_modelfile(config.block_size))
        size = file.stat().st_size
    return GgufResult(out, model.num_parameters(), family, weight_type, vocab.kind, size, error)


def gguf_keys(
    family: Family, config: Any, vocab: GgufVocab, weight_type: str, name: str
) -> dict[str, Any]:
    """Every metadata key of the file (general.architecture is added by the writer)."""
    arch = family.gguf_arch
    keys: dict[str, Any] = {
        "general.name": name,
        "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[weight_type],  # LlamaFileType
        "general.quantization_version": 2,
    }
    keys |= {f"{arch}.{k}": v for k, v in family.gguf_hparams(config).items()}
    keys |= {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": GGUF_PRE_TOKENIZER,
        "tokenizer.ggml.tokens": vocab.tokens,
        "tokenizer.ggml.token_type": vocab.types,
        "tokenizer.ggml.merges": vocab.merges,
        # One end-of-text token separates documents: it is bos, eos and eot, never
        # added to a prompt (tinylm trains on text that does not start with it).
        "tokenizer.ggml.bos_token_id": vocab.eos_id,
        "tokenizer.ggml.eos_token_id": vocab.eos_id,
        "tokenizer.ggml.eot_token_id": vocab.eos_id,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False,
    }
    return keys


def tensor_type(gguf: Any, name: str, array: np.ndarray, weight_type: str) -> Any:
    """The GGML type a tensor is stored as: vectors (norms, biases) always f32."""
    q = gguf.GGMLQuantizationType
    if weight_type == "f32" or array.ndim == 1:
        return q.F32
    if weight_type == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
        return q.Q8_0
    return q.F16


def write_gguf(
    gguf: Any,
    file: Path,
    arch: str,
    keys: dict[str, Any],
    tensors: dict[str, np.ndarray],
    weight_type: str,
) -> dict[str, Any]:
    """Write keys and tensors; returns each tensor's GGML type."""
    writer = gguf.GGUFWriter(file, arch)
    for key, value in keys.items():
        _add_key(gguf, writer, key, value)
    types = {}
    for name, array in tensors.items():
        types[name] = tensor_type(gguf, name, array, weight_type)
        writer.add_tensor(name, gguf.quantize(array, types[name]), raw_dtype=types[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def _add_key(gguf: Any, writer: Any, key: str, value: Any) -> None:
    """ints as uint32 and floats as float32 (the types llama.cpp insists on), lists of
    ints as int32 arrays (token types), bools, strings and string lists as themselves."""
    v = gguf.GGUFValueType
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif value and isinstance(value[0], int):
        writer.add_key_value(key, list(value), v.ARRAY, sub_type=v.INT32)
    else:
        writer.add_array(key, value)


def check_gguf(
    gguf: Any,
    file: Path,
    keys: dict[str, Any],
    tensors: dict[str, np.ndarray],
    types: dict[str, Any],
) -> float:
    """Read the file back: every key and tensor must be there, exactly as meant. Returns
    the largest |stored - original| weight (0 for f32). A mismatch is an export bug."""
    stored = read_gguf(gguf, file)
    for key, value in keys.items():
        value = float(np.float32(value)) if isinstance(value, float) else value  # as stored
        if stored["keys"].get(key) != value:
            raise RuntimeError(f"{file}: key {key} reads back as {stored['keys'].get(key)!r}")
    if set(stored["tensors"]) != set(tensors):
        raise RuntimeError(f"{file}: tensors {sorted(set(stored['tensors']) ^ set(tensors))}")
    error = 0.0
    for name, original in tensors.items():
        kind, array = stored["tensors"][name]
        expected = gguf.dequantize(gguf.quantize(original, types[name]), types[name])
        if kind != types[name] or array.shape != original.shape:
            raise RuntimeError(f"{file}: tensor {name} reads back as {kind.name} {array.shape}")
        if not np.array_equal(array, expected.reshape(original.shape)):
            raise RuntimeError(f"{file}: tensor {name} reads back with other values")
        error = max(error, float(np.abs(array - original).max()))
    return error


def read_gguf(gguf: Any, file: Path) -> dict[str, Any]:
    """{'keys': {key: value}, 'tensors': {name: (GGML type, float32 array in torch's
    shape)}} of a GGUF file, through gguf's own reader (no llama.cpp)."""
    reader = gguf.GGUFReader(file)
    keys = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the header's own fields (version, counts)
            continue
        keys[key] = field.contents()
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims inner-first
        values = gguf.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        tensors[t.name] = (t.tensor_type, values.astype(np.float32))
    return {"keys": keys, "tensors": tensors}


def ollama_modelfile(context: int) -> str:
    """An Ollama Modelfile for the GGUF beside it: raw completion (no chat template),
    tinylm's sampling defaults, stop at end of text."""
    return (
        f"# ollama create NAME -f Modelfile && ollama run NAME 'The history of'\n"
        f"FROM ./{GGUF_FILE}\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        f"PARAMETER num_ctx {context}\n"
        f"PARAMETER temperature {SAMPLING['temperature']}\n"
        f"PARAMETER top_k {SAMPLING['top_k']}\n"
        f"PARAMETER top_p {SAMPLING['top_p']}\n"
        f'PARAMETER stop "{EOT}"\n'
    )


def _model_name(source: str | Path) -> str:
    """general.name: the run directory's name (or the checkpoint's)."""
    path = Path(source).resolve()
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.name
