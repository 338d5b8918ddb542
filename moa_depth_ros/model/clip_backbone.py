"""Building open_clip towers, loading CLIP weights, and encoding prompts once.

The depth models keep only the vision tower as a submodule. When a model needs text-derived
vectors (MoA-DepthCLIP's scene context, DepthCLIP's bin embeddings) the full CLIP model is
built, the prompts are encoded once, and the text tower is dropped: checkpoints and ONNX
graphs never contain a text encoder. ``load_model`` builds the vision tower alone
(``with_text=False``) because the text vectors come back from the checkpoint as buffers.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import CheckpointError, ConfigError

# open_clip's SimpleTokenizer emits ids up to this vocabulary size.
TOKENIZER_VOCAB_SIZE = 49408


def is_vit_cfg(clip_cfg: dict[str, Any]) -> bool:
    """Tell a ViT tower config from a ModifiedResNet one (``layers`` is a list there)."""
    return not isinstance(clip_cfg['vision_cfg'].get('layers'), (list, tuple))


def _vision_cfg_for(clip_cfg: dict[str, Any], image_hw: tuple[int, int]) -> dict[str, Any]:
    vision_cfg = dict(clip_cfg['vision_cfg'])
    if is_vit_cfg(clip_cfg):
        patch = int(vision_cfg.get('patch_size', 16))
        if image_hw[0] % patch or image_hw[1] % patch:
            raise ConfigError(
                f'input_size {tuple(image_hw)} must be a multiple of the patch size {patch}'
            )
        # The positional grid must match the input grid: build the tower at this size
        # (pretrained weights are resized by open_clip's load_checkpoint).
        vision_cfg['image_size'] = [int(image_hw[0]), int(image_hw[1])]
    elif image_hw[0] % 32 or image_hw[1] % 32:
        raise ConfigError(f'input_size {tuple(image_hw)} must be a multiple of 32 for a ResNet')
    return vision_cfg


def tower_statistics(
    clip_model: str, pretrained: str | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Return the (mean, std) an open_clip tower's weights expect, or None if not known.

    ``pretrained`` an open_clip tag: that tag's statistics. Otherwise those every tag of the
    architecture shares (None when the tags disagree, e.g. ViT-L-14, or there are none).
    """
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(clip_model)
    if pretrained is not None and pretrained in tags:
        tags = [pretrained]
    stats = set()
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(clip_model, tag)
        if cfg.get('mean') is None or cfg.get('std') is None:
            return None
        stats.add((tuple(float(v) for v in cfg['mean']), tuple(float(v) for v in cfg['std'])))
    return stats.pop() if len(stats) == 1 else None


def _reject_timm_cfg(clip_cfg: dict[str, Any]) -> None:
    if clip_cfg['vision_cfg'].get('timm_model_name'):
        raise ConfigError(
            f'timm image towers ({clip_cfg["vision_cfg"]["timm_model_name"]!r}) are supported '
            f'by SPACE-CLIP only (preset space_clip_siglip)'
        )


def build_vision_tower(clip_cfg: dict[str, Any], image_hw: tuple[int, int]) -> nn.Module:
    """Build a randomly initialised open_clip vision tower without the text tower."""
    from open_clip.model import _build_vision_tower  # the builder open_clip's CLIP uses

    _reject_timm_cfg(clip_cfg)
    vision_cfg = _vision_cfg_for(clip_cfg, image_hw)
    return _build_vision_tower(
        clip_cfg['embed_dim'], vision_cfg, quick_gelu=bool(clip_cfg.get('quick_gelu'))
    )


def build_clip(
    clip_cfg: dict[str, Any],
    image_hw: tuple[int, int],
    *,
    clip_model: str,
    pretrained: str | None,
) -> nn.Module:
    """Build a full open_clip CLIP (both towers), loading ``pretrained`` weights if given."""
    import open_clip

    _reject_timm_cfg(clip_cfg)
    cfg = dict(clip_cfg)
    cfg['vision_cfg'] = _vision_cfg_for(clip_cfg, image_hw)
    try:
        model = open_clip.model.CLIP(**cfg)
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f'clip_cfg is not a buildable open_clip config: {e}') from e
    if pretrained is not None:
        load_clip_weights(model, clip_model, pretrained)
    return model.float().eval()


