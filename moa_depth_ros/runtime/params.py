"""The node's parameters: names, types, defaults, documentation and validation.

Every runtime setting of ``depth_node`` is declared from ``SPECS`` (typed, with a
description and constraints that ``ros2 param describe`` shows), checked here with a reason
on reject, and documented again in ``config/moa_depth.yaml`` (a test keeps the two equal).
The bag tool uses the same defaults, so offline output matches the node's.

Model paths come from a parameter or the package share directory, never from the working
directory: a launch file started from another folder must find the same model.

Pure Python: the node (rclpy) and the bag tool (argparse) both build on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
import re
from typing import Any, Mapping

from moa_depth_ros.errors import ConfigError

PACKAGE = 'moa_depth_ros'
BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'torch')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
RELIABILITIES = ('reliable', 'best_effort')
INPUT_RELIABILITIES = ('auto', *RELIABILITIES)
_DEVICE_RE = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')
_TYPE_WORDS = {
    'bool': 'true or false',
    'int': 'an integer',
    'float': 'a number',
    'str': 'a string',
}


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its default fixes the type (bool, int, float or str)."""

    name: str
    default: bool | int | float | str
    description: str
    read_only: bool = False
    choices: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    pattern: re.Pattern[str] | None = None

    @property
    def type_name(self) -> str:
        """'bool', 'int', 'float' or 'str'."""
        return type(self.default).__name__

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = []
        if self.choices:
            parts.append('one of ' + ', '.join(repr(c) for c in self.choices))
        if self.min_value is not None and self.max_value is not None:
            parts.append(f'in [{self.min_value:g}, {self.max_value:g}]')
        elif self.min_value is not None:
            parts.append(f'>= {self.min_value:g}')
        if self.pattern is not None:
            parts.append(f'matches {self.pattern.pattern}')
        if self.read_only:
            parts.append('read-only: restart the node to change it')
        return '; '.join(parts)

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None if it is."""
        expected = type(self.default)
        # bool is an int in Python; a ROS parameter never is both.
        ok_type = isinstance(value, expected) and (expected is bool) == isinstance(value, bool)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            return f'{self.name} must be {_TYPE_WORDS[self.type_name]}, got {value!r}'
        if expected is float and not math.isfinite(value):
            return f'{self.name} must be finite, got {value!r}'
        if self.choices is not None and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}; got {value!r}'
        if self.pattern is not None and not self.pattern.match(value):
            return f'{self.name} must match {self.pattern.pattern}, got {value!r}'
        if self.min_value is not None and value < self.min_value:
            return f'{self.name} must be >= {self.min_value:g}, got {value!r}'
        if self.max_value is not None and value > self.max_value:
            return f'{self.name} must be <= {self.max_value:g}, got {value!r}'
        return None


SPECS: tuple[ParamSpec, ...] = (
    ParamSpec(
        'model_path',
        '',
        'Depth model file: .onnx (ONNX Runtime), .engine/.plan (TensorRT) or .safetensors '
        '(PyTorch). An absolute path, or a path relative to share/moa_depth_ros/models.',
        read_only=True,
    ),
    ParamSpec(
        'backend',
        'auto',
        "Inference backend; 'auto' picks it from the model file's extension.",
        read_only=True,
        choices=BACKENDS,
    ),
    ParamSpec(
        'device',
        'auto',
        "Where the network runs: 'auto' (GPU when the backend has one), 'cpu', 'cuda' "
        "or 'cuda:N'.",
        read_only=True,
        pattern=_DEVICE_RE,
    ),
    ParamSpec(
        'cpu_threads',
        0,
        'CPU threads the network may use on the CPU (ONNX Runtime intra-op threads); 0 = the '
        'backend default, one per physical core.',
        read_only=True,
        min_value=0,
        max_value=256,
    ),
    ParamSpec(
        'cpu_spin_wait',
        False,
        "Let ONNX Runtime's threads busy-wait for the next frame: 1-2 ms less latency per "
        'frame, paid with a CPU core kept busy between frames. Off leaves that CPU to the '
        'rest of the robot.',
        read_only=True,
    ),
    ParamSpec(
        'depth_encoding',
        '32FC1',
        "Encoding of `depth`: '32FC1' metres (NaN = invalid) or '16UC1' millimetres "
        '(0 = invalid), as depth_image_proc accepts both.',
        choices=DEPTH_ENCODINGS,
    ),
    ParamSpec(
        'min_depth_m',
        0.0,
        'Depth below this is published as invalid; 0 uses the model minimum.',
        min_value=0.0,
    ),
    ParamSpec(
        'max_depth_m',
        0.0,
        'Depth above this is published as invalid; 0 uses the model maximum.',
        min_value=0.0,
    ),
    ParamSpec(
        'focal_length_correction',
        True,
        "Convert depth from the model's canonical camera to this camera's focal length "
        '(camera_info), so metric scale holds on cameras other than the training camera. '
        'Without a usable camera_info the canonical camera is assumed (said once on the log '
        'and on /diagnostics). Off: depth as the model predicts it.',
    ),
    ParamSpec('publish_cloud', True, 'Publish `points` (needs camera_info).'),
    ParamSpec('cloud_rgb', True, 'Add the image colour (rgb field) to `points`.'),
    ParamSpec(
        'cloud_decimation',
        1,
        'Keep every N-th pixel in both directions for `points` (depth stays full size).',
        min_value=1,
        max_value=16,
    ),
    ParamSpec(
        'cloud_organized',
        True,
        'Publish `points` as an organized H x W cloud with NaN for invalid pixels; false '
        'publishes only valid points (height 1).',
    ),
    ParamSpec('publish_confidence', True, 'Publish `depth/confidence` (32FC1, 0..1).'),
    ParamSpec('publish_colored', False, 'Publish `depth/colored`, a bgr8 preview.'),
    ParamSpec(
        'max_rate_hz',
        0.0,
        'Process at most this many frames per second (0 = as fast as frames come).',
        min_value=0.0,
    ),
    ParamSpec(
        'output_reliability',
        'reliable',
        "QoS reliability of the outputs: 'reliable' (RViz's default; matches every "
        "subscriber) or 'best_effort'.",
        choices=RELIABILITIES,
    ),
    ParamSpec(
        'output_history_depth',
        5,
        'Frames each output publisher keeps for a reliable subscriber that has not '
        'acknowledged them yet (KEEP_LAST depth). Fewer lose frames to a briefly slow '
        'subscriber; each costs up to one frame of that output in memory.',
        min_value=1,
        max_value=100,
    ),
    ParamSpec(
        'input_reliability',
        'auto',
        "QoS reliability of the image and camera_info subscriptions: 'auto' follows the "
        'publishers (reliable when every publisher offers it, as rosbag2 records), '
        "'reliable' or 'best_effort'. A best-effort reader loses large frames from a "
        'reliable camera under Fast DDS defaults.',
        choices=INPUT_RELIABILITIES,
    ),
    ParamSpec(
        'subscribe_compressed',
        False,
        'Also subscribe to `image/compressed` (sensor_msgs/CompressedImage, jpeg/png).',
    ),
    ParamSpec(
        'diagnostics_period_s',
        1.0,
        'Period of the /diagnostics status.',
        min_value=0.1,
        max_value=60.0,
    ),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}
READ_ONLY: frozenset[str] = frozenset(spec.name for spec in SPECS if spec.read_only)


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """The values of every parameter (defaults = ``SPECS`` defaults)."""

    model_path: str = ''
    backend: str = 'auto'
    device: str = 'auto'
    cpu_threads: int = 0
    cpu_spin_wait: bool = False
    depth_encoding: str = '32FC1'
    min_depth_m: float = 0.0
    max_depth_m: float = 0.0
    focal_length_correction: bool = True
    publish_cloud: bool = True
    cloud_rgb: bool = True
    cloud_decimation: int = 1
    cloud_organized: bool = True
    publish_confidence: bool = True
    publish_colored: bool = False
    max_rate_hz: float = 0.0
    output_reliability: str = 'reliable'
    output_history_depth: int = 5
    input_reliability: str = 'auto'
    subscribe_compressed: bool = False
    diagnostics_period_s: float = 1.0

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Validate a complete or partial name -> value mapping; raise ConfigError."""
        return cls().updated(values, runtime=False)

    def updated(self, changes: Mapping[str, Any], *, runtime: bool = True) -> NodeSettings:
        """Return a copy with ``changes`` applied, or raise ConfigError with the reason.

        ``runtime`` rejects read-only parameters (they take effect only at start).
        """
        for name, value in changes.items():
            spec = SPEC_BY_NAME.get(name)
            if spec is None:
                raise ConfigError(f'unknown parameter {name!r}')
            if runtime and spec.read_only and value != getattr(self, name):
                raise ConfigError(
                    f'{name} cannot change while the node runs (the model is loaded at '
                    f'start): restart the node with {name}:={value!r}'
                )
            reason = spec.check(value)
            if reason is not None:
                raise ConfigError(reason)
        typed = {
            name: float(value) if SPEC_BY_NAME[name].type_name == 'float' else value
            for name, value in changes.items()
        }
        new = dataclasses.replace(self, **typed)
        if new.min_depth_m > 0.0 and new.max_depth_m > 0.0 and new.min_depth_m >= new.max_depth_m:
            raise ConfigError(
                f'min_depth_m ({new.min_depth_m:g}) must be below max_depth_m '
                f'({new.max_depth_m:g}); 0 means the model range'
            )
        return new

    def depth_limits_m(self) -> tuple[float | None, float | None]:
        """(min, max) depth in metres; None where the model's own limit applies."""
        return (self.min_depth_m or None, self.max_depth_m or None)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Return the ``PipelineConfig`` fields these settings control."""
        min_depth_m, max_depth_m = self.depth_limits_m()
        return {
            'min_depth_m': min_depth_m,
            'max_depth_m': max_depth_m,
            'cloud': self.publish_cloud,
            'cloud_rgb': self.cloud_rgb,
            'decimation': self.cloud_decimation,
            'organized': self.cloud_organized,
            'focal_correction': self.focal_length_correction,
        }


def find_package_share(
    package: str = PACKAGE, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Find ``<prefix>/share/<package>`` through the ament index (AMENT_PREFIX_PATH).

    Reads the same marker files ament_index_python does, so the node needs no extra
    dependency; None outside a sourced ROS workspace.
    """
    env = os.environ if environ is None else environ
    for prefix in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if not prefix:
            continue
        marker = Path(prefix, 'share', 'ament_index', 'resource_index', 'packages', package)
        if marker.is_file():
            return Path(prefix, 'share', package)
    return None


def resolve_model_path(value: str, share_dir: Path | None) -> Path:
    """Turn the ``model_path`` parameter into an existing file, or raise ConfigError.

    Absolute (or ``~``) paths are used as given; anything else is looked up under
    ``<share_dir>/models``. The working directory is never consulted.
    """
    if not value:
        raise ConfigError(
            'model_path is empty: pass model_path:=/absolute/path/model.onnx (or a file name '
            'under share/moa_depth_ros/models); export one with `python -m training export`'
        )
    path = Path(value).expanduser()
    if not path.is_absolute():
        if share_dir is None:
            raise ConfigError(
                f'model_path {value!r} is relative and the moa_depth_ros share directory was '
                f'not found (source the workspace, or give an absolute path)'
            )
        path = Path(share_dir, 'models', path)
    if not path.is_file():
        raise ConfigError(f'model_path {value!r}: no such file {str(path)!r}')
    return path
