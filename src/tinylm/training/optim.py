"""The optimizer: AdamW, or Muon for the blocks' matrices with AdamW for the rest.

    optim.optimizer=adamw   AdamW on everything; weight decay on weight matrices only
    optim.optimizer=muon    torch.optim.Muon on the 2-D matrices inside the blocks (attention
                            q|k|v and output, MLP in and out), each orthogonalised whole;
                            AdamW on embeddings, the output layer, norms, biases and scalars

Every parameter group carries `lr_scale`, its peak LR over optim.lr: the trainer sets each
group's LR to schedule(step) * lr_scale, so one schedule moves both optimizers together
(Muon's peak is optim.muon_lr). Gradient clipping applies to the whole model's gradient
before either optimizer steps.
"""

from __future__ import annotations

from typing import Any

import torch

from tinylm.config import OptimConfig
from tinylm.errors import TinyLMError


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` asks for over the model's trainable parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return _adamw(_adamw_groups(named, cfg), cfg)
    if any(type(p).__name__ == "DTensor" for _, p in named):
        raise TinyLMError(
            "optim.optimizer=muon does not work with train.parallel=fsdp (FSDP2 shards each "
            "matrix, Muon orthogonalises whole ones); use train.parallel=ddp"
        )
    matrices = [p for n, p in named if _is_block_matrix(n, p)]
    rest = [(n, p) for n, p in named if not _is_block_matrix(n, p)]
    return MuonWithAdamW(matrices, _adamw_groups(rest, cfg), cfg)


def _is_block_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """Muon's share: the 2-D weights inside the transformer blocks (not norms' gains,
    biases, the embeddings or the output layer, whose rows are per-token, not a map)."""
    return name.startswith("blocks.") and param.dim() == 2


def _adamw_groups(named: list[tuple[str, torch.nn.Parameter]], cfg: OptimConfig) -> list[dict]:
    """Decay Linear and token-embedding matrices; never biases, norms or positions.

    Decaying the position table pulls positions toward each other for no benefit, and
    decaying gains/biases fights the normalisation they exist to undo.
    """
    decay, no_decay = [], []
    for name, param in named:
        is_matrix = param.dim() >= 2 and not name.startswith("wpe.")
        (decay if is_matrix else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]


def _adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    # The fused kernel updates every tensor in one pass instead of a loop of small ops
    # (several times faster for 13M parameters on 2 cores). It needs float parameters on
    # CPU or CUDA.
    params = [p for g in groups for p in g["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused
    )


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon and torch.optim.AdamW stepping together, seen as one optimizer.

    Its param_groups are Muon's then AdamW's (the very same dicts) and all three share one
    state mapping, so the trainer, GradScaler, gradient clipping and the checkpoint's
    per-parameter state (Muon's momentum_buffer, AdamW's moments and step) treat it as
    any other optimizer.

    torch's Muon defaults differ from the reference implementation's (lr 1e-3 vs 0.02,
    weight decay 0.1 vs 0): every value is passed explicitly from OptimConfig. Its update
    is scaled by sqrt(max(1, rows / cols)) ('original', as the reference) or
    0.2 * sqrt(max(rows, cols)) ('match_rms_adamw', Moonshot's) per optim.muon_adjust_lr.
    """

    def __init__(
        self, matrices: list[torch.nn.Parameter], adamw_groups: list[dict], cfg: OptimConfig
    ) -> None:
        self.muon = torch.optim.Muon(
            [{"params": matrices, "lr_scale": cfg.muon_lr / cfg.lr}],
            lr=cfg.muon_lr,
            weight_decay=cfg.muon_weight_decay,
            momentum=cfg.muon_momentum,
            nesterov=True,
            ns_steps=cfg.muon_ns_steps,
            adjust_lr_fn=cfg.muon_adjust_lr,
        )
        self.adamw = _adamw(adamw_groups, cfg)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})
        self._share()

    def _share(self) -> None:
        n = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = (
            self.param_groups[:n],
            self.param_groups[n:],
        )
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # rebuilds param_groups and state: re-share them
        self._share()
