"""The fields every depth model's config shares, their validation and their JSON form.

Each model has one frozen config dataclass deriving from ``DepthModelConfig``. The config is
the whole recipe: it travels as JSON in checkpoint metadata and ONNX metadata, and
``load_model`` rebuilds the network from it alone, so every field must survive a JSON round
trip (tuples come back as lists and are turned back into tuples here).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping, TypeVar

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.scale import CanonicalCamera

# OpenAI CLIP's training statistics; the towers expect inputs normalised with them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP (big_vision) maps pixels to [-1, 1]; the official SPACE-CLIP SigLIP config agrees.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# DepthCLIP's evaluation normalises with ImageNet statistics instead (one of its quirks).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ConfigT = TypeVar('ConfigT', bound='DepthModelConfig')


@dataclasses.dataclass(frozen=True)
class DepthModelConfig:
    """Fields shared by every model: input size, depth range, CLIP tower, normalisation."""

    #: Network input (height, width) in pixels; the tower's positional grid is built for it.
    input_size: tuple[int, int] = (224, 224)
    min_depth_m: float = 0.1
    max_depth_m: float = 10.0
    #: open_clip architecture name (``open_clip.list_models()``).
    clip_model: str = 'ViT-B-32-quickgelu'
    #: OpenAI weights were trained with QuickGELU; this always overrides the config's value.
    #: timm (SigLIP) towers use tanh GELU and need it false.
    clip_quick_gelu: bool = True
    #: An open_clip model-config dict (embed_dim, vision_cfg, text_cfg) replacing the named
    #: architecture, e.g. a tiny tower for tests and the CPU quickstart.
    clip_cfg: dict[str, Any] | None = None
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    #: The camera the depth is defined for (``moa_depth_ros.frame.scale``): a mapping with name,
    #: fx_px, fy_px, width, height, set by the recipe from its dataset's camera. Training
    #: labels are converted to it and runtimes convert predictions back with the real
    #: camera's focal length. None: depth for whatever camera the model was trained on.
    canonical_camera: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        height, width = _pair(self.input_size, 'input_size')
        if height <= 0 or width <= 0:
            raise ConfigError(f'input_size must be positive, got {self.input_size!r}')
        lo, hi = float(self.min_depth_m), float(self.max_depth_m)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
            raise ConfigError(
                f'depth range must satisfy 0 <= min_depth_m < max_depth_m, got '
                f'min_depth_m={self.min_depth_m!r}, max_depth_m={self.max_depth_m!r}'
            )
        for name in ('image_mean', 'image_std'):
            value = getattr(self, name)
            if len(value) != 3:
                raise ConfigError(f'{name} needs 3 values (RGB), got {value!r}')
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f'image_std must be positive, got {self.image_std!r}')
        if self.clip_cfg is not None and not isinstance(self.clip_cfg, Mapping):
            raise ConfigError(f'clip_cfg must be an open_clip config dict, got {self.clip_cfg!r}')
        if self.canonical_camera is not None:
            if not isinstance(self.canonical_camera, Mapping):
                raise ConfigError(
                    f'canonical_camera must be a mapping, got {self.canonical_camera!r}'
                )
            self.canonical()  # validates

    def canonical(self) -> CanonicalCamera | None:
        """Return the canonical camera, or None for a model without one."""
        if self.canonical_camera is None:
            return None
        return CanonicalCamera.from_dict(self.canonical_camera)

    def canonical_focal_px(self) -> float | None:
        """Return the canonical focal length at the network input (px), or None."""
        camera = self.canonical()
        return None if camera is None else camera.focal_at_input_px(tuple(self.input_size))

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain JSON-compatible Python values."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Serialise canonically (sorted keys), so equal configs give equal digests."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(',', ':'))

    def digest(self) -> str:
        """Return the sha256 of ``to_json()``: a short identity for exported files."""
        return hashlib.sha256(self.to_json().encode('utf-8')).hexdigest()

    @classmethod
    def from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
        """Build from a mapping (e.g. parsed JSON), rejecting unknown fields."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f'{cls.__name__} has no field(s) {unknown}; known: {sorted(known)}')
        kwargs = {name: _coerce(cls, name, value) for name, value in values.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f'{cls.__name__}: {e}') from e

    def with_overrides(self: ConfigT, **overrides: Any) -> ConfigT:
        """Return a copy with ``overrides`` applied and validated."""
        merged = self.to_dict()
        merged.update(overrides)
        return type(self).from_dict(merged)

    def resolved_clip_cfg(self) -> dict[str, Any]:
        """Return the open_clip model-config dict to build (a private deep copy)."""
        if self.clip_cfg is not None:
            cfg = copy.deepcopy(dict(self.clip_cfg))
        else:
            import open_clip  # heavy import kept out of module import time

            cfg = open_clip.get_model_config(self.clip_model)
            if cfg is None:
                raise ConfigError(
                    f'clip_model={self.clip_model!r} is not an open_clip architecture; '
                    f'see open_clip.list_models()'
                )
        for key in ('embed_dim', 'vision_cfg', 'text_cfg'):
            if key not in cfg:
                raise ConfigError(f'clip_cfg lacks {key!r}; got keys {sorted(cfg)}')
        cfg['quick_gelu'] = bool(self.clip_quick_gelu)
        return cfg


def _pair(value: Any, name: str) -> tuple[int, int]:
    try:
        first, second = value
        return int(first), int(second)
    except (TypeError, ValueError) as e:
        raise ConfigError(f'{name} must be (height, width), got {value!r}') from e


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn JSON lists back into tuples where the field's default is a tuple."""
    default = next(f for f in dataclasses.fields(cls) if f.name == name).default
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def check_index_list(values: tuple[int, ...], name: str, lo: int, hi: int) -> None:
    """Raise ConfigError unless ``values`` are distinct integers in [lo, hi]."""
    if len(set(values)) != len(values) or any(
        not isinstance(v, int) or not lo <= v <= hi for v in values
    ):
        raise ConfigError(f'{name} must be distinct integers in [{lo}, {hi}], got {values!r}')