def load_clip_weights(model: nn.Module, clip_model: str, pretrained: str) -> None:
    """Load CLIP weights from a local file or an open_clip pretrained tag (downloads)."""
    import open_clip

    if os.path.isfile(pretrained):
        path = pretrained
    else:
        tag_cfg = open_clip.get_pretrained_cfg(clip_model, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(clip_model)
            raise ConfigError(
                f'pretrained={pretrained!r} is neither a file nor an open_clip tag of '
                f'{clip_model!r} (tags: {tags})'
            )
        try:
            path = open_clip.download_pretrained(tag_cfg)
        except Exception as e:  # network, cache and hub errors all mean "no weights"
            raise CheckpointError(
                f'could not download {clip_model!r} weights for tag {pretrained!r}: {e}'
            ) from e
    try:
        # Handles safetensors or weights_only torch files, 'module.' prefixes and
        # resizing the positional embedding to our grid. Nothing is unpickled.
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise CheckpointError(f'{path}: not loadable as {clip_model!r} CLIP weights: {e}') from e


@torch.no_grad()
def encode_prompts(clip: nn.Module, prompts: Sequence[str]) -> torch.Tensor:
    """Encode prompts with the text tower; returns L2-normalised [P, embed_dim] float32."""
    import open_clip

    if not prompts:
        raise ConfigError('at least one text prompt is needed, got none')
    if clip.vocab_size < TOKENIZER_VOCAB_SIZE:
        raise ConfigError(
            f'text_cfg.vocab_size must be >= {TOKENIZER_VOCAB_SIZE} for the CLIP tokenizer, '
            f'got {clip.vocab_size}'
        )
    tokens = open_clip.tokenize(list(prompts), context_length=clip.context_length)
    features = clip.encode_text(tokens).float()
    return F.normalize(features, dim=-1)


def vit_tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch-embed an image for an open_clip ViT: [N, 1 + h*w, width] after ln_pre.

    This is HF CLIP's ``hidden_states[0]``: class token first, positional embedding added,
    then the pre-transformer LayerNorm.
    """
    return vit_embed_patches(visual, visual.conv1(pixels))


def vit_embed_patches(visual: nn.Module, patch_map: torch.Tensor) -> torch.Tensor:
    """Turn a patch-embedding map [N, width, h, w] into ``vit_tokens``' output."""
    x = patch_map.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def vit_block(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Run one open_clip ``ResidualAttentionBlock`` on batch-first tokens [N, L, D].

    The same function as ``block(tokens)``, spelled out: in eval mode
    ``nn.MultiheadAttention`` takes a fused fast path (``_native_multi_head_attention``)
    that no ONNX exporter can translate, while this form exports and runs identically
    in eager mode, training and every backend.
    """
    tokens = tokens + block.ls_1(_self_attention(block.attn, block.ln_1(tokens)))
    return tokens + block.ls_2(block.mlp(block.ln_2(tokens)))


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    batch, length, width = x.shape
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.reshape(batch, length, 3, attn.num_heads, width // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v)
    return attn.out_proj(y.transpose(1, 2).reshape(batch, length, width))


def tokens_to_map(tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Reshape patch tokens [N, h*w, C] (class token removed) into a map [N, C, h, w]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid_hw)


def vit_grid(visual: nn.Module) -> tuple[int, int]:
    """Return the (rows, columns) of the tower's patch grid."""
    return tuple(int(g) for g in visual.grid_size)


def vit_depth(visual: nn.Module) -> int:
    """Return the number of transformer blocks in an open_clip ViT."""
    return len(visual.transformer.resblocks)


class ConvStem(nn.Module):
    """A convolutional patch embedding for a ViT trained from scratch.

    "Early convolutions help transformers see better" (Xiao et al., NeurIPS 2021): a few
    stride-2 conv3x3-BN-ReLU layers and a 1x1 projection in place of the single
    patchify conv make a ViT optimise much faster and more stably. Each layer halves the
    resolution, so ``len(channels)`` layers give a patch size of ``2 ** len(channels)``.
    ``features`` also returns every layer's map (finest first) for a decoder's skips.
    It replaces ``visual.conv1`` and keeps its interface (``out_channels``); CLIP weights
    have a patchify conv, so a tower with this stem is always randomly initialised.
    """

    def __init__(self, width: int, channels: Sequence[int]) -> None:
        super().__init__()
        if not channels or any(int(c) < 1 for c in channels):
            raise ConfigError(f'conv stem channels must be positive, got {tuple(channels)!r}')
        self.out_channels = int(width)
        self.stride = 2 ** len(channels)
        self.channels = tuple(int(c) for c in channels)
        in_channels = (3, *self.channels[:-1])
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
            )
            for i, o in zip(in_channels, self.channels)
        )
        self.proj = nn.Conv2d(self.channels[-1], self.out_channels, 1)

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return (patch map [N, width, H/stride, W/stride], every layer's map finest first)."""
        maps = []
        x = pixels
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return self.proj(x), maps

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)[0]


def install_conv_stem(visual: nn.Module, channels: Sequence[int]) -> ConvStem:
    """Replace an open_clip ViT's patchify ``conv1`` with a ``ConvStem`` of the same stride."""
    patch = visual.conv1.stride[0] if isinstance(visual.conv1, nn.Conv2d) else None
    stem = ConvStem(int(visual.conv1.out_channels), channels)
    if patch != stem.stride:
        raise ConfigError(
            f'a conv stem of {len(stem.channels)} stride-2 layers has stride {stem.stride}, '
            f'but the ViT patch size is {patch}: give log2(patch_size) channel counts'
        )
    visual.conv1 = stem
    return stem
