"""Mixture-of-Adapters (MoA), the block MoA-DepthCLIP inserts between ViT blocks.

For each token x (width D), K bottleneck experts E_k = Linear(D, r) - GELU - Linear(r, D)
and a gate G = Linear(D, h) - ReLU - Linear(h, K) give

    g = softmax(G(x) / tau),        y = x + sum_k g_k * E_k(x)

Routing is dense (every expert runs on every token; no top-k, no noise) and there is no
load-balancing loss; the gates' mean entropy is reported as a metric instead. Defaults
follow the paper: K=4, r=64, h=128, tau=2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from moa_depth_ros.errors import ConfigError


class MixtureOfAdapters(nn.Module):
    """Token-wise softmax-gated mixture of bottleneck adapters with a residual."""

    def __init__(
        self,
        width: int,
        num_experts: int = 4,
        bottleneck: int = 64,
        gate_hidden: int = 128,
        temperature: float = 2.0,
    ) -> None:
        super().__init__()
        if num_experts < 1 or bottleneck < 1 or gate_hidden < 1:
            raise ConfigError(
                f'MoA sizes must be positive, got num_experts={num_experts}, '
                f'bottleneck={bottleneck}, gate_hidden={gate_hidden}'
            )
        if not temperature > 0:
            raise ConfigError(f'gate temperature must be > 0, got {temperature!r}')
        self.temperature = float(temperature)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(width, bottleneck), nn.GELU(), nn.Linear(bottleneck, width))
            for _ in range(num_experts)
        )
        self.gate = nn.Sequential(
            nn.Linear(width, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, num_experts)
        )
        for expert in self.experts:
            # Near-identity start: the pretrained features pass through almost unchanged,
            # yet every adapter weight receives a gradient from the first step (an exact
            # zero init would starve the down-projections and the gate).
            nn.init.normal_(expert[2].weight, std=1e-3)
            nn.init.zeros_(expert[2].bias)

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (adapted tokens [N, L, D], gate weights [N, L, K] summing to 1)."""
        gates = torch.softmax(self.gate(tokens) / self.temperature, dim=-1)
        mixed = tokens
        for k, expert in enumerate(self.experts):
            mixed = mixed + gates[..., k : k + 1] * expert(tokens)
        return mixed, gates


def gate_entropy(gates: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the gate distribution's entropy in nats (0 .. log K)."""
    return -(gates * torch.log(gates.clamp_min(1e-12))).sum(dim=-1).mean()


def normalized_gate_entropy(gates: torch.Tensor) -> torch.Tensor:
    """Gate entropy divided by log K: 1 means uniform routing, 0 means one expert."""
    num_experts = gates.shape[-1]
    if num_experts < 2:
        return gates.new_zeros(())
    return gate_entropy(gates) / math.log(num_experts)
