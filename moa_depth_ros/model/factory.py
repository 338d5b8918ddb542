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
from moa_depth_ros.model.config import SIGLIP_MEAN, SIGLIP_STD, DepthModelConfig
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
    'space_clip_siglip': Preset(
        'space_clip',
        SpaceCLIPConfig(
            clip_model='ViT-B-16-SigLIP',
            clip_quick_gelu=False,
            image_mean=SIGLIP_MEAN,
            image_std=SIGLIP_STD,
        ),
        'SPACE-CLIP decoder on a frozen SigLIP ViT-B/16 (official nyu_siglip.yaml), 0.001-10 m',
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
    overrides = {**_tower_defaults(overrides, pretrained), **overrides}
    config = preset.config.with_overrides(**overrides) if overrides else preset.config
    return build_model(preset.model_name, config, pretrained=pretrained)


def _tower_defaults(overrides: Mapping[str, Any], pretrained: str | None) -> dict[str, Any]:
    """Return the settings that follow from an overridden ``clip_model`` (unless given).

    A preset's normalisation and activation belong to its own tower: switching the tower
    (``clip_model='ViT-B-16-SigLIP'``) takes the new tower's input statistics from open_clip's
    pretrained configs (those of ``pretrained`` when it is a tag, else those all its tags
    share). QuickGELU is off for timm (SigLIP) towers; for open_clip towers it is what the
    ``pretrained`` tag was trained with, else on (the default every CLIP preset uses), so
    ``space_clip_siglip`` switched back to a CLIP tower gets CLIP's activation.
    """
    if 'clip_model' not in overrides or overrides.get('clip_cfg') is not None:
        return {}
    import open_clip

    from moa_depth_ros.model.clip_backbone import tower_statistics
    from moa_depth_ros.model.timm_tower import is_timm_cfg

    clip_model = overrides['clip_model']
    cfg = open_clip.get_model_config(clip_model)
    if cfg is None:
        return {}  # the config's own validation names the bad architecture
    derived: dict[str, Any] = {}
    stats = tower_statistics(clip_model, pretrained)
    if stats is not None:
        derived['image_mean'], derived['image_std'] = stats
    if is_timm_cfg(cfg):
        derived['clip_quick_gelu'] = False
    else:
        tag_cfg = open_clip.get_pretrained_cfg(clip_model, pretrained) if pretrained else {}
        # open_clip marks QuickGELU on the architecture (``-quickgelu``) or on the tags trained
        # with it (OpenAI's); the other tags used GELU.
        marked = bool(cfg.get('quick_gelu')) or bool(tag_cfg.get('quick_gelu'))
        derived['clip_quick_gelu'] = marked if tag_cfg else True
    return derived


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
