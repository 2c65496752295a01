"""Typed run configuration: dataclasses with a docstring per field, filled from YAML.

No torch import here, so `tinylm --help` and config errors stay instant.

A config file has four sections (model, data, optim, train). The model section may
name a preset (`preset: seed-d128`) whose values the other keys then override.
Command-line overrides use dotted keys: `optim.lr=5e-4`, `model=seed-d256`.
An unknown key is an error that names the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinylm.errors import TinyLMError


@dataclass
class ModelConfig:
    """The GPT's shape and components. Defaults are the reference study's Mini-GPT (seed-d128):
    learned positions, LayerNorm, a 4x GELU MLP, biases, untied output. The component fields
    (norm ... n_kv_head) pick the modern pieces; see docs/model.md for the families."""

    vocab_size: int = 0
    """Tokens in the vocabulary; 0 takes the dataset's tokenizer's (GPT-2 BPE: 50,257).
    A value that differs from the dataset's is refused."""
    block_size: int = 128
    """Longest sequence the model sees, in tokens (the context window; with learned
    positions also the size of the position table)."""
    n_layer: int = 2
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention (query) heads per block; n_embd must be divisible by it."""
    n_embd: int = 128
    """Width of the residual stream (128 or 256 in the reference study)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    bias: bool = True
    """Biases in every Linear layer and LayerNorm (the output projection never has one)."""
    tie_embeddings: bool = False
    """Share the token embedding with the output projection. The study's counts need False."""
    activation: str = "gelu"
    """MLP: 'gelu' (exact, erf), 'gelu_tanh' (GPT-2's tanh approximation), 'relu2'
    (squared ReLU), each C -> hidden -> C; or 'swiglu' (down(silu(gate(x)) * up(x)))."""
    mlp_hidden: int = 0
    """Hidden width of the MLP; 0 = 4 * n_embd, or for swiglu 8/3 * n_embd rounded up to a
    multiple of 8 (the same parameter count as a 4x two-matrix MLP, as in Llama)."""
    norm: str = "layernorm"
    """'layernorm' or 'rmsnorm': the pre-attention, pre-MLP and final normalisation."""
    norm_gain: bool = True
    """Learnable per-channel gain in every norm (LayerNorm: gain and, with bias, shift).
    False: plain normalisation with no parameters."""
    norm_eps: float = 1e-5
    """Epsilon inside the norms (torch's LayerNorm default; Llama uses 1e-5 or 1e-6)."""
    positions: str = "learned"
    """'learned' (a block_size x n_embd table added to the tokens) or 'rope' (rotary
    embeddings on queries and keys, Llama's rotate-half layout; no position parameters)."""
    rope_base: float = 10000.0
    """RoPE only: the base of the rotation frequencies (theta)."""
    qk_norm: bool = False
    """Normalise each head's queries and keys (the configured norm over the head size,
    one gain shared by all heads, as Qwen3) before RoPE and the dot product."""
    n_kv_head: int = 0
    """Key/value heads (grouped-query attention); 0 = n_head. n_head must be a multiple."""
    logit_softcap: float = 0.0
    """Soft-cap the logits as cap * tanh(logits / cap); 0 = off."""
    zero_init_proj: bool = False
    """Initialise the projections that write into the residual stream (attention output
    and MLP down-projection) to zero, so every block starts as the identity. False: GPT-2's
    0.02 / sqrt(2 * n_layer) normal init."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used (n_kv_head, or n_head when 0)."""
        return self.n_kv_head or self.n_head

    @property
    def hidden_size(self) -> int:
        """The MLP's hidden width (mlp_hidden resolved)."""
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.activation == "swiglu":
            return -(-8 * self.n_embd // 3 // 8) * 8  # ceil(8C/3) to a multiple of 8
        return 4 * self.n_embd


ACTIVATIONS = ("gelu", "gelu_tanh", "relu2", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Autocast precision of training and evaluation (tinylm.precision says what each means)."""
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
"""Weights' precision for generate/serve; auto: fp32 on a CPU (faster than bf16 at batch 1
there, bench/RESULTS.md), the training precision on a GPU."""
EXPORT_FORMATS = ("hf", "pt2", "gguf", "onnx")
"""`tinylm export --format`: transformers, torch.export, llama.cpp, onnxruntime."""
GGUF_TYPES = ("f32", "f16", "q8_0")
"""GGUF weight types (`export --type`): f32 exact; f16 and q8_0 smaller (docs/interop.md)."""

MODEL_PRESETS: dict[str, ModelConfig] = {
    # The reference study's two widths; parameter counts 13.3M and 27.3M (untied).
    "seed-d128": ModelConfig(n_embd=128, vocab_size=50257),
    "seed-d256": ModelConfig(n_embd=256, vocab_size=50257),
    # The modern family at the same widths (RoPE, RMSNorm, SwiGLU, no biases, tied output,
    # zero-initialised residual projections): exports as LlamaForCausalLM.
    "modern-d128": ModelConfig(
        n_embd=128, vocab_size=50257, dropout=0.0, bias=False, tie_embeddings=True,
        activation="swiglu", norm="rmsnorm", positions="rope", zero_init_proj=True,
    ),
    "modern-d256": ModelConfig(
        n_embd=256, vocab_size=50257, dropout=0.0, bias=False, tie_embeddings=True,
        activation="swiglu", norm="rmsnorm", positions="rope", zero_init_proj=True,
    ),
    # tinylm's recipe for a CPU (docs/results/recipe.md): the modern family, 4 blocks of 256,
    # over GPT-2's BPE cut to 8,192 tokens (tokenizer gpt2-8192); configs/recipe_*min.yaml.
    "recipe-d256": ModelConfig(
        n_layer=4, n_embd=256, vocab_size=8192, dropout=0.0, bias=False, tie_embeddings=True,
        activation="swiglu", norm="rmsnorm", positions="rope", zero_init_proj=True,
    ),
}  # fmt: skip


@dataclass
class DataConfig:
    """Where the training tokens come from: a directory written by `tinylm prepare`."""

    path: str = "data/wiki"
    """Prepared dataset directory (holds manifest.json and one token file per split)."""
    train_split: str = "train"
    """Split to train on."""
    val_split: str = "val"
    """Split for periodic validation; empty string disables validation."""
    sampling: str = "blocks"
    """Training windows: 'blocks' (non-overlapping, each once per epoch in a seeded order,
    the reference study's setup) or 'random' (as many windows per epoch at random offsets)."""


@dataclass
class OptimConfig:
    """AdamW (or Muon + AdamW) with gradient clipping and a learning-rate schedule
    (constant AdamW in the study)."""

    optimizer: str = "adamw"
    """'adamw' for every parameter, or 'muon': torch.optim.Muon for the 2-D matrices inside
    the blocks and AdamW (the fields below) for embeddings, output layer, norms, biases."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (the reference study used 1e-3 and 5e-4, constant)."""
    weight_decay: float = 0.01
    """AdamW's, on weight matrices only; never on biases, norms or the position table."""
    muon_lr: float = 0.02
    """Muon only: peak learning rate of the block matrices (the reference Muon's 0.02;
    torch's own default is 1e-3). The schedule scales it as it scales lr."""
    muon_momentum: float = 0.95
    """Muon only: momentum (Nesterov)."""
    muon_weight_decay: float = 0.0
    """Muon only: decoupled weight decay, applied as w -= lr * wd * w (torch's default is
    0.1, the reference Muon's 0)."""
    muon_ns_steps: int = 5
    """Muon only: Newton-Schulz iterations that orthogonalise each update."""
    muon_adjust_lr: str = "original"
    """Muon only: update scale per matrix shape, 'original' (sqrt(max(1, rows/cols)), the
    reference's) or 'match_rms_adamw' (0.2 * sqrt(max(rows, cols)), Moonshot's)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.999
    """AdamW second-moment decay (PyTorch's default, as the study used)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    schedule: str = "constant"
    """'constant' (the study's), 'cosine' (warmup then cosine decay) or 'wsd'
    (warmup, stable, then a cooldown over the last decay_fraction, shaped by decay_shape)."""
    schedule_unit: str = "steps"
    """The unit of warmup and schedule_length: 'steps', 'tokens', or 'time': fractions of
    the wall-clock budget train.max_minutes (wall time, summed over resumes; e.g.
    warmup=0.05 is the first 5% of the minutes), so a timed run decays when its time ends."""
    warmup: float = 0.0
    """Linear warmup from 0 to lr over this many steps (tokens, or fraction of the time
    budget); 0 = none."""
    schedule_length: float = 0.0
    """Where the decay ends, in schedule units; 0 = the run's step, token or time budget."""
    decay_fraction: float = 0.2
    """WSD only: the share of schedule_length spent decaying (the rest is stable)."""
    decay_shape: str = "linear"
    """WSD only: the cooldown from lr to lr * min_lr_ratio, 'linear' or '1-sqrt'
    (lr falls as 1 - sqrt(progress): fast at first, then slowly)."""
    min_lr_ratio: float = 0.1
    """Cosine and WSD decay to lr * min_lr_ratio (and stay there)."""


OPTIMIZERS = ("adamw", "muon")
SCHEDULE_UNITS = ("steps", "tokens", "time")
DECAY_SHAPES = ("linear", "1-sqrt")
MUON_ADJUST_LR = ("original", "match_rms_adamw")


@dataclass
class TrainConfig:
    """The training loop: batch, budget, evaluation cadence, seed and device."""

    batch_size: int = 32
    """Sequences of block_size tokens per micro-step, summed over all processes (one
    process: its forward pass; N processes under torchrun: batch_size / N each)."""
    grad_accum: int = 1
    """Micro-steps whose gradients add up to one optimizer step. The global batch is
    batch_size * grad_accum sequences whatever the number of processes."""
    epochs: float = 2.0
    """Passes over the training blocks (the study ran 2). Fractions allowed."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 means no step limit."""
    max_tokens: int = 0
    """Stop once this many training tokens have been seen; 0 means no token limit."""
    max_minutes: float = 0.0
    """Stop after this much wall-clock time (training and validation, summed over resumes);
    0 = no limit."""
    eval_interval: int = 200
    """Measure validation loss every this many steps (and at the end); 0 disables."""
    eval_interval_tokens: int = 0
    """Also measure validation loss each time this many more tokens have been seen; 0 = off."""
    eval_batches: int = 20
    """Validation batches per measurement (the same fixed batches every time); 0 = whole split."""
    log_interval: int = 1
    """Write a metrics.jsonl record every this many steps."""
    early_stop_patience: int = 0
    """Stop after this many validations in a row without improvement; 0 = never stop early."""
    early_stop_min_delta: float = 0.0
    """A validation loss must beat the best by more than this to count as an improvement."""
    checkpoint_interval: int = 1000
    """Save a resumable checkpoint every this many steps (and at the end); 0 = at the end only."""
    keep_checkpoints: int = 2
    """Keep this many most recent checkpoints (the best one is kept besides)."""
    max_skipped_steps: int = 10
    """Steps with a non-finite loss or gradient are skipped; stop after this many in total."""
    tensorboard: bool = True
    """Also write TensorBoard event files to RUN/tensorboard/."""
    seed: int = 1337
    """The one seed: model init, data order, dropout (python, numpy and torch RNGs)."""
    device: str = "auto"
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""
    num_threads: int = 0
    """CPU threads for torch; 0 keeps torch's default (one per core)."""
    init_from: str = ""
    """Start from this checkpoint's weights (e.g. one written by `tinylm import`); its model
    section replaces model.*. Empty: a freshly initialised model."""
    precision: str = "auto"
    """auto, fp32, bf16 or fp16 (CUDA only). auto: bf16 where the hardware has native bf16
    matmuls (recent x86 CPUs, most GPUs), else fp16 on CUDA, else fp32. Weights stay fp32."""
    compile: bool = False
    """torch.compile the model: a slower start (compiling), faster steps where it fuses work."""
    parallel: str = "ddp"
    """Under torchrun: 'ddp' (a full model per process, gradients all-reduced) or 'fsdp'
    (FSDP2: parameters, gradients and AdamW state sharded over the processes, for models
    that do not fit one device). Ignored in a single process."""
    micro_batch_size: int = 0
    """Sequences one process puts through one forward pass; 0 = batch_size / processes.
    A set value keeps memory per device fixed across world sizes: each process then
    accumulates batch_size * grad_accum / (processes * micro_batch_size) micro-batches."""


@dataclass(frozen=True)
class Limit:
    """The values a config field accepts beyond its type (checked by `check_fields`).

    Numbers are always finite and at most `high`; a field with no entry in LIMITS gets
    DEFAULT_LIMIT (a non-negative number, any string), so a field added later is checked
    too. A string field with `choices` (or a Literal type) takes one of them.
    """

    low: float = 0
    """Smallest value allowed (excluded when low_open)."""
    high: float = 2**53
    """Largest value allowed (excluded when high_open); 2**53: any sane count."""
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    """For a string: the values it may take."""
    pattern: str = ""
    """For a string: a regular expression the whole value must match."""
    nonempty: bool = False
    """For a string: the empty string is refused."""


DEFAULT_LIMIT = Limit()
COUNT = 2**24  # a batch or width far past any machine's memory, still a sane number
SEED_LIMIT = Limit(0, 2**63 - 1)  # a seed is hashed as a signed 64-bit integer
# The one statement of the sampling ranges (inference.Sampling's fields): Sampling.check
# (the API, serving) and the generate command's flags both read it.
SAMPLING_LIMITS: dict[str, Limit] = {
    "max_new_tokens": Limit(1, COUNT),
    "temperature": Limit(0, 1e6),  # 0 = greedy
    "top_k": Limit(0, 2**32),  # 0 = all tokens
    "top_p": Limit(0, 1, low_open=True),  # 1 = off
    "seed": SEED_LIMIT,
}
LIMITS: dict[str, Limit] = {
    "model.vocab_size": Limit(0, 2**32),  # token ids are stored as uint32 at most
    "model.block_size": Limit(2, 2**20),
    "model.n_layer": Limit(1, 2**16),
    "model.n_head": Limit(1, 2**16),
    "model.n_embd": Limit(1, 2**20),
    "model.dropout": Limit(0, 1, high_open=True),
    "model.activation": Limit(choices=ACTIVATIONS),
    "model.mlp_hidden": Limit(0, COUNT),  # 0: the activation's default width
    "model.norm": Limit(choices=NORMS),
    "model.norm_eps": Limit(0, 1, low_open=True),
    "model.positions": Limit(choices=POSITIONS),
    "model.rope_base": Limit(1, 1e12, low_open=True),
    "model.n_kv_head": Limit(0, 2**16),  # 0: n_head
    "model.logit_softcap": Limit(0, 1e6),  # 0: off
    "data.path": Limit(nonempty=True),
    "data.train_split": Limit(nonempty=True),
    "data.sampling": Limit(choices=("blocks", "random")),
    "optim.optimizer": Limit(choices=OPTIMIZERS),
    "optim.lr": Limit(0, 1e3, low_open=True),
    "optim.muon_lr": Limit(0, 1e3, low_open=True),
    "optim.muon_momentum": Limit(0, 1, high_open=True),
    "optim.muon_weight_decay": Limit(0, 1e3),
    "optim.muon_ns_steps": Limit(1, 99),
    "optim.muon_adjust_lr": Limit(choices=MUON_ADJUST_LR),
    "optim.decay_shape": Limit(choices=DECAY_SHAPES),
    "optim.weight_decay": Limit(0, 1e3),
    "optim.beta1": Limit(0, 1, high_open=True),
    "optim.beta2": Limit(0, 1, high_open=True),
    "optim.eps": Limit(0, 1, low_open=True),
    "optim.grad_clip": Limit(0, 1e12),
    "optim.schedule": Limit(choices=("constant", "cosine", "wsd")),
    "optim.schedule_unit": Limit(choices=SCHEDULE_UNITS),
    "optim.decay_fraction": Limit(0, 1, low_open=True),
    "optim.min_lr_ratio": Limit(0, 1),
    "train.batch_size": Limit(1, COUNT),
    "train.grad_accum": Limit(1, COUNT),
    "train.micro_batch_size": Limit(0, COUNT),
    "train.epochs": Limit(0, 1e9),
    "train.max_minutes": Limit(0, 1e9),
    "train.log_interval": Limit(1),
    "train.keep_checkpoints": Limit(1, 1e6),
    "train.seed": Limit(0, 2**32 - 1),  # numpy's seed range
    "train.num_threads": Limit(0, 2**16),
    "train.device": Limit(pattern=r"auto|cpu|cuda(:[0-9]+)?"),
    "train.precision": Limit(choices=PRECISIONS),
    "train.parallel": Limit(choices=("ddp", "fsdp")),
}
"""Per `section.field`: the range of a number, the choices of a string."""


@dataclass
class Config:
    """A whole training run. `tinylm train` writes the resolved copy as config.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> Config:
        """Every field's type and range (LIMITS), then the rules between fields."""
        check_fields(self)
        m, t = self.model, self.train
        _require(
            m.n_embd % m.n_head == 0,
            f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
        )
        _require(
            m.n_head % m.kv_heads == 0,
            f"model.n_head={m.n_head} is not a multiple of model.n_kv_head={m.n_kv_head}",
        )
        _require(
            m.positions != "rope" or (m.n_embd // m.n_head) % 2 == 0,
            f"model.positions=rope needs an even head size (n_embd / n_head = "
            f"{m.n_embd // m.n_head})",
        )
        _require(
            t.epochs > 0 or t.max_steps > 0 or t.max_tokens > 0 or t.max_minutes > 0,
            "no training budget: set train.epochs, train.max_steps, train.max_tokens or "
            "train.max_minutes",
        )
        o = self.optim
        _require(
            o.schedule_unit != "time" or t.max_minutes > 0,
            "optim.schedule_unit=time places the schedule in the time budget; set "
            "train.max_minutes",
        )
        _require(
            o.schedule_unit != "time" or (o.warmup < 1 and o.schedule_length <= 1),
            "optim.schedule_unit=time: optim.warmup and optim.schedule_length are fractions "
            "of train.max_minutes (warmup below 1, length at most 1)",
        )
        _require(
            o.schedule_length == 0 or o.warmup < o.schedule_length,
            "optim.warmup must be shorter than optim.schedule_length",
        )
        return self


def check_fields(config: Config) -> None:
    """Each field of each section against its annotated type and its LIMITS entry."""
    for section, cls in SECTIONS.items():
        values = getattr(config, section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            value = getattr(values, f.name)
            _check_type(value, hints[f.name], key)
            _check_limit(value, LIMITS.get(key, DEFAULT_LIMIT), key)


def _check_type(value: Any, kind: Any, key: str) -> None:
    """A value built in code (not read by _coerce) may still be of the wrong type."""
    coerced = _coerce(value, kind, key)
    same = coerced is value or coerced == value or (isinstance(value, float) and value != value)
    if not same or (isinstance(value, bool) and kind is not bool):
        raise TinyLMError(f"config: {key}={value!r}: expected {_type_name(kind)}")


def parse_number(text: str, kind: type, limit: Limit, name: str) -> Any:
    """A command-line number read exactly as a config value of that type (1e3 is an int,
    nan, inf and 1.5-for-an-int are not) and checked against `limit`."""
    value = _coerce(text, kind, name)
    problem = range_problem(value, limit)
    if problem:
        raise TinyLMError(f"{name} {_shown(value)} {problem}")
    return value


def range_problem(value: int | float, limit: Limit) -> str:
    """Why a number is outside `limit` ("" when it is inside)."""
    low = value > limit.low if limit.low_open else value >= limit.low
    high = value < limit.high if limit.high_open else value <= limit.high
    if math.isfinite(value) and low and high:
        return ""
    return f"is out of range; expected {_describe_range(limit, isinstance(value, int))}"


def _check_limit(value: Any, limit: Limit, key: str) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        problem = range_problem(value, limit)
        if problem:
            raise TinyLMError(f"config: {key}={_shown(value)} {problem}")
    elif isinstance(value, str):
        if limit.choices and value not in limit.choices:
            raise TinyLMError(
                f"config: {key}={value!r}; choose one of {', '.join(limit.choices)}"
                f"{_hint(value, limit.choices)}"
            )
        if limit.pattern and not re.fullmatch(limit.pattern, value):
            raise TinyLMError(f"config: {key}={value!r} is not of the form {limit.pattern}")
        if limit.nonempty and not value:
            raise TinyLMError(f"config: {key} must not be empty")


def _describe_range(limit: Limit, integer: bool) -> str:
    what = "an integer" if integer else "a number"
    low = f"{limit.low:g}" if not integer else f"{int(limit.low):,}"
    high = f"{limit.high:g}" if not integer else f"{int(limit.high):,}"
    left, right = "(" if limit.low_open else "[", ")" if limit.high_open else "]"
    return f"{what} in {left}{low}, {high}{right}"


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from an optional YAML file and `section.key=value` overrides."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        _merge(raw, _read_yaml(Path(path)), origin=str(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TinyLMError(f"override {item!r} is not of the form section.key=value")
        if key == "model":  # `model=seed-d256` picks a preset
            key = "model.preset"
        section, dot, name = key.partition(".")
        if not dot:
            raise TinyLMError(f"override {item!r} needs a section, e.g. train.{key}={value}")
        # The raw string: each field's type decides how to read it (see _coerce).
        _merge(raw, {section: {name: value}}, origin=item)
    return Config(
        **{name: _build(cls, raw[name], name) for name, cls in SECTIONS.items()}
    ).validate()


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with Config.to_dict (e.g. from a checkpoint)."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    _merge(raw, data, origin="saved config")
    return Config(**{name: _build(cls, raw[name], name) for name, cls in SECTIONS.items()})


def config_differences(ours: Config, theirs: Config) -> list[str]:
    """The `section.key` names whose values differ between two configs."""
    a, b = ours.to_dict(), theirs.to_dict()
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b.get(s, {}).get(k)]


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TinyLMError(f"{path}: config file not found")
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TinyLMError(f"{path}: expected a mapping of sections (model, data, optim, train)")
    return data


def read_yaml(path: Path) -> Any:
    """A YAML file's data (safe types only); not UTF-8, not YAML or a key given twice in
    one mapping is one clear error."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    except UnicodeDecodeError as err:
        raise TinyLMError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except yaml.MarkedYAMLError as err:
        where = f", line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise TinyLMError(f"{path}{where}: not valid YAML ({err.problem})") from None
    except yaml.YAMLError as err:
        raise TinyLMError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently, so a setting would vanish without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); "
                    "keep one", key_node.start_mark
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep)


def _merge(raw: dict[str, dict[str, Any]], data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise TinyLMError(
                f"{origin}: unknown config section {section!r}{_hint(section, SECTIONS)}"
            )
        if section == "model" and isinstance(values, str):
            values = {"preset": values}
        if not isinstance(values, dict):
            raise TinyLMError(f"{origin}: section {section!r} must be a mapping of keys to values")
        raw[section].update(values)


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    values = dict(values)
    base = cls()
    if cls is ModelConfig and "preset" in values:
        name = values.pop("preset")
        if not isinstance(name, str) or name not in MODEL_PRESETS:
            raise TinyLMError(f"unknown model preset {name!r}{_hint(str(name), MODEL_PRESETS)}")
        base = MODEL_PRESETS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            home = [
                s for s, c in SECTIONS.items() if key in {f.name for f in dataclasses.fields(c)}
            ]
            hint = f"; did you mean {home[0]}.{key}?" if home else _hint(key, fields, section)
            raise TinyLMError(f"unknown config key {section}.{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return dataclasses.replace(base, **kwargs)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check and convert one value to its field's type (bool, int, float, str, a Literal
    of strings, or any of them `| None`).

    Command-line values arrive as strings, and YAML reads 5e-4 as a string too.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
        origin = typing.get_origin(kind)
    try:
        if origin is typing.Literal:
            choices = typing.get_args(kind)
            if value in choices:
                return value
            raise TinyLMError(
                f"{key}={value!r}; choose one of {', '.join(map(str, choices))}"
                f"{_hint(str(value), [str(c) for c in choices])}"
            )
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool | list | dict):
                raise ValueError
            if isinstance(value, int):
                return value
            if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9_]+", value.strip()):
                return int(value)
            number = float(value)  # 1e3; refuses nan, inf and 1.5 below
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool | list | dict):
                raise ValueError
            return float(value)
        if kind is str:
            if value is None:
                return ""
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value
    raise TinyLMError(f"{key}: expected {_type_name(kind)}, got {_shown(value)}")


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, str(kind)
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(name: str, valid: Any, section: str | None = None) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    prefix = f"{section}." if section else ""
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; valid: {', '.join(prefix + v for v in valid)}"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise TinyLMError(f"config: {message}")
