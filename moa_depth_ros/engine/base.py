"""The inference contract shared by every backend, the exporter and the pipeline.

A depth network, whatever runs it, is a fixed-size function::

    image      float32 [N, 3, H, W]  RGB in [0, 1], already resized to (H, W)
    -> depth   float32 [N, 1, H, W]  metres along the optical axis
       confidence float32 [N, 1, H, W] in [0, 1]

Normalisation happens inside the network, so every backend agrees. What a runtime needs to
know about the network (input size, depth range, tensor names) travels with the weights as
``ModelMetadata``: ONNX ``metadata_props``, the TensorRT engine's sidecar JSON, or the
safetensors header. Nothing is guessed from file names.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from typing import Mapping

import numpy as np

from moa_depth_ros.errors import EngineError, ModelMetadataError

INPUT_NAME = 'image'
OUTPUT_NAMES = ('depth', 'confidence')

# The keys every exported model carries. Values are strings (ONNX metadata_props are
# string -> string); ``ModelMetadata.from_dict`` parses and validates them.
REQUIRED_KEYS = (
    'model_name',
    'input_height',
    'input_width',
    'min_depth_m',
    'max_depth_m',
    'input_name',
    'output_names',
    'package_version',
)


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What a runtime must know about an exported depth network."""

    model_name: str
    input_height: int
    input_width: int
    min_depth_m: float
    max_depth_m: float
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = OUTPUT_NAMES
    package_version: str = ''
    #: Focal length (px, at the network input) of the camera the depth is defined for, and
    #: how it was derived (``moa_depth_ros.frame.scale``); None for a model without one.
    canonical_focal_px: float | None = None
    canonical_camera: str = ''
    # Free-form extras: config digest/json, source ONNX sha256, TensorRT version, ...
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_height <= 0 or self.input_width <= 0:
            raise ModelMetadataError(
                f'input size must be positive, got {self.input_height}x{self.input_width}'
            )
        if not (math.isfinite(self.min_depth_m) and math.isfinite(self.max_depth_m)):
            raise ModelMetadataError(
                f'depth range must be finite, got [{self.min_depth_m}, {self.max_depth_m}]'
            )
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ModelMetadataError(
                f'depth range must satisfy 0 <= min < max, '
                f'got [{self.min_depth_m}, {self.max_depth_m}]'
            )
        focal = self.canonical_focal_px
        if focal is not None and not (math.isfinite(focal) and focal > 0):
            raise ModelMetadataError(f'canonical_focal_px must be positive, got {focal!r}')

    @property
    def input_hw(self) -> tuple[int, int]:
        """Network input size as (height, width) in pixels."""
        return (self.input_height, self.input_width)

    def to_dict(self) -> dict[str, str]:
        """Serialise to the string -> string mapping stored in ONNX metadata_props."""
        out = {
            'model_name': self.model_name,
            'input_height': str(self.input_height),
            'input_width': str(self.input_width),
            'min_depth_m': repr(float(self.min_depth_m)),
            'max_depth_m': repr(float(self.max_depth_m)),
            'input_name': self.input_name,
            'output_names': ','.join(self.output_names),
            'package_version': self.package_version,
        }
        if self.canonical_focal_px is not None:
            out['canonical_focal_px'] = repr(float(self.canonical_focal_px))
            out['canonical_camera'] = self.canonical_camera
        for key, value in self.extra.items():
            if key in out:
                raise ModelMetadataError(f'extra metadata key {key!r} shadows a required key')
            out[key] = str(value)
        return out

    @classmethod
    def from_dict(cls, props: Mapping[str, str], source: str = '<model>') -> ModelMetadata:
        """Parse and validate metadata; ``source`` names the file in error messages."""
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ModelMetadataError(
                f'{source}: metadata lacks {", ".join(missing)}; re-export the model with '
                f'`python -m training export` so the runtime knows its input size and range'
            )
        try:
            meta = cls(
                model_name=props['model_name'],
                input_height=int(props['input_height']),
                input_width=int(props['input_width']),
                min_depth_m=float(props['min_depth_m']),
                max_depth_m=float(props['max_depth_m']),
                input_name=props['input_name'],
                output_names=tuple(props['output_names'].split(',')),
                package_version=props['package_version'],
                canonical_focal_px=(
                    float(props['canonical_focal_px']) if 'canonical_focal_px' in props else None
                ),
                canonical_camera=props.get('canonical_camera', ''),
                extra={
                    k: v
                    for k, v in props.items()
                    if k not in REQUIRED_KEYS and k not in CANONICAL_KEYS
                },
            )
        except ValueError as e:
            if isinstance(e, ModelMetadataError):
                raise ModelMetadataError(f'{source}: {e}') from e
            raise ModelMetadataError(f'{source}: malformed metadata value: {e}') from e
        if tuple(meta.output_names) != OUTPUT_NAMES:
            raise ModelMetadataError(
                f'{source}: outputs must be named {list(OUTPUT_NAMES)}, '
                f'got {list(meta.output_names)}'
            )
        if meta.input_name != INPUT_NAME:
            raise ModelMetadataError(
                f'{source}: input must be named {INPUT_NAME!r}, got {meta.input_name!r}'
            )
        return meta

    def to_json(self) -> str:
        """Serialise as JSON (used by the TensorRT sidecar file)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Optional keys with typed fields: the canonical camera (moa_depth_ros.frame.scale).
CANONICAL_KEYS = ('canonical_focal_px', 'canonical_camera')
# Keys of ``DepthModel.describe()`` that map onto ModelMetadata's typed fields.
_DESCRIBE_FIELDS = ('model_name', 'input_height', 'input_width', 'min_depth_m', 'max_depth_m')


def metadata_from_description(
    description: Mapping[str, str],
    *,
    package_version: str,
    extra: Mapping[str, str] | None = None,
    source: str = '<model>',
) -> ModelMetadata:
    """Build ModelMetadata from a model's ``describe()`` dict (what export embeds).

    Keys other than the typed fields (``config_json``, ``config_digest``, ...) become extras;
    ``extra`` adds more (opset, export time) and wins on a clash.
    """
    missing = [key for key in _DESCRIBE_FIELDS if key not in description]
    if missing:
        raise ModelMetadataError(f'{source}: describe() lacks {", ".join(missing)}')
    extras = {k: str(v) for k, v in description.items() if k not in _DESCRIBE_FIELDS}
    extras.update({k: str(v) for k, v in (extra or {}).items()})
    for key in REQUIRED_KEYS + CANONICAL_KEYS:
        extras.pop(key, None)
    focal = description.get('canonical_focal_px')
    try:
        return ModelMetadata(
            model_name=str(description['model_name']),
            input_height=int(description['input_height']),
            input_width=int(description['input_width']),
            min_depth_m=float(description['min_depth_m']),
            max_depth_m=float(description['max_depth_m']),
            package_version=package_version,
            canonical_focal_px=None if focal is None else float(focal),
            canonical_camera=str(description.get('canonical_camera', '')),
            extra=extras,
        )
    except (TypeError, ValueError) as e:
        raise ModelMetadataError(f'{source}: malformed describe() value: {e}') from e


class DepthEngine(abc.ABC):
    """One loaded depth network behind a backend (tensorrt, onnxruntime, torch)."""

    #: Backend name, e.g. ``'onnxruntime'``; also reported on /diagnostics.
    backend: str = ''
    #: Why this backend runs the model when ``backend='auto'`` chose it ('' otherwise).
    selection: str = ''

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    @property
    def input_hw(self) -> tuple[int, int]:
        """Network input size as (height, width) in pixels."""
        return self.metadata.input_hw

    @property
    def depth_range_m(self) -> tuple[float, float]:
        """The (min, max) depth in metres the network can output."""
        return (self.metadata.min_depth_m, self.metadata.max_depth_m)

    @property
    def model_name(self) -> str:
        """Name of the network (e.g. ``moa_depthclip``)."""
        return self.metadata.model_name

    @property
    def canonical_focal_px(self) -> float | None:
        """Focal length (px at the input) the depth is defined for; None: not recorded."""
        return self.metadata.canonical_focal_px

    def check_input(self, image: np.ndarray) -> np.ndarray:
        """Validate an input batch and return it as contiguous float32 NCHW."""
        if not isinstance(image, np.ndarray):
            raise EngineError(f'{self.backend}: input must be a numpy array, got {type(image)}')
        h, w = self.input_hw
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2:] != (h, w):
            raise EngineError(
                f'{self.backend}: input must be [N, 3, {h}, {w}] (the model input size), '
                f'got {list(image.shape)}'
            )
        return np.ascontiguousarray(image, dtype=np.float32)

    @abc.abstractmethod
    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network.

        ``image`` is float32 [N, 3, H, W] RGB in [0, 1] at ``input_hw``; returns
        ``(depth_m, confidence)``, each float32 [N, 1, H, W].
        """

    def close(self) -> None:
        """Release backend resources (GPU memory, sessions). Idempotent."""

    def __enter__(self) -> DepthEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line for logs and diagnostics."""
        h, w = self.input_hw
        lo, hi = self.depth_range_m
        chosen = f', {self.selection}' if self.selection else ''
        return f'{self.model_name} via {self.backend} ({w}x{h}, {lo:g}-{hi:g} m{chosen})'
