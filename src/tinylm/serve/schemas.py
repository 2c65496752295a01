"""Request bodies of the OpenAI-compatible API, as pydantic models (strict JSON types).

Unknown fields are refused, as OpenAI does ("Unrecognized request argument"), so a typo
never silently means the default. Limits that depend on the model or the server's caps
(context length, max_tokens, n) are checked in app.py, where those are known.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

NonNegInt = Annotated[int, Field(ge=0)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False
    """Send a last chunk (before [DONE]) with the request's token usage."""


class SamplingFields(BaseModel):
    """Fields /v1/completions and /v1/chat/completions share."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    """A served model's id (GET /v1/models)."""
    max_tokens: int | None = None
    """New tokens to generate at most; prompt + max_tokens must fit the model's context."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    """0 = greedy."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=-1)] = 0
    """Keep the k likeliest tokens; 0 or -1 = all (not in OpenAI's API; as vLLM)."""
    stop: str | list[str] | None = None
    """Up to 4 texts that end the output (not included in it)."""
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    """Same seed, same request -> same output, whatever else the server is doing (up to
    float rounding between batch shapes, which can rarely flip a draw; docs/serve.md)."""
    n: Annotated[int, Field(ge=1)] = 1
    """Completions per prompt (choice i uses seed + i)."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    """Accepted for compatibility; only 0 is supported."""
    frequency_penalty: float = 0.0
    """Accepted for compatibility; only 0 is supported."""
    user: str | None = None
    """Accepted and ignored."""


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    """Text, several texts, token ids, or several lists of token ids."""
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    """Log-probability of each chosen token and of the `logprobs` likeliest."""
    echo: bool = False
    """Put the prompt in front of the output (and its tokens' logprobs, if asked)."""
    best_of: int | None = None
    """Accepted when equal to n (or null); anything else is refused."""
    suffix: None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = None
    """The newer name of max_tokens; give one or the other."""
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    prompt: str


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    tokens: list[NonNegInt]
