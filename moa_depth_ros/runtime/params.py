"""The node's parameters, declared once: names, types, defaults, documentation, validation.

``SPECS`` is the only definition of a runtime setting. Everything else is derived from it:
``NodeSettings`` (the typed, immutable values; a dataclass generated from ``SPECS``), the
node's parameter declarations and descriptors (``ros2 param describe``), the flags of
``moa-depth bag`` (``add_offline_arguments``, for the specs marked ``offline``) and the
documented parameter file ``config/moa_depth.yaml`` (``render_yaml``; ``make config``
rewrites it and a test fails when it is stale). Each value is checked here, once, with a
reason on reject; the one check that needs the model (``min_depth_m`` below ``max_depth_m``,
0 meaning the model's own limit) is ``DepthPipeline.depth_range_m``.

Model paths come from a parameter or the package share directory, never from the working
directory: a launch file started from another folder must find the same model.

Pure Python: the node (rclpy) and the bag tool (argparse) both build on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
import re
import sys
import textwrap
from typing import Any, Mapping, Sequence

from moa_depth_ros.engine.loader import BACKENDS as ENGINE_BACKENDS
from moa_depth_ros.errors import ConfigError

PACKAGE = 'moa_depth_ros'
BACKENDS = ('auto', *ENGINE_BACKENDS)
DEPTH_ENCODINGS = ('32FC1', '16UC1')
RELIABILITIES = ('reliable', 'best_effort')
INPUT_RELIABILITIES = ('auto', *RELIABILITIES)
# image_transport's transports the node reads (its plugins' names).
TRANSPORTS = ('raw', 'compressed')
_DEVICE_RE = re.compile(r'^(auto|cpu|cuda(:\d+)?|gpu(:\d+)?|npu)$')
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16', 'int8')
_TYPE_WORDS = {
    'bool': 'true or false',
    'int': 'an integer',
    'float': 'a number',
    'str': 'a string',
}
# The parameter file's sections, in order (ParamSpec.section).
SECTIONS = {
    'model': 'model (read-only: restart the node to change)',
    'depth': 'depth output',
    'cloud': 'point cloud (`points`, needs camera_info)',
    'inputs': 'inputs, rate and QoS',
    'diagnostics': 'diagnostics',
}


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its default fixes the type (bool, int, float or str).

    ``offline``: also an option of ``moa-depth bag`` (``--name-with-dashes``; booleans as
    ``--name`` / ``--no-name``). ``section``: where ``config/moa_depth.yaml`` lists it.
    """

    name: str
    default: bool | int | float | str
    description: str
    section: str
    read_only: bool = False
    choices: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    pattern: re.Pattern[str] | None = None
    offline: bool = False

    @property
    def type_name(self) -> str:
        """'bool', 'int', 'float' or 'str'."""
        return type(self.default).__name__

    @property
    def flag(self) -> str:
        """The ``moa-depth bag`` option of an offline parameter."""
        return '--' + self.name.replace('_', '-')

    @property
    def value_constraints(self) -> str:
        """The values it accepts, in words ('' when any value of its type)."""
        parts = []
        if self.choices:
            parts.append('one of ' + ', '.join(repr(c) for c in self.choices))
        if self.min_value is not None and self.max_value is not None:
            parts.append(f'in [{self.min_value:g}, {self.max_value:g}]')
        elif self.min_value is not None:
            parts.append(f'>= {self.min_value:g}')
        if self.pattern is not None:
            parts.append(f'matches {self.pattern.pattern}')
        return '; '.join(parts)

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = [self.value_constraints] if self.value_constraints else []
        if self.read_only:
            parts.append('read-only: restart the node to change it')
        return '; '.join(parts)

    @property
    def documentation(self) -> str:
        """The description and the accepted values: the parameter file's and --help's text."""
        values = self.value_constraints
        return f'{self.description} Values: {values}.' if values else self.description

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
        if self.pattern is not None and not self.pattern.fullmatch(value):
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
        'Depth model file: .onnx (ONNX Runtime or OpenVINO), .engine/.plan (TensorRT) or '
        '.safetensors (PyTorch). The node takes an absolute path, or a path relative to '
        "share/moa_depth_ros/models (never its working directory; the launch file's `model:=` "
        'argument sets it); `moa-depth bag` takes the path as given.',
        'model',
        read_only=True,
        offline=True,
    ),
    ParamSpec(
        'backend',
        'auto',
        "Inference backend; 'auto' picks it from the model file's extension, and for an .onnx "
        'file the faster of ONNX Runtime and OpenVINO on this machine (measured at the first '
        'start, then cached).',
        'model',
        read_only=True,
        choices=BACKENDS,
        offline=True,
    ),
    ParamSpec(
        'device',
        'auto',
        "Where the network runs: 'auto' (an NVIDIA GPU when the backend has one, else the "
        "CPU), 'cpu', 'cuda' or 'cuda:N' (NVIDIA); with OpenVINO also 'gpu', 'gpu:N' (Intel) "
        "or 'npu'.",
        'model',
        read_only=True,
        pattern=_DEVICE_RE,
        offline=True,
    ),
    ParamSpec(
        'precision',
        'auto',
        "Arithmetic of the network. 'auto' is the backend's default: fp32, except a TensorRT "
        'engine built from ONNX (fp16; DepthCLIP fp32, without TF32) and OpenVINO (the '
        "device's preference: bf16 on CPUs with AMX or AVX512-BF16, fp16 on Intel GPUs). A "
        'reduced precision, default or asked for, is checked against fp32 on fixed inputs and '
        'kept only if its depth stays within 1 % (TensorRT first retries with the sensitive '
        'layers in fp32); else fp32 runs and the log says why. fp32 forces full precision. '
        'With backend '
        'auto, bf16 or fp16 on an .onnx file selects OpenVINO. '
        'int8 runs an INT8 model (the .int8.xml that `python -m training export --int8` '
        'writes, on the CPU through OpenVINO); an FP32 file is refused with its name. '
        'ONNX Runtime runs a file as exported.',
        'model',
        read_only=True,
        choices=PRECISIONS,
        offline=True,
    ),
    ParamSpec(
        'cpu_threads',
        0,
        'CPU threads the network may use on the CPU (ONNX Runtime intra-op threads, OpenVINO '
        'inference threads); 0 = the backend default, one per physical core.',
        'model',
        read_only=True,
        min_value=0,
        max_value=256,
        offline=True,
    ),
    ParamSpec(
        'cpu_spin_wait',
        False,
        "Let ONNX Runtime's threads busy-wait for the next frame: 1-2 ms less latency per "
        'frame, paid with a CPU core kept busy between frames. Off leaves that CPU to the '
        'rest of the robot.',
        'model',
        read_only=True,
    ),
    ParamSpec(
        'depth_encoding',
        '32FC1',
        "Encoding of `depth/image_rect`: '32FC1' metres (REP 117: +Inf beyond max_depth_m, "
        "-Inf below min_depth_m, NaN no estimate) or '16UC1' millimetres (0 for all three, "
        'REP 118), as depth_image_proc accepts both.',
        'depth',
        choices=DEPTH_ENCODINGS,
        offline=True,
    ),
    ParamSpec(
        'min_depth_m',
        0.0,
        "Depth below this is published as too near (-Inf in 32FC1); 0 uses the model's minimum.",
        'depth',
        min_value=0.0,
        offline=True,
    ),
    ParamSpec(
        'max_depth_m',
        0.0,
        'Depth above this is published as out of range (+Inf in 32FC1, which Nav2 and '
        "depthimage_to_laserscan clear free space with); 0 uses the model's maximum.",
        'depth',
        min_value=0.0,
        offline=True,
    ),
    ParamSpec(
        'input_rectified',
        False,
        "The images are already rectified (image_proc's `image_rect`, with the camera's own "
        'camera_info): P is their camera and D is ignored, as every ROS consumer does. False '
        '(raw images, the default): each image is rectified with its camera_info (plumb_bob, '
        'rational_polynomial, equidistant) before the network. Either way depth, confidence '
        'and points describe the rectified camera on `depth/camera_info` (D = 0, K = P).',
        'depth',
        offline=True,
    ),
    ParamSpec(
        'focal_length_correction',
        True,
        "Convert depth from the model's canonical camera to this camera's focal length "
        '(camera_info), so metric scale holds on cameras other than the training camera. '
        'Without a usable camera_info the canonical camera is assumed (said once on the log '
        'and on /diagnostics). Off: depth as the model predicts it.',
        'depth',
        offline=True,
    ),
    ParamSpec(
        'flip_average',
        False,
        'Also run the network on the mirror image and average the two depth maps (the '
        "papers' test-time flip, e.g. SPACE-CLIP's reported numbers): slightly better depth "
        'for models trained with flip augmentation, at twice the network time per frame.',
        'depth',
        offline=True,
    ),
    ParamSpec(
        'publish_confidence',
        True,
        'Publish `depth/confidence` (32FC1, 0..1, 0 where depth is invalid).',
        'depth',
        offline=True,
    ),
    ParamSpec(
        'publish_colored',
        False,
        'Publish `depth/colored`, a bgr8 preview (near = red, far = blue, invalid = black).',
        'depth',
        offline=True,
    ),
    ParamSpec(
        'publish_cloud', True, 'Publish `points` (needs camera_info).', 'cloud', offline=True
    ),
    ParamSpec(
        'cloud_rgb',
        True,
        'Add the image colour to `points` as an rgb field (RViz: Color Transformer RGB8).',
        'cloud',
        offline=True,
    ),
    ParamSpec(
        'cloud_decimation',
        0,
        'Keep every N-th pixel in both directions for `points` (depth stays full size). 0 = '
        'auto: the smallest N whose cloud fits in cloud_max_kib, so that best-effort '
        "subscribers (Nav2's costmap layers: SensorDataQoS) receive it whole under Fast DDS "
        'defaults (VGA: N 4, 19,200 points; 1280x720: N 7). 1 = every pixel (RViz: use the '
        'DepthCloud display on depth/image_rect for a full-resolution view instead).',
        'cloud',
        min_value=0,
        max_value=16,
        offline=True,
    ),
    ParamSpec(
        'cloud_max_kib',
        320,
        'Size (KiB) an auto-decimated `points` stays within (cloud_decimation 0). Fast DDS '
        'shares memory in 512 KiB segments by default; a larger cloud reaches reliable '
        'subscribers but a best-effort one loses most of them.',
        'cloud',
        min_value=16,
        max_value=1048576,
        offline=True,
    ),
    ParamSpec(
        'cloud_organized',
        True,
        'Publish `points` as an organized H x W cloud with NaN for invalid pixels (is_dense '
        'false, like depth_image_proc); false publishes only valid points (height 1).',
        'cloud',
        offline=True,
    ),
    ParamSpec(
        'image_transport',
        'raw',
        "How images arrive, as image_transport's subscriber parameter of the same name: 'raw' "
        "subscribes `image` (sensor_msgs/Image), 'compressed' `image/compressed` "
        '(sensor_msgs/CompressedImage, jpeg/png). One transport: never both.',
        'inputs',
        choices=TRANSPORTS,
    ),
    ParamSpec(
        'max_rate_hz',
        0.0,
        'Process at most this many frames per second (0 = as fast as frames come). Frames '
        'arriving while inference is busy are dropped (counted on /diagnostics), never queued.',
        'inputs',
        min_value=0.0,
    ),
    ParamSpec(
        'frames_in_flight',
        2,
        '2: the network runs on the next frame while another thread makes and publishes the '
        "outputs of the previous one (more frames per second where publishing is a frame's "
        'bottleneck, as with a 30 Hz camera on two cores); 1: one frame at a time, each '
        'published before the next starts (the least latency where the CPU is idle).',
        'inputs',
        read_only=True,
        min_value=1,
        max_value=2,
    ),
    ParamSpec(
        'input_reliability',
        'auto',
        "QoS reliability of the image and camera_info subscriptions: 'auto' follows the "
        'publishers (reliable when every publisher offers it, as rosbag2 records; before '
        "any publisher is known both, each frame taken once), 'reliable' or 'best_effort'. A "
        'best-effort reader loses large frames from a reliable camera under Fast DDS '
        'defaults. The one source of input reliability (no qos_overrides reliability for '
        'inputs); output QoS: the standard qos_overrides parameters, see '
        'config/qos_overrides.yaml.',
        'inputs',
        choices=INPUT_RELIABILITIES,
    ),
    ParamSpec(
        'diagnostics_period_s',
        1.0,
        'Period of the /diagnostics status, seconds.',
        'diagnostics',
        min_value=0.1,
        max_value=60.0,
    ),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}
