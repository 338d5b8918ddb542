"""The model registry, named presets and the one factory, ``create_model``.

An *architecture* (``MODELS``) is a DepthModel class with its config class; a *preset*
(``PRESETS``) is a named config of one architecture. ``create_model(name, **overrides)``
takes a preset name, applies overrides to its config (validated) and builds the model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.config import DepthModelConfig
from moa_depth_ros.model.depthclip import DepthCLIP, DepthCLIPConfig
from moa_depth_ros.model.moa_depthclip import MoADepthCLIP, MoADepthCLIPConfig
from moa_depth_ros.model.space_clip import SpaceCLIP, SpaceCLIPConfig

#: Architecture name -> (model class, config class).
MODELS: dict[str, tuple[type[DepthModel], type[DepthModelConfig]]] = {
    'moa_depthclip': (MoADepthCLIP, MoADepthCLIPConfig),
    'space_clip': (SpaceCLIP, SpaceCLIPConfig),
    'depthclip': (DepthCLIP, DepthCLIPConfig),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named configuration of one architecture."""

    model_name: str
    config: DepthModelConfig
    description: str


# A small ViT (6 blocks, width 128, patch 16) for the CPU quickstart and demos: random
# weights only (no pretrained CLIP has this shape); the decoder stops at half resolution.
TINY_CLIP_CFG = {
    'embed_dim': 64,
    'vision_cfg': {
        'image_size': 128,
        'layers': 6,
        'width': 128,
        'patch_size': 16,
        'head_width': 64,
    },
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 2, 'layers': 2},
}

PRESETS: dict[str, Preset] = {
    'moa_depthclip': Preset(
        'moa_depthclip', MoADepthCLIPConfig(), 'MoA-DepthCLIP, ViT-B/32, NYU range 0.1-10 m'
    ),
    'moa_depthclip_kitti': Preset(
        'moa_depthclip',
        MoADepthCLIPConfig(input_size=(224, 704), min_depth_m=0.5, max_depth_m=80.0),
        'MoA-DepthCLIP for driving scenes (KITTI-like aspect), 0.5-80 m',
    ),
    'moa_depthclip_tiny': Preset(
        'moa_depthclip',
        MoADepthCLIPConfig(
            input_size=(128, 128),
            clip_cfg=TINY_CLIP_CFG,
            adapter_after_blocks=(1, 3, 5),
            adapter_bottleneck=32,
            gate_hidden=64,
            trainable_last_blocks=2,
            decoder_channels=(128, 64, 32),
            decoder_skip_blocks=(3, 1),
            num_bins=64,
            head_hidden_channels=32,
        ),
        'MoA-DepthCLIP with a small random ViT for the CPU quickstart (not for real use)',
    ),
    'space_clip': Preset(
        'space_clip', SpaceCLIPConfig(), 'SPACE-CLIP, frozen ViT-B/16, NYU range 0.001-10 m'
    ),
    'space_clip_kitti': Preset(
        'space_clip',
        SpaceCLIPConfig(max_depth_m=80.0),
        'SPACE-CLIP with the official KITTI range 0.001-80 m (224x224 CLIP input)',
    ),
    'depthclip': Preset(
        'depthclip', DepthCLIPConfig(), 'DepthCLIP zero-shot, RN50, 416x544, 1-3 m bins'
    ),
}

DEFAULT_MODEL = 'moa_depthclip'

_LOG = logging.getLogger(__name__)


def create_model(
    name: str = DEFAULT_MODEL, *, pretrained: str | None = None, **overrides: Any
) -> DepthModel:
    """Build a model from a preset name with config ``overrides``.

    ``pretrained`` is None (random weights, offline), an open_clip pretrained tag such as
    'openai' (downloads on first use), or a local CLIP weights file. Overrides are fields
    of the preset's config dataclass, e.g. ``input_size=(96, 96)`` or ``clip_cfg={...}``.
    """
    preset = _preset(name)
    config = preset.config.with_overrides(**overrides) if overrides else preset.config
    return build_model(preset.model_name, config, pretrained=pretrained)


def build_model(
    model_name: str,
    config: DepthModelConfig | Mapping[str, Any],
    *,
    pretrained: str | None = None,
    build_text: bool = True,
) -> DepthModel:
    """Build an architecture from a config (dataclass or mapping).

    ``build_text=False`` skips the text tower: the text-derived buffers are allocated with
    the right shapes and must then come from a checkpoint (what ``load_model`` does).
    """
    if model_name not in MODELS:
        raise ConfigError(f'unknown model {model_name!r}; known: {sorted(MODELS)}')
    model_class, config_class = MODELS[model_name]
    if isinstance(config, Mapping):
        config = config_class.from_dict(config)
    if type(config) is not config_class:
        raise ConfigError(
            f'{model_name} needs a {config_class.__name__}, got {type(config).__name__}'
        )
    model = model_class(config, pretrained=pretrained, build_text=build_text)
    _LOG.info('built %s: parameters %s', model_name, model.parameter_counts())
    return model


def config_class_of(model_name: str) -> type[DepthModelConfig]:
    """Return the config dataclass of an architecture."""
    if model_name not in MODELS:
        raise ConfigError(f'unknown model {model_name!r}; known: {sorted(MODELS)}')
    return MODELS[model_name][1]


def preset_config(name: str) -> DepthModelConfig:
    """Return the (frozen) config of a preset."""
    return _preset(name).config


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f'unknown model preset {name!r}; known: {sorted(PRESETS)}')
    return PRESETS[name]
