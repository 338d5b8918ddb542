"""Reading a frozen ViT tower the way Hugging Face's vision models report it.

SPACE-CLIP taps ``hidden_states`` and a global context vector (HF's ``pooler_output``) from
its backbone. Two tower families give them differently:

- open_clip ``VisionTransformer`` (CLIP): a class token first; ``hidden_states[0]`` is the
  token sequence after ``ln_pre``; the context is ``ln_post`` of the last block's class token.
- timm ``VisionTransformer`` without prefix tokens (SigLIP, ``timm_tower``): patch tokens
  only; ``hidden_states[0]`` is the patch embedding plus positions (SigLIP has no pre-norm);
  the context is the attention-pool head on the final LayerNorm's output.

``vit_taps(visual)`` returns the reader for a tower and raises ConfigError for any other.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.clip_backbone import vit_block, vit_depth, vit_grid, vit_tokens


class ViTTaps(abc.ABC):
    """Hidden states, patch tokens and the pooled context of one tower."""

    #: Whether ``hidden_states`` carry a class token in front of the patch tokens.
    has_class_token: bool

    def __init__(self, visual: nn.Module) -> None:
        self.visual = visual

    @property
    @abc.abstractmethod
    def width(self) -> int:
        """Token width (channels of every tap)."""

    @property
    @abc.abstractmethod
    def grid_hw(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""

    @property
    @abc.abstractmethod
    def depth(self) -> int:
        """Number of transformer blocks: ``hidden_states`` has ``depth + 1`` entries."""

    @abc.abstractmethod
    def hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Return HF's ``hidden_states``: [0] the embeddings, [k] the output of block k-1."""

    @abc.abstractmethod
    def pooled(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """Return HF's ``pooler_output`` [N, width] from ``hidden_states[-1]``."""

    def patch_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return the patch tokens [N, h*w, width] of one hidden state."""
        return hidden[:, 1:] if self.has_class_token else hidden


class OpenCLIPViTTaps(ViTTaps):
    """An open_clip ``VisionTransformer`` pooled by its class token (HF ``CLIPVisionModel``)."""

    has_class_token = True

    def __init__(self, visual: nn.Module) -> None:
        super().__init__(visual)
        if getattr(visual, 'attn_pool', None) is not None or visual.pool_type != 'tok':
            raise ConfigError(
                f'open_clip ViT with pool_type={visual.pool_type!r} and attentional pooling '
                f'{visual.attn_pool is not None}: SPACE-CLIP reads the class token '
                f"(pool_type 'tok', no attentional pooler)"
            )

    @property
    def width(self) -> int:
        return int(self.visual.conv1.out_channels)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return vit_grid(self.visual)

    @property
    def depth(self) -> int:
        return vit_depth(self.visual)

    def hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        hidden = [vit_tokens(self.visual, pixels)]
        for block in self.visual.transformer.resblocks:
            hidden.append(vit_block(block, hidden[-1]))
        return hidden

    def pooled(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(last_hidden[:, 0])


class TimmSigLIPTaps(ViTTaps):
    """A timm ViT without prefix tokens, pooled by attention (HF ``SiglipVisionModel``)."""

    has_class_token = False

    @property
    def trunk(self) -> nn.Module:
        return self.visual.trunk

    @property
    def width(self) -> int:
        return int(self.trunk.embed_dim)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.trunk.patch_embed.grid_size)

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    def hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        trunk = self.trunk
        hidden = [trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels)))]
        for block in trunk.blocks:
            hidden.append(block(hidden[-1]))
        return hidden

    def pooled(self, last_hidden: torch.Tensor) -> torch.Tensor:
        # HF: head(post_layernorm(last_hidden_state)); timm: attn_pool(norm(x)).
        return self.trunk.attn_pool(self.trunk.norm(last_hidden))


def vit_taps(visual: nn.Module) -> ViTTaps:
    """Return the reader for ``visual`` (ConfigError for towers SPACE-CLIP cannot read)."""
    from moa_depth_ros.model.timm_tower import TimmTower, check_siglip_trunk

    if isinstance(visual, TimmTower):
        check_siglip_trunk(visual.trunk, type(visual.trunk).__name__)
        return TimmSigLIPTaps(visual)
    if hasattr(visual, 'conv1') and hasattr(visual, 'transformer') and hasattr(visual, 'ln_post'):
        return OpenCLIPViTTaps(visual)
    raise ConfigError(
        f'SPACE-CLIP needs an open_clip ViT or a SigLIP-style timm ViT tower, got '
        f'{type(visual).__name__}'
    )
