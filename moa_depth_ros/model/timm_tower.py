"""SigLIP-style vision towers from timm: no class token, an attention-pool head.

open_clip's ``ViT-B-16-SigLIP`` (and the other SigLIP architectures) describe their image
tower as a timm model: ``vision_cfg`` names ``timm_model_name`` and ``timm_pool='map'``
(multi-head attention pooling). open_clip's own ``TimmModel`` does not pass the image size to
timm, so ``build_timm_tower`` creates the timm ``VisionTransformer`` itself, at the model's
input size, and wraps it as ``trunk``: the keys are open_clip's (``visual.trunk.*``), so
open_clip's SigLIP weights load by name.

Activation: SigLIP was trained in big_vision with the tanh approximation of GELU, and Hugging
Face's ``SiglipVisionModel`` uses it (``hidden_act='gelu_pytorch_tanh'``); timm and open_clip
build these towers with the exact (erf) GELU. The tower here uses the tanh form everywhere
(blocks and the pooling head's MLP), so features agree with HF's to float precision and a
decoder trained on them (the official SPACE-CLIP SigLIP run) sees what it was trained on.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from moa_depth_ros.errors import CheckpointError, ConfigError

#: The only head a SigLIP tower may have here: attention pooling (HF's ``pooler_output``).
SIGLIP_POOL = 'map'
#: Our extension of an open_clip ``vision_cfg``: keyword arguments for ``timm.create_model``
#: that reshape the named architecture (e.g. a tiny tower for tests: embed_dim, depth,
#: num_heads). open_clip itself does not read it.
TIMM_KWARGS_KEY = 'timm_model_kwargs'


def is_timm_cfg(clip_cfg: dict[str, Any]) -> bool:
    """Tell a timm-backed image tower config (``vision_cfg.timm_model_name``) from the rest."""
    return bool(clip_cfg['vision_cfg'].get('timm_model_name'))


class TimmTower(nn.Module):
    """A timm ViT without classifier, held as ``trunk`` like open_clip's ``TimmModel``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return the attention-pooled image feature [N, width]."""
        return self.trunk(pixels)


def build_timm_tower(clip_cfg: dict[str, Any], image_hw: tuple[int, int]) -> TimmTower:
    """Build a randomly initialised SigLIP-style timm tower for ``image_hw`` (ConfigError)."""
    import timm

    vision_cfg = dict(clip_cfg['vision_cfg'])
    name = vision_cfg['timm_model_name']
    pool = vision_cfg.get('timm_pool')
    if pool != SIGLIP_POOL:
        raise ConfigError(
            f'timm tower {name!r} has timm_pool={pool!r}; only attention-pooled '
            f'(SigLIP-style, {SIGLIP_POOL!r}) timm towers are supported'
        )
    proj = vision_cfg.get('timm_proj', 'none')
    if proj not in (None, '', 'none'):
        raise ConfigError(f'timm tower {name!r} has timm_proj={proj!r}; only "none" is supported')
    kwargs = dict(vision_cfg.get(TIMM_KWARGS_KEY) or {})
    try:
        trunk = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            global_pool=SIGLIP_POOL,
            img_size=(int(image_hw[0]), int(image_hw[1])),
            act_layer='gelu_tanh',
            **kwargs,
        )
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise ConfigError(f'cannot build timm tower {name!r} with {kwargs}: {e}') from e
    check_siglip_trunk(trunk, name)
    patch = trunk.patch_embed.patch_size
    if image_hw[0] % patch[0] or image_hw[1] % patch[1]:
        raise ConfigError(
            f'input_size {tuple(image_hw)} must be a multiple of the patch size {tuple(patch)}'
        )
    return TimmTower(trunk)


def check_siglip_trunk(trunk: nn.Module, name: str) -> None:
    """Raise ConfigError unless ``trunk`` is a timm ViT that SPACE-CLIP can read like SigLIP."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(trunk, VisionTransformer):
        raise ConfigError(
            f'timm tower {name!r} is a {type(trunk).__name__}; only timm VisionTransformer '
            f'towers (SigLIP) are supported'
        )
    if trunk.num_prefix_tokens != 0 or getattr(trunk, 'attn_pool', None) is None:
        raise ConfigError(
            f'timm tower {name!r} has {trunk.num_prefix_tokens} prefix token(s) and '
            f'global_pool={trunk.global_pool!r}; a SigLIP-style tower has no class or '
            f'register tokens and an attention-pool head'
        )
    if getattr(trunk, 'dynamic_img_size', False) or trunk.pos_embed is None:
        raise ConfigError(f'timm tower {name!r} needs a fixed, learned positional embedding')


def load_timm_tower_weights(tower: TimmTower, clip_model: str, pretrained: str) -> None:
    """Load the image tower of an open_clip SigLIP model (a tag, or a local weights file).

    open_clip builds the full model (both towers) and loads the weights; the trunk's state
    is copied into ``tower``, the positional embedding resampled to the tower's grid.
    """
    import open_clip
    from timm.layers import resample_abs_pos_embed

    if not os.path.isfile(pretrained) and not open_clip.get_pretrained_cfg(clip_model, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(clip_model)
        raise ConfigError(
            f'pretrained={pretrained!r} is neither a file nor an open_clip tag of '
            f'{clip_model!r} (tags: {tags})'
        )
    try:
        source = open_clip.create_model(clip_model, pretrained=pretrained, require_pretrained=True)
    except Exception as e:  # download, hub, unreadable file: all mean "no weights"
        raise CheckpointError(f'could not load {clip_model!r} weights {pretrained!r}: {e}') from e
    state = source.visual.trunk.state_dict()
    grid = tower.trunk.patch_embed.grid_size
    if 'pos_embed' in state and tuple(state['pos_embed'].shape) != tuple(
        tower.trunk.pos_embed.shape
    ):
        state['pos_embed'] = resample_abs_pos_embed(
            state['pos_embed'], new_size=list(grid), num_prefix_tokens=0
        )
    try:
        tower.trunk.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f'{clip_model!r} weights {pretrained!r} do not fit the tower: {e}'
        ) from e
