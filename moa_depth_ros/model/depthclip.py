"""DepthCLIP: zero-shot depth from CLIP RN50 patch features and depth-word prompts.

The official algorithm (github.com/Adonis-galaxy/DepthCLIP, ``monoclip.py``), quirks kept:

1. RN50 layer4 features (2048 channels, stride 32) WITHOUT the attention pool; 416x544
   (the official NYU crop) gives a 13x17 grid.
2. Each feature vector is L2-normalised over its 2048 channels, then every second channel
   is kept: the official ``F.interpolate(img_f, scale_factor=0.5)`` on a [B, HW, C] tensor
   is a nearest resampling of the *channel* axis "to match" the 1024-d text embeddings.
   The result is no longer unit-norm and mixes the visual and joint spaces; kept as is.
3. Text: 'This {object} is {word}' for 7 depth words, each embedding L2-normalised.
4. logits = 100 * <f, t> / 0.1 (a 1000x scale: the softmax is nearly one-hot), softmax
   over the 7 bins, depth = sum_k p_k * bin_k with bins 1.00 .. 3.00 m. The output can
   therefore only lie in [1, 3] m, whatever the scene: min/max_depth_m are those ends.
5. Images are normalised with ImageNet statistics, not CLIP's (the official data loader).
6. The official evaluation averages with the horizontally flipped image and upsamples
   bilinearly with align_corners=True; ``flip_average`` and ``forward`` do the same.

Differences: the official model runs CLIP in fp16 on a GPU; this one is float32.
Confidence (not in the original) is 1 - H(p) / log(7) of the bin distribution; the 1000x
logit scale makes p underflow to exact zeros, so H comes from the logits
(``heads.softmax_with_entropy``), which keeps it finite in an FP16 TensorRT engine.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.clip_backbone import (
    build_clip,
    build_vision_tower,
    encode_prompts,
    is_vit_cfg,
)
from moa_depth_ros.model.config import IMAGENET_MEAN, IMAGENET_STD, DepthModelConfig
from moa_depth_ros.model.heads import softmax_with_entropy

DEPTH_WORDS = (
    'giant',
    'extremely close',
    'close',
    'not in distance',
    'a little remote',
    'far',
    'unseen',
)
DEPTH_BINS_M = (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00)


@dataclasses.dataclass(frozen=True)
class DepthCLIPConfig(DepthModelConfig):
    """DepthCLIP's fixed recipe; the depth range is the span of ``depth_bins_m``."""

    clip_model: str = 'RN50'
    input_size: tuple[int, int] = (416, 544)
    min_depth_m: float = DEPTH_BINS_M[0]
    max_depth_m: float = DEPTH_BINS_M[-1]
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    depth_words: tuple[str, ...] = DEPTH_WORDS
    depth_bins_m: tuple[float, ...] = DEPTH_BINS_M
    prompt_template: str = 'This {} is {}'
    object_name: str = 'object'
    logit_scale: float = 100.0
    temperature: float = 0.1
    flip_average: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        bins = self.depth_bins_m
        if len(bins) != len(self.depth_words) or len(bins) < 2:
            raise ConfigError(
                f'need one depth word per bin (>= 2), got {len(self.depth_words)} words '
                f'and depth_bins_m={bins!r}'
            )
        if any(b >= c for b, c in zip(bins, bins[1:])):
            raise ConfigError(f'depth_bins_m must increase, got {bins!r}')
        if (self.min_depth_m, self.max_depth_m) != (bins[0], bins[-1]):
            raise ConfigError(
                f'DepthCLIP can only output depths in [{bins[0]}, {bins[-1]}] m: set '
                f'min_depth_m/max_depth_m to those, got [{self.min_depth_m}, {self.max_depth_m}]'
            )
        if not self.temperature > 0:
            raise ConfigError(f'temperature must be > 0, got {self.temperature!r}')

    def prompts(self) -> list[str]:
        return [self.prompt_template.format(self.object_name, w) for w in self.depth_words]


class DepthCLIP(DepthModel):
    """Zero-shot CLIP RN50 depth: no trainable parameters."""

    model_name = 'depthclip'

    def __init__(
        self, config: DepthCLIPConfig, *, pretrained: str | None = None, build_text: bool = True
    ) -> None:
        super().__init__(config)
        clip_cfg = config.resolved_clip_cfg()
        if is_vit_cfg(clip_cfg):
            raise ConfigError(
                f'DepthCLIP needs a ResNet tower, got clip_model={config.clip_model!r}'
            )
        embed_dim = int(clip_cfg['embed_dim'])
        if build_text:
            clip = build_clip(
                clip_cfg, self.input_hw, clip_model=config.clip_model, pretrained=pretrained
            )
            text = encode_prompts(clip, config.prompts()).t().contiguous()
            visual = clip.visual
        else:
            visual = build_vision_tower(clip_cfg, self.input_hw)
            text = torch.zeros(embed_dim, len(config.depth_bins_m))  # from the checkpoint
        visual.attnpool = None  # the official algorithm reads layer4 before the pool
        self.backbone = visual
        for param in self.backbone.parameters():
            param.requires_grad = False
        feature_dim = int(clip_cfg['vision_cfg'].get('width', 64)) * 32
        if feature_dim % embed_dim:
            raise ConfigError(
                f'layer4 width {feature_dim} must be a multiple of embed_dim {embed_dim} '
                f'(the official channel subsampling)'
            )
        self.channel_stride = feature_dim // embed_dim
        self.register_buffer('bin_embeddings', text)  # [embed_dim, bins]
        self.register_buffer('bin_centers_m', torch.tensor(config.depth_bins_m))
        self.eval()

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def _bins(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        visual = self.backbone
        x = visual.stem(image)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        x = F.normalize(x, dim=1)[:, :: self.channel_stride]
        weight = self.bin_embeddings.t()[:, :, None, None]
        scale = self.config.logit_scale / self.config.temperature
        logits = F.conv2d(x, weight) * scale
        probs, entropy = softmax_with_entropy(logits, dim=1)
        return logits, probs, entropy

    def forward_train(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(image)
        batch = x.shape[0]
        if self.config.flip_average:
            x = torch.cat([x, torch.flip(x, dims=[3])], dim=0)
        logits, probs, entropy = self._bins(x)
        centers = self.bin_centers_m.view(1, -1, 1, 1)
        depth = (probs * centers).sum(dim=1, keepdim=True)
        confidence = 1.0 - entropy / math.log(len(self.config.depth_bins_m))
        if self.config.flip_average:
            depth = 0.5 * (depth[:batch] + torch.flip(depth[batch:], dims=[3]))
            confidence = 0.5 * (confidence[:batch] + torch.flip(confidence[batch:], dims=[3]))
            logits = logits[:batch]
        size = self.input_hw
        depth = F.interpolate(depth, size=size, mode='bilinear', align_corners=True)
        return {
            # The clamp only removes float rounding past the outer bins.
            'depth': depth.clamp(self.min_depth_m, self.max_depth_m),
            'confidence': F.interpolate(
                confidence, size=size, mode='bilinear', align_corners=True
            ).clamp(0.0, 1.0),
            'bin_logits': logits,
            'bin_centers_m': self.bin_centers_m,
        }

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_train(image)
        return out['depth'], out['confidence']

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {}
