"""LoRA on a frozen gptoss model, with PEFT's tensor shapes and PEFT's math.

Targets: attention q/k/v/o (PEFT `target_modules`, `lora.Linear`: y += s * B(A(dropout(x)))), the router and the
experts' gate_up_proj / down_proj (PEFT `target_parameters`, `lora.ParamWrapper`: W += s * B A, per expert, no
dropout). s = alpha / r (alpha / sqrt(r) with rsLoRA). The factors keep PEFT's layouts so saving is renaming:
- linear / router: A (r, in), B (out, r);
- experts (E experts): A (r*E, in) rows expert-major, B (out, r*E) columns expert-minor, i.e. expert e uses
  A.view(E, r, in)[e] and B.view(out, r, E)[:, :, e] (PEFT's `get_delta_weight`).
The adapter plugs into the model through model.Adapter; the experts go through ops_autograd.LoraExperts so the
packed MXFP4 weights are dequantized one expert at a time, forward and backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptoss.config import ModelConfig
from gptoss.errors import InputError
from gptoss.finetune.experts import expert_factors, lora_moe_experts
from gptoss.model import MoEWeights

ATTENTION = ("q", "k", "v", "o")
EXPERTS = ("gate_up", "down")
TARGETS = (*ATTENTION, "router", *EXPERTS)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ATTENTION
    use_rslora: bool = False
    layers: tuple[int, ...] | None = None  # attention targets only on these (PEFT's layers_to_transform); None = all

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise InputError(f"LoRA rank must be positive, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise InputError(f"unknown LoRA target(s) {unknown or '(none)'}: choose from {', '.join(TARGETS)}")
        if self.dropout and any(t not in ATTENTION for t in self.targets):
            raise InputError("LoRA dropout must be 0 when the router or experts are targeted (PEFT has none there)")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def factor_shapes(cfg: ModelConfig, r: int, target: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(A shape, B shape) of one layer's adapter on `target`, as PEFT stores them."""
    H, E, I = cfg.hidden_size, cfg.num_experts, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    in_out = {"q": (H, q), "k": (H, kv), "v": (H, kv), "o": (q, H), "router": (H, E), "gate_up": (H, 2 * I)}
    in_out["down"] = (I, H)
    fan_in, fan_out = in_out[target]
    rank = r * E if target in EXPERTS else r
    return (rank, fan_in), (fan_out, rank)


def default_pairs(model_cfg: ModelConfig, cfg: LoraConfig) -> set[tuple[int, str]]:
    """Every layer for each target, except that `layers` narrows the attention targets (as PEFT's
    layers_to_transform narrows target_modules but not target_parameters)."""
    every = range(model_cfg.num_hidden_layers)
    return {(i, t) for t in cfg.targets for i in (cfg.layers if cfg.layers is not None and t in ATTENTION else every)}


def key(layer: int, target: str, factor: str) -> str:
    return f"{layer}_{target}_{factor}"


class LoraAdapter(torch.nn.Module):
    """The trainable factors, one (A, B) pair per adapted layer and target (fp32 unless asked otherwise)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: LoraConfig,
        dtype: torch.dtype = torch.float32,
        pairs: set[tuple[int, str]] | None = None,  # exactly these (layer, target) pairs; None = from cfg
    ) -> None:
        super().__init__()
        self.model_cfg, self.cfg = model_cfg, cfg
        self.factors = torch.nn.ParameterDict()
        for i, t in sorted(pairs if pairs is not None else default_pairs(model_cfg, cfg)):
            a_shape, b_shape = factor_shapes(model_cfg, cfg.r, t)
            self.factors[key(i, t, "A")] = torch.nn.Parameter(torch.zeros(a_shape, dtype=dtype))
            self.factors[key(i, t, "B")] = torch.nn.Parameter(torch.zeros(b_shape, dtype=dtype))

    def reset(self, generator: torch.Generator) -> None:
        """PEFT's default init: A ~ kaiming-uniform(a=sqrt(5)) (bound 1/sqrt(fan_in)), B = 0, so training starts
        from the base model exactly."""
        with torch.no_grad():
            for name, p in self.factors.items():
                if name.endswith("_A"):
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
                else:
                    p.zero_()

    def pair(self, layer: int, target: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        a = self.factors.get(key(layer, target, "A"))
        return None if a is None else (a, self.factors[key(layer, target, "B")])

    def linear(self, layer: int, name: str, x: torch.Tensor) -> torch.Tensor | None:
        ab = self.pair(layer, name)
        if ab is None:
            return None
        a, b = ab
        if self.cfg.dropout and self.training:
            x = F.dropout(x, self.cfg.dropout)
        return F.linear(F.linear(x.to(a.dtype), a), b) * self.cfg.scaling  # (T, out)

    def moe_experts(
        self, layer: int, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, m: MoEWeights, limit: float
    ) -> torch.Tensor | None:
        up, down = self.pair(layer, "gate_up"), self.pair(layer, "down")
        # Unadapted experts still go through the custom function when gradients flow through them: autograd over
        # ops.moe_experts would keep every routed expert's dequantized weights alive until the backward pass.
        if up is None and down is None and not (torch.is_grad_enabled() and x.requires_grad):
            return None
        return lora_moe_experts(x, idx, w, m, up, down, self.cfg.scaling, limit)

    def expert_delta(self, layer: int, target: str, e: int) -> torch.Tensor | None:
        """Expert e's weight update (out, in) in gptoss's orientation: s * B_e @ A_e."""
        ab = self.pair(layer, target)
        return None if ab is None else expert_delta(ab[0], ab[1], e, self.model_cfg.num_experts, self.cfg.scaling)

    def linear_delta(self, layer: int, target: str) -> torch.Tensor | None:
        ab = self.pair(layer, target)
        return None if ab is None else (ab[1] @ ab[0]) * self.cfg.scaling  # (out, in)


def expert_delta(a: torch.Tensor, b: torch.Tensor, e: int, num_experts: int, scaling: float) -> torch.Tensor:
    a_e, b_e = expert_factors(a, b, e, num_experts)
    return (b_e @ a_e) * scaling  # (out, in)
