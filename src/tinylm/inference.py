"""A trained run, loaded once for inference: the chain every reading command shares.

    RUN or checkpoint dir ─► checkpoint (config, meta, weights) on a device
        ─► tokenizer (the one it trained with, fingerprint checked)
        ─► stop tokens (end of text + one-token texts)
        ─► precision (weights cast once) ─► model in eval mode

`tinylm generate`, `eval`, `export` and `serve` all start from `load_for_inference`, so a
checkpoint is found, checked and placed the same way everywhere. `TextDecoder` turns a
stream of token ids into text that never ends in half a UTF-8 character.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from tinylm.config import INFERENCE_PRECISIONS
from tinylm.device import resolve_device
from tinylm.errors import TinyLMError
from tinylm.model import GPT
from tinylm.precision import DTYPES, resolve_precision
from tinylm.rundir import RunDir
from tinylm.training.checkpoint import Checkpoint, load_checkpoint


@dataclass
class InferenceRun:
    """A checkpoint ready for inference. The tokenizer is read on first use, so a command
    that needs only the weights (export of a gpt2 model) never needs the dataset."""

    checkpoint: Checkpoint
    device: torch.device
    precision: str
    """The weights' precision: fp32 or bf16 (cast once, at load)."""

    @property
    def model(self) -> GPT:
        return self.checkpoint.model

    @property
    def block_size(self) -> int:
        return self.checkpoint.config.model.block_size

    @property
    def step(self) -> int:
        return self.checkpoint.meta["step"]

    @cached_property
    def run(self) -> RunDir | None:
        """The run directory the checkpoint belongs to (None for a loose checkpoint)."""
        return RunDir.of_checkpoint(self.checkpoint.path)

    @cached_property
    def tokenizer(self) -> Any:  # -> Tokenizer (imported lazily, as in data.dataset)
        """The tokenizer the model trained with; refused if the dataset's is another."""
        from tinylm.data.dataset import model_tokenizer

        return model_tokenizer(self.checkpoint.meta["tokenizer"], self.checkpoint.config.data.path)

    def stop_tokens(self, texts: Iterable[str] = ()) -> list[int]:
        """End of text, plus each text given; each must be exactly one token."""
        stops = [self.tokenizer.eot_id]
        for text in texts:
            ids = self.tokenizer.encode(text)
            if len(ids) != 1:
                raise TinyLMError(
                    f"stop text {text!r} is {len(ids)} tokens; give text that is exactly one token"
                )
            stops.append(ids[0])
        return stops


def load_for_inference(
    source: str | Path, device: str | torch.device = "auto", precision: str = "fp32"
) -> InferenceRun:
    """Load a run's latest checkpoint (or a checkpoint directory) for inference.

    precision: fp32, bf16 or auto (fp32 on a CPU, the training precision on a GPU).
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if precision not in INFERENCE_PRECISIONS:
        raise TinyLMError(
            f"unknown inference precision {precision!r}; use {', '.join(INFERENCE_PRECISIONS)}"
        )
    if precision == "auto":
        precision = "fp32" if device.type == "cpu" else resolve_precision("auto", device)
        precision = "bf16" if precision == "fp16" else precision  # fp16 weights overflow
    else:
        precision = resolve_precision(precision, device)
    ckpt = load_checkpoint(source, device)
    ckpt.model.to(DTYPES[precision]).eval()
    return InferenceRun(ckpt, device, precision)


@dataclass
class Sampling:
    """How to continue a prompt; `check` refuses values that would silently mean another."""

    max_new_tokens: int = 100
    temperature: float = 0.8
    """0 = greedy."""
    top_k: int = 50
    """Keep the k likeliest tokens; 0 = all."""
    top_p: float = 0.95
    """Nucleus sampling mass; 1 = off."""
    seed: int = 0
    stop: tuple[str, ...] = ()
    """Texts that also end a sample (each one token); end of text always does."""
    use_cache: bool = True

    def check(self) -> None:
        if self.max_new_tokens <= 0:
            raise TinyLMError("max_new_tokens must be positive")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise TinyLMError("temperature must be 0 (greedy) or a positive number")
        if self.top_k < 0:
            raise TinyLMError("top_k must be 0 (all tokens) or a positive number")
        if not 0 < self.top_p <= 1:  # also refuses NaN
            raise TinyLMError("top_p must be in (0, 1]")


def complete(
    loaded: InferenceRun,
    prompts: Sequence[str],
    sampling: Sampling,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """Continue every prompt in one batch (KV cache); returns each prompt + continuation.

    An empty prompt starts at a document boundary. `on_text` receives the first row's new
    text as it is generated, in whole characters (for streaming one sample to a terminal).
    """
    from tinylm.generate import FINISHED, stream

    sampling.check()
    tokenizer = loaded.tokenizer
    stops = loaded.stop_tokens(sampling.stop)
    prompt_ids = [tokenizer.encode(t) if t else [tokenizer.eot_id] for t in prompts]
    generator = torch.Generator(device=loaded.device).manual_seed(sampling.seed)
    decoders = [TextDecoder(tokenizer) for _ in prompts]
    for step in stream(
        loaded.model,
        prompt_ids,
        sampling.max_new_tokens,
        sampling.temperature,
        sampling.top_k,
        sampling.top_p,
        generator,
        stop_tokens=stops,
        use_cache=sampling.use_cache,
    ):
        for i, token in enumerate(step.tolist()):
            if token != FINISHED and token not in stops:
                new = decoders[i].add([token])
                if i == 0 and on_text is not None and new:
                    on_text(new)
    tails = [d.flush() for d in decoders]
    if on_text is not None and tails[0]:
        on_text(tails[0])
    return [prompt + d.shown for prompt, d in zip(prompts, decoders, strict=True)]


@dataclass
class TextDecoder:
    """Token ids in, text out, only ever in whole characters: a token that ends mid-UTF-8
    sequence is held back until the next one completes it (or the stream ends)."""

    tokenizer: Any
    ids: list[int] = field(default_factory=list)
    shown: str = ""

    def add(self, ids: Sequence[int]) -> str:
        """The new text that `ids` complete ('' while a character is still cut)."""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # possibly a character cut mid-UTF-8: hold it back
            return ""
        new, self.shown = text[len(self.shown) :], text
        return new

    def flush(self) -> str:
        """Whatever was held back, as the tokenizer decodes it (a real U+FFFD stays)."""
        text = self.tokenizer.decode(self.ids)
        new, self.shown = text[len(self.shown) :], text
        return new
