"""MoA-DepthCLIP's decoder: a 7x7 ViT token grid plus global context -> a dense feature map.

The paper leaves the decoder open; ours is a small progressive upsampler:

1. the last block's patch tokens are LayerNorm-ed (raw CLIP residual streams have a few
   huge channels) and concatenated on the channel axis with the global semantic context
   vector c, broadcast over the grid (the paper's fusion); a 1x1 conv projects them;
2. ``len(decoder_channels)`` stages each double the resolution (bilinear), apply
   conv3x3-BN-ReLU, add an optional skip from an earlier ViT block (LayerNorm, 1x1 conv,
   bilinear resize; like DPT, earlier blocks keep more local structure), and refine with
   another conv3x3-BN-ReLU.

With four stages a 7x7 grid becomes 112x112 for a 224x224 input; the head upsamples its
outputs to the input size. ``decoder_channels`` and ``decoder_skip_blocks`` are config fields.

With a convolutional stem (``conv_stem_channels``) the stem's feature maps, which are
finer than the token grid, are added to the stages of the same resolution (a 1x1 conv
each), as a U-Net does: the only path by which pixel-level edges reach the decoder
without passing through the coarse token grid.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.clip_backbone import tokens_to_map


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UpStage(nn.Module):
    """x2 bilinear upsampling, conv, optional skip addition, conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_conv = _conv_bn_relu(in_channels, out_channels)
        self.refine = _conv_bn_relu(out_channels, out_channels)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, map_skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)
        x = self.up_conv(x)
        for extra in (skip, map_skip):
            if extra is not None:
                x = x + F.interpolate(
                    extra, size=x.shape[-2:], mode='bilinear', align_corners=False
                )
        return self.refine(x)


class TokenDecoder(nn.Module):
    """Patch tokens [N, h*w, D] (+ context [C], + skips) -> features [N, c_last, h*2^S, w*2^S]."""

    def __init__(
        self,
        width: int,
        context_dim: int,
        channels: tuple[int, ...] = (256, 128, 64, 32),
        num_skips: int = 3,
        map_skip_channels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if not channels or any(c < 1 for c in channels):
            raise ConfigError(f'decoder_channels must be positive, got {channels!r}')
        if len(map_skip_channels) > len(channels) or any(c < 0 for c in map_skip_channels):
            raise ConfigError(
                f'map skips need one channel count (0: none) per decoder stage at most, got '
                f'{map_skip_channels!r} for decoder_channels={channels!r}'
            )
        if num_skips > len(channels):
            raise ConfigError(
                f'{num_skips} decoder skips need at least as many decoder stages, '
                f'got decoder_channels={channels!r}'
            )
        self.norm = nn.LayerNorm(width)
        self.stem = nn.Conv2d(width + context_dim, channels[0], 1)
        self.skip_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_skips))
        self.skip_projections = nn.ModuleList(
            nn.Conv2d(width, channels[i], 1) for i in range(num_skips)
        )
        # Keyed by stage index: stages without a map skip have no projection.
        self.map_skip_projections = nn.ModuleDict(
            {str(i): nn.Conv2d(c, channels[i], 1) for i, c in enumerate(map_skip_channels) if c}
        )
        in_channels = (channels[0], *channels[:-1])
        self.stages = nn.ModuleList(UpStage(i, o) for i, o in zip(in_channels, channels))

    @property
    def out_channels(self) -> int:
        return self.stages[-1].refine[0].out_channels

    def forward(
        self,
        tokens: torch.Tensor,
        skips: list[torch.Tensor],
        context: torch.Tensor,
        grid_hw: tuple[int, int],
        map_skips: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``map_skips[i]``: a feature map for stage i (None: none), as in the constructor."""
        x = tokens_to_map(self.norm(tokens), grid_hw)
        ctx = context.view(1, -1, 1, 1).to(x.dtype).expand(x.shape[0], -1, *grid_hw)
        x = self.stem(torch.cat([x, ctx], dim=1))
        for i, stage in enumerate(self.stages):
            skip = None
            if i < len(skips):
                skip_map = tokens_to_map(self.skip_norms[i](skips[i]), grid_hw)
                skip = self.skip_projections[i](skip_map)
            map_skip = None
            if str(i) in self.map_skip_projections and map_skips and map_skips[i] is not None:
                map_skip = self.map_skip_projections[str(i)](map_skips[i])
            x = stage(x, skip, map_skip)
        return x
