"""MoA-DepthCLIP's hybrid depth head: depth bins and direct regression, fused.

The paper fixes 128 bins plus a regression branch and leaves spacing and fusion open; our
choices are config fields:

- ``bin_spacing``: where the bin centres lie. 'log' (default) spaces them uniformly in
  log-depth, giving equal *relative* resolution near and far; 'linear' uniformly in metres;
  'inverse' uniformly in 1/depth (disparity). The first centre is exactly min_depth_m and
  the last exactly max_depth_m, so the bin expectation can reach both range ends.
- Regression: ``exp(log min + sigmoid(r) * (log max - log min))``, always inside the range.
- ``fusion``: 'learned' (default) blends the two per pixel with w = sigmoid(conv(features)),
  depth = w * bins + (1 - w) * regression; 'mean' uses w = 0.5; 'geometric' averages
  log-depths. Every rule keeps depth inside [min_depth_m, max_depth_m].
- Confidence is 1 - H(p) / log(B) of the bin distribution p: 1 for a one-hot
  distribution, 0 for a uniform one. H is computed from the logits
  (``softmax_with_entropy``) so that it stays finite in an FP16 TensorRT engine.

Everything is computed at decoder resolution (half the input size for ViT-B/32) and the
one-channel maps are upsampled bilinearly to the input size; for training, 'bin_logits'
are upsampled too, to [N, B, H, W], for a per-pixel cross-entropy.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError

BIN_SPACINGS = ('log', 'linear', 'inverse')
FUSION_RULES = ('learned', 'mean', 'geometric')


def _to_domain(depth_m: torch.Tensor, spacing: str) -> torch.Tensor:
    if spacing == 'log':
        return torch.log(depth_m)
    if spacing == 'inverse':
        return 1.0 / depth_m
    return depth_m


def _from_domain(value: torch.Tensor, spacing: str) -> torch.Tensor:
    if spacing == 'log':
        return torch.exp(value)
    if spacing == 'inverse':
        return 1.0 / value
    return value


def softmax_with_entropy(logits: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (softmax(logits), its entropy in nats with ``dim`` kept as size 1).

    The entropy is ``log Z - sum_k p_k s_k`` with ``s = logits - max``, which never takes
    the log of a probability. The textbook ``-sum p log(max(p, eps))`` turns NaN in an FP16
    TensorRT engine: eps = 1e-12 rounds to 0 in half precision, a confident distribution
    underflows to exact zeros, and 0 * log(0) = 0 * -inf = NaN. Here every term is finite
    in float16 as in float32 (Z >= 1 because the largest shifted logit is 0).
    """
    probs = torch.softmax(logits, dim=dim)
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    log_norm = torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))
    entropy = log_norm - (probs * shifted).sum(dim=dim, keepdim=True)
    return probs, entropy


def bin_centers_m(min_m: float, max_m: float, num_bins: int, spacing: str) -> torch.Tensor:
    """Return ``num_bins`` centres from min_m to max_m (both included), ascending."""
    if spacing not in BIN_SPACINGS:
        raise ConfigError(f'bin_spacing must be one of {BIN_SPACINGS}, got {spacing!r}')
    if num_bins < 2:
        raise ConfigError(f'num_bins must be >= 2, got {num_bins}')
    if spacing in ('log', 'inverse') and min_m <= 0:
        raise ConfigError(f'{spacing} bin spacing needs min_depth_m > 0, got {min_m!r}')
    ends = _to_domain(torch.tensor([min_m, max_m], dtype=torch.float64), spacing)
    steps = torch.linspace(float(ends[0]), float(ends[1]), num_bins, dtype=torch.float64)
    centers = _from_domain(steps, spacing).float().sort().values
    centers[0], centers[-1] = min_m, max_m  # exact ends despite float rounding
    return centers


