"""The shared load-for-inference chain and the whole-character text decoder."""

from __future__ import annotations

import pytest
import torch

from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.inference import Sampling, TextDecoder, complete, load_for_inference


def test_text_decoder_never_emits_half_a_character():
    tok = get_tokenizer("gpt2")
    text = "tea 🍵 and 日本語 ok"
    ids = tok.encode(text)
    decoder = TextDecoder(tok)
    pieces = [decoder.add([i]) for i in ids]
    assert any(p == "" for p in pieces)  # the emoji spans several byte-level tokens
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + decoder.flush() == text


def test_text_decoder_flush_keeps_a_real_cut_character():
    tok = get_tokenizer("bytes")
    decoder = TextDecoder(tok)
    assert decoder.add(list("é".encode())[:1]) == ""  # first byte of a 2-byte character
    assert decoder.flush() == "\ufffd"


def test_load_for_inference_reads_run_tokenizer_and_stops(tiny_run):
    loaded = load_for_inference(tiny_run, "cpu", "bf16")
    assert loaded.precision == "bf16"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert not loaded.model.training
    assert loaded.run is not None and loaded.run.path == tiny_run
    assert loaded.stop_tokens(["\n"]) == [50256, 198]
    with pytest.raises(TinyLMError, match="exactly one token"):
        loaded.stop_tokens(["two words"])
    assert load_for_inference(tiny_run, "cpu", "auto").precision == "fp32"  # faster at batch 1


def test_complete_streams_the_first_row_and_matches_its_result(tiny_run):
    loaded = load_for_inference(tiny_run, "cpu")
    shown: list[str] = []
    prompts = ["The history of", "In 1990"]
    out = complete(loaded, prompts, Sampling(max_new_tokens=12, seed=3), shown.append)
    assert out[0] == prompts[0] + "".join(shown)
    again = complete(loaded, prompts, Sampling(max_new_tokens=12, seed=3))
    assert again == out  # the seed fixes the samples


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -1.0),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", float("nan")),
        ("max_new_tokens", 0),
    ],
)
def test_sampling_refuses_values_that_would_mean_something_else(field, value):
    with pytest.raises(TinyLMError, match=field):
        Sampling(**{field: value}).check()
