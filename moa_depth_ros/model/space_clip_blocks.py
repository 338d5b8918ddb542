"""SPACE-CLIP's decoder building blocks, module for module as the official implementation.

Attribute names and ``nn.Sequential`` layouts match github.com/taewan2002/space-clip
(``space_clip.py``) so an official checkpoint's decoder weights load by name: e.g.
``fusion_conv.3.conv1.weight`` is the first conv of the residual block that ends a main
decoder block, ``upsample_low.conv.1`` its BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _match_size(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    # The official code skips this when sizes already agree; a same-size bilinear resize
    # is the identity, and comparing traced shapes would bake a branch into the export.
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class ResidualConvBlock(nn.Module):
    """conv3x3-BN-ReLU-dropout-conv3x3-BN, identity residual, ReLU."""

    def __init__(self, num_features: int, dropout_rate: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, 1, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(num_features)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout_rate)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.relu(self.norm1(self.conv1(x))))
        return self.relu(self.norm2(self.conv2(y)) + x)


class FiLMLayer(nn.Module):
    """Feature-wise affine modulation: gamma * tokens + beta (per sample, per channel)."""

    def forward(
        self, tokens: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        # tokens [N, L, C] with gamma/beta [N, C]: broadcast over the tokens.
        return gamma.unsqueeze(1) * tokens + beta.unsqueeze(1)


class UpsampleBlock(nn.Module):
    """Transposed conv x2, then conv3x3-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.upsample(x))


class MainDecoderBlock(nn.Module):
    """Semantic pathway stage: upsample, gate the skips by the upsampled map, fuse.

    Each skip s is scaled by (1 + sigmoid(conv1x1(up))): a gate that can only amplify.
    The structural skip exists only while the structural pathway has stages left.
    """

    def __init__(
        self,
        low_res_ch: int,
        skip_clip_ch: int,
        skip_early_refined_ch: int,
        out_ch: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.upsample_low = UpsampleBlock(low_res_ch, out_ch)
        self.skip_clip_gate = nn.Sequential(nn.Conv2d(out_ch, skip_clip_ch, 1), nn.Sigmoid())
        self.skip_struct_gate = None
        if skip_early_refined_ch > 0:
            self.skip_struct_gate = nn.Sequential(
                nn.Conv2d(out_ch, skip_early_refined_ch, 1), nn.Sigmoid()
            )
        self.fusion_conv = nn.Sequential(
            nn.Conv2d(
                out_ch + skip_clip_ch + skip_early_refined_ch, out_ch, 3, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            ResidualConvBlock(out_ch, dropout),
        )

    def forward(
        self,
        low_res_feat: torch.Tensor,
        skip_feat_clip: torch.Tensor,
        skip_feat_struct: torch.Tensor | None,
    ) -> torch.Tensor:
        up = self.upsample_low(low_res_feat)
        parts = [up, _match_size(skip_feat_clip, up.shape[-2:]) * (1.0 + self.skip_clip_gate(up))]
        if self.skip_struct_gate is not None and skip_feat_struct is not None:
            struct = _match_size(skip_feat_struct, up.shape[-2:])
            parts.append(struct * (1.0 + self.skip_struct_gate(up)))
        # The official code concatenates an empty [N, 0, H, W] tensor when there is no
        # structural skip; leaving it out is the same function and exports cleanly.
        return self.fusion_conv(torch.cat(parts, dim=1))


class StructuralPathwayBlock(nn.Module):
    """Structural pathway stage: upsample, concatenate the shallow-layer skip, fuse."""

    def __init__(self, low_res_ch: int, skip_early_ch: int, out_ch: int) -> None:
        super().__init__()
        self.upsample_low = UpsampleBlock(low_res_ch, out_ch)
        self.fusion_conv = nn.Sequential(
            nn.Conv2d(out_ch + skip_early_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, low_res_feat: torch.Tensor, skip_feat_early: torch.Tensor) -> torch.Tensor:
        up = self.upsample_low(low_res_feat)
        skip = _match_size(skip_feat_early, up.shape[-2:])
        return self.fusion_conv(torch.cat([up, skip], dim=1))


def depth_head(channels: int) -> nn.Sequential:
    """Build the final head: conv3x3(C, C/2)-BN-ReLU-conv3x3(C/2, 1)-ReLU (depth >= 0)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels // 2, 1, 3, padding=1),
        nn.ReLU(),
    )


def aux_depth_head(channels: int) -> nn.Sequential:
    """Build an auxiliary head for an intermediate stage: conv3x3-BN-ReLU-conv1x1-ReLU."""
    mid = max(channels // 2, 16)
    return nn.Sequential(
        nn.Conv2d(channels, mid, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, 1, kernel_size=1),
        nn.ReLU(),
    )