class HybridDepthHead(nn.Module):
    """Features [N, C, h, w] -> bin logits, bin depth, regression, fused depth, confidence."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_bins: int,
        min_depth_m: float,
        max_depth_m: float,
        bin_spacing: str = 'log',
        fusion: str = 'learned',
        hidden_channels: int = 64,
    ) -> None:
        super().__init__()
        if fusion not in FUSION_RULES:
            raise ConfigError(f'fusion must be one of {FUSION_RULES}, got {fusion!r}')
        if min_depth_m <= 0:
            raise ConfigError(f'the regression branch needs min_depth_m > 0, got {min_depth_m}')
        self.fusion = fusion
        self.num_bins = int(num_bins)
        self.bin_spacing = bin_spacing
        self.depth_range_m = (float(min_depth_m), float(max_depth_m))
        self.log_min = math.log(min_depth_m)
        self.log_max = math.log(max_depth_m)
        centers = bin_centers_m(min_depth_m, max_depth_m, num_bins, bin_spacing)
        self.register_buffer('bin_centers_m', centers)
        # Decision boundaries between neighbouring centres, midway in the spacing's domain:
        # the cross-entropy target of a depth is the bin these put it in, which is the same
        # bin as ``depth_to_bin_index``. Derived, so not stored in checkpoints.
        domain = _to_domain(centers.double(), bin_spacing)
        edges = _from_domain(0.5 * (domain[1:] + domain[:-1]), bin_spacing).float()
        self.register_buffer('bin_edges_m', edges.sort().values, persistent=False)
        # One shared conv3x3 trunk, then 1x1 outputs: the trunk is the costly layer at
        # decoder resolution, so the branches share it.
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.bins = nn.Conv2d(hidden_channels, num_bins, 1)
        self.regression = nn.Conv2d(hidden_channels, 1, 1)
        self.fusion_gate = nn.Conv2d(hidden_channels, 1, 1) if fusion == 'learned' else None

    def forward(
        self, features: torch.Tensor, out_hw: tuple[int, int], *, with_logits: bool = True
    ) -> dict[str, torch.Tensor]:
        """Predict at decoder resolution, then upsample the one-channel maps to ``out_hw``.

        ``with_logits`` adds 'bin_logits' upsampled to [N, B, H, W] for the per-pixel
        cross-entropy; inference (the export graph) skips that B-channel upsampling.
        """
        hidden = self.trunk(features)
        logits = self.bins(hidden)
        probs, entropy = softmax_with_entropy(logits, dim=1)
        centers = self.bin_centers_m.view(1, -1, 1, 1)
        depth_bins = (probs * centers).sum(dim=1, keepdim=True)
        unit = torch.sigmoid(self.regression(hidden))
        regression_m = torch.exp(self.log_min + unit * (self.log_max - self.log_min))
        if self.fusion == 'learned':
            weight = torch.sigmoid(self.fusion_gate(hidden))
            depth = weight * depth_bins + (1.0 - weight) * regression_m
        elif self.fusion == 'mean':
            depth = 0.5 * (depth_bins + regression_m)
        else:
            depth = torch.sqrt(depth_bins * regression_m)
        confidence = 1.0 - entropy / math.log(self.num_bins)
        # Bilinear upsampling is a convex combination, so ranges survive it; the clamps
        # only remove float rounding.
        out = {
            'depth': _resize(depth, out_hw).clamp(*self.depth_range_m),
            'confidence': _resize(confidence, out_hw).clamp(0.0, 1.0),
            'bin_depth_m': _resize(depth_bins, out_hw),
            'regression_m': _resize(regression_m, out_hw),
            'bin_centers_m': self.bin_centers_m,
            'bin_edges_m': self.bin_edges_m,
        }
        if with_logits:
            out['bin_logits'] = _resize(logits, out_hw)
        return out

    def depth_to_bin_index(self, depth_m: torch.Tensor) -> torch.Tensor:
        """Index of the nearest bin centre (in the spacing's domain), for cross-entropy."""
        lo, hi = self.depth_range_m
        clamped = depth_m.clamp(lo, hi)
        value = _to_domain(clamped, self.bin_spacing)
        ends = _to_domain(torch.tensor([lo, hi], dtype=depth_m.dtype), self.bin_spacing)
        unit = (value - ends[0].item()) / (ends[1].item() - ends[0].item())
        return torch.round(unit * (self.num_bins - 1)).long().clamp(0, self.num_bins - 1)


def _resize(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    # No same-size shortcut: comparing traced shapes would bake a branch into the export.
    return F.interpolate(x, size=out_hw, mode='bilinear', align_corners=False)
