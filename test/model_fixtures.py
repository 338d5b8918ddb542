"""Tiny CLIP towers and model builders shared by the test_model_*.py files.

Real architectures, shrunk: a 4-block ViT (width 64, patch 16) and a one-block-per-stage
ResNet (width 8), with a one-layer text tower that still uses CLIP's real tokenizer. They
build in milliseconds and run on a CPU without downloads.
"""

from __future__ import annotations

import copy

import torch

from moa_depth_ros.model import create_model

TINY_TEXT_CFG = {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1}
TINY_VIT_CFG = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 64, 'layers': 4, 'width': 64, 'patch_size': 16, 'head_width': 32},
    'text_cfg': TINY_TEXT_CFG,
}
# layer4 width 8 * 32 = 256 channels = 2 x embed_dim, the same 2:1 ratio as RN50's
# 2048 -> 1024 that DepthCLIP's channel subsampling relies on.
TINY_RESNET_CFG = {
    'embed_dim': 128,
    'vision_cfg': {'image_size': 64, 'layers': [1, 1, 1, 1], 'width': 8, 'head_width': 32},
    'text_cfg': TINY_TEXT_CFG,
}

TINY_MOA = {
    'clip_cfg': TINY_VIT_CFG,
    'input_size': (64, 96),
    'adapter_after_blocks': (0, 1, 2, 3),
    'trainable_last_blocks': 2,
    'decoder_skip_blocks': (2, 1),
    'decoder_channels': (32, 16, 16, 8),
    'num_bins': 16,
    'head_hidden_channels': 8,
}
TINY_SPACE = {
    'clip_cfg': TINY_VIT_CFG,
    'input_size': (64, 64),
    'main_path_indices': (4, 3, 2, 1),
    'structural_path_indices': (2, 1, 0),
    'decoder_channels': (32, 16, 16, 8),
    'film_param_hidden_dim': 16,
}
TINY_DEPTHCLIP = {'clip_cfg': TINY_RESNET_CFG, 'input_size': (64, 96)}
# open_clip's ViT-B-16-SigLIP image tower (timm, attention-pool head), shrunk with timm
# keyword arguments to the tiny ViT's size: 4 blocks, width 64, 2 heads, patch 16.
TINY_SIGLIP_CFG = {
    'embed_dim': 64,
    'vision_cfg': {
        'image_size': 64,
        'timm_model_name': 'vit_base_patch16_siglip_224',
        'timm_pool': 'map',
        'timm_proj': 'none',
        'timm_model_kwargs': {'embed_dim': 64, 'depth': 4, 'num_heads': 2},
    },
    'text_cfg': TINY_TEXT_CFG,
}
# The preset space_clip_siglip with that tower (not in TINY, which is keyed by architecture).
TINY_SPACE_SIGLIP = {**TINY_SPACE, 'clip_cfg': TINY_SIGLIP_CFG}

TINY = {'moa_depthclip': TINY_MOA, 'space_clip': TINY_SPACE, 'depthclip': TINY_DEPTHCLIP}


def tiny_model(name: str, seed: int = 0, **overrides):
    """Build a tiny model of architecture ``name`` with deterministic random weights."""
    torch.manual_seed(seed)
    kwargs = copy.deepcopy(TINY[name])
    kwargs.update(overrides)
    return create_model(name, **kwargs)


def tiny_siglip_space_clip(seed: int = 0, **overrides):
    """Build the space_clip_siglip preset with the tiny SigLIP tower."""
    torch.manual_seed(seed)
    kwargs = copy.deepcopy(TINY_SPACE_SIGLIP)
    kwargs.update(overrides)
    return create_model('space_clip_siglip', **kwargs)


def random_image(model, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """RGB in [0, 1] at the model's input size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *model.input_hw, generator=generator)


def perturb_batchnorm(model: torch.nn.Module, seed: int = 2) -> None:
    """Give BatchNorm layers non-trivial statistics so eval-mode outputs are not degenerate."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(1.0 + 0.5 * torch.rand(n, generator=generator))
