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

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
"""Weights' precision for generate/serve; auto: fp32 on a CPU (faster than bf16 at batch 1
there, bench/RESULTS.md), the training precision on a GPU."""

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
        m, t = self.model, self.train
        _require(m.vocab_size >= 0, "model.vocab_size must be positive (or 0: the dataset's)")
        _require(
            self.data.sampling in ("blocks", "random"),
            f"data.sampling={self.data.sampling!r}: expected 'blocks' or 'random'",
        )
        _require(m.n_embd > 0, "model.n_embd must be positive")
        _require(m.block_size >= 2, "model.block_size must be at least 2 (one input, one target)")
        _require(m.n_layer > 0 and m.n_head > 0, "model.n_layer and model.n_head must be positive")
        _require(
            m.n_embd % m.n_head == 0,
            f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
        )
        _require(0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)")
        for key, choices in (("activation", ACTIVATIONS), ("norm", NORMS),
                             ("positions", POSITIONS)):  # fmt: skip
            value = getattr(m, key)
            _require(value in choices,
                     f"model.{key}={value!r}; choose one of {', '.join(choices)}")  # fmt: skip
        _require(m.mlp_hidden >= 0, "model.mlp_hidden must not be negative (0 = the default)")
        _require(m.norm_eps > 0, "model.norm_eps must be positive")
        _require(m.rope_base > 1, "model.rope_base must be greater than 1")
        _require(m.logit_softcap >= 0, "model.logit_softcap must not be negative (0 = off)")
        _require(
            m.n_kv_head >= 0 and m.n_head % m.kv_heads == 0,
            f"model.n_head={m.n_head} is not a multiple of model.n_kv_head={m.n_kv_head}",
        )
        _require(
            m.positions != "rope" or (m.n_embd // m.n_head) % 2 == 0,
            f"model.positions=rope needs an even head size (n_embd / n_head = "
            f"{m.n_embd // m.n_head})",
        )
        _require(self.optim.lr > 0, "optim.lr must be positive")
        _require(
            self.optim.optimizer in OPTIMIZERS,
            f"optim.optimizer={self.optim.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}",
        )
        _require(
            self.optim.muon_adjust_lr in MUON_ADJUST_LR,
            f"optim.muon_adjust_lr={self.optim.muon_adjust_lr!r}; choose one of "
            f"{', '.join(MUON_ADJUST_LR)}",
        )
        _require(self.optim.muon_lr > 0, "optim.muon_lr must be positive")
        _require(0 <= self.optim.muon_momentum < 1, "optim.muon_momentum must be in [0, 1)")
        _require(self.optim.muon_weight_decay >= 0, "optim.muon_weight_decay must not be negative")
        _require(0 < self.optim.muon_ns_steps < 100, "optim.muon_ns_steps must be in 1..99")
        _require(t.batch_size > 0, "train.batch_size must be positive")
        _require(t.grad_accum > 0, "train.grad_accum must be positive")
        _require(t.micro_batch_size >= 0, "train.micro_batch_size must not be negative")
        _require(t.parallel in ("ddp", "fsdp"), f"train.parallel={t.parallel!r}; use ddp or fsdp")
        _require(
            t.epochs > 0 or t.max_steps > 0 or t.max_tokens > 0 or t.max_minutes > 0,
            "no training budget: set train.epochs, train.max_steps, train.max_tokens or "
            "train.max_minutes",
        )
        _require(t.keep_checkpoints > 0, "train.keep_checkpoints must be at least 1")
        o = self.optim
        _require(
            o.schedule in ("constant", "cosine", "wsd"),
            f"optim.schedule={o.schedule!r}; choose constant, cosine or wsd",
        )
        _require(
            o.schedule_unit in SCHEDULE_UNITS,
            f"optim.schedule_unit={o.schedule_unit!r}; choose one of {', '.join(SCHEDULE_UNITS)}",
        )
        _require(
            o.decay_shape in DECAY_SHAPES,
            f"optim.decay_shape={o.decay_shape!r}; choose one of {', '.join(DECAY_SHAPES)}",
        )
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
        _require(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]")
        _require(0.0 < o.decay_fraction <= 1.0, "optim.decay_fraction must be in (0, 1]")
        _require(o.warmup >= 0 and o.schedule_length >= 0,
                 "optim.warmup and optim.schedule_length must not be negative")  # fmt: skip
        _require(
            o.schedule_length == 0 or o.warmup < o.schedule_length,
            "optim.warmup must be shorter than optim.schedule_length",
        )
        _require(t.log_interval > 0, "train.log_interval must be positive")
        non_negative = (
            "epochs", "max_steps", "max_tokens", "max_minutes", "eval_interval",
            "eval_interval_tokens", "eval_batches", "num_threads", "early_stop_patience",
            "early_stop_min_delta", "checkpoint_interval", "max_skipped_steps",
        )  # fmt: skip
        for name in non_negative:
            _require(getattr(t, name) >= 0, f"train.{name} must not be negative")
        _require(self.optim.weight_decay >= 0, "optim.weight_decay must not be negative")
        _require(self.optim.grad_clip >= 0, "optim.grad_clip must not be negative (0 = off)")
        _require(
            t.precision in ("auto", "fp32", "bf16", "fp16"),
            f"train.precision={t.precision!r}; use auto, fp32, bf16 or fp16",
        )
        return self


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TinyLMError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TinyLMError(f"{path}: expected a mapping of sections (model, data, optim, train)")
    return data


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
    """Check and convert one value to its field's type.

    Command-line values arrive as strings, and YAML reads 5e-4 as a string too.
    """
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool):
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
    raise TinyLMError(f"{key}: expected {kind.__name__}, got {value!r}")


def _hint(name: str, valid: Any, section: str | None = None) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    prefix = f"{section}." if section else ""
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; valid: {', '.join(prefix + v for v in valid)}"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise TinyLMError(f"config: {message}")