READ_ONLY: frozenset[str] = frozenset(spec.name for spec in SPECS if spec.read_only)
OFFLINE: tuple[ParamSpec, ...] = tuple(spec for spec in SPECS if spec.offline)


class _SettingsBehaviour:
    """What ``NodeSettings`` does with its values; its fields are generated from ``SPECS``."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Any:
        """Validate a complete or partial name -> value mapping; raise ConfigError."""
        return cls().updated(values, runtime=False)

    def updated(self, changes: Mapping[str, Any], *, runtime: bool = True) -> Any:
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
        return dataclasses.replace(self, **typed)

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
            'cloud_budget_bytes': self.cloud_max_kib * 1024,
            'organized': self.cloud_organized,
            'input_rectified': self.input_rectified,
            'focal_correction': self.focal_length_correction,
            'flip_average': self.flip_average,
        }

    def engine_kwargs(self) -> dict[str, Any]:
        """Return the ``load_engine`` arguments (besides the path) these settings control."""
        return {
            'backend': self.backend,
            'device': self.device,
            'precision': None if self.precision == 'auto' else self.precision,
            'intra_op_threads': self.cpu_threads or None,
            'spin_wait': self.cpu_spin_wait,
        }


NodeSettings = dataclasses.make_dataclass(
    'NodeSettings',
    [(spec.name, type(spec.default), dataclasses.field(default=spec.default)) for spec in SPECS],
    bases=(_SettingsBehaviour,),
    frozen=True,
)
NodeSettings.__module__ = __name__
NodeSettings.__doc__ = (
    """The value of every parameter (fields and defaults: ``SPECS``, in order)."""
)


# --------------------------------------------------------------- the bag tool's options


def add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    """Add an option for every ``offline`` parameter, named and checked like the parameter.

    Defaults are the parameters' defaults; ``settings_from_args`` validates the values.
    """
    for spec in OFFLINE:
        text = spec.documentation.replace('%', '%%')  # argparse formats help with %
        if spec.type_name == 'bool':
            parser.add_argument(
                spec.flag, action=argparse.BooleanOptionalAction, default=spec.default, help=text
            )
            continue
        kind = {'int': int, 'float': float, 'str': str}[spec.type_name]
        parser.add_argument(
            spec.flag,
            type=kind,
            default=spec.default,
            choices=spec.choices,
            required=spec.name == 'model_path',
            metavar=spec.name.upper() if spec.choices is None else None,
            help=text,
        )


def settings_from_args(args: argparse.Namespace) -> Any:
    """Return the ``NodeSettings`` of the offline options in ``args`` (ConfigError if bad)."""
    return NodeSettings.from_values({spec.name: getattr(args, spec.name) for spec in OFFLINE})


# ------------------------------------------------------------------ the parameter file

_YAML_HEADER = """\
# Parameters of depth_node (moa_depth_ros), with their defaults.
# Generated from moa_depth_ros/runtime/params.py (SPECS) by `make config`: edit it there.
#
# `/**:` applies them to the node whatever its name or namespace. Types are strict (ROS 2
# static parameter typing): write doubles with a decimal point (10.0, not 10).
# Change a dynamic parameter while the node runs, e.g.
#   ros2 param set /camera/moa_depth_node depth_encoding 16UC1
# `ros2 param describe /camera/moa_depth_node <name>` shows each description and constraint.
/**:
  ros__parameters:
"""


def _yaml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def render_yaml() -> str:
    """Return ``config/moa_depth.yaml``: every parameter, its default and its description."""
    lines = []
    for section, title in SECTIONS.items():
        specs = [spec for spec in SPECS if spec.section == section]
        if lines:
            lines.append('')
        lines.append(f'    # --- {title} '.ljust(92, '-'))
        for spec in specs:
            lines += textwrap.wrap(
                spec.description,
                width=92,
                initial_indent='    # ',
                subsequent_indent='    # ',
                break_on_hyphens=False,
            )
            if spec.value_constraints:
                lines.append(f'    # Values: {spec.value_constraints}.')
            lines.append(f'    {spec.name}: {_yaml_value(spec.default)}')
    return _YAML_HEADER + '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moa_depth_ros.runtime.params PATH``: write the parameter file (atomically)."""
    from moa_depth_ros.fileio import atomic_write_text

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print('usage: python -m moa_depth_ros.runtime.params config/moa_depth.yaml')
        return 2
    atomic_write_text(argv[0], render_yaml())
    return 0


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


if __name__ == '__main__':
    sys.exit(main())
