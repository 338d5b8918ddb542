"""Build a TensorRT engine from an exported ONNX file (TensorRT 10 Python API).

Steps: parse with ``OnnxParser``; a builder config with a workspace limit; FP16 where the
GPU supports it, with every normalization layer pinned to FP32 (LayerNorm statistics
overflow in half precision; opset >= 17 makes LayerNorm one ``INormalizationLayer``, so it
can be pinned); an optimisation profile when the batch is dynamic; a timing cache so
rebuilds skip kernel timing. The engine and its sidecar JSON are written atomically.

``ensure_engine`` is what the node calls on start: it builds once per (ONNX sha256, TensorRT
version, GPU, precision) and reuses the cached engine afterwards. It lives in the runtime
package (not ``training/``) because a robot installs only ``moa_depth_ros``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import time
from types import ModuleType
from typing import Any

from moa_depth_ros.engine import tensorrt_backend
from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES
from moa_depth_ros.engine.cache import (
    PRECISIONS,
    EngineSidecar,
    atomic_write_bytes,
    cached_engine_is_valid,
    cached_engine_path,
    file_sha256,
    timing_cache_path,
    write_sidecar,
)
from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 2 << 30
# Layer types kept in FP32 in an FP16 engine (names of ``trt.LayerType`` members).
DEFAULT_FP32_LAYER_TYPES = ('NORMALIZATION',)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How to build an engine; every field has a safe default for the node's first start."""

    precision: str = 'fp16'
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    # (min, opt, max) batch for a dynamic-batch ONNX; ignored for a static one.
    batch_profile: tuple[int, int, int] = (1, 1, 8)
    fp32_layer_types: tuple[str, ...] = DEFAULT_FP32_LAYER_TYPES
    timing_cache: str | os.PathLike | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f'precision must be one of {list(PRECISIONS)}, got {self.precision!r}'
            )
        if self.workspace_bytes < 1 << 20:
            raise ConfigError(f'workspace_bytes must be >= 1 MiB, got {self.workspace_bytes}')
        lo, opt, hi = self.batch_profile
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(
                f'batch_profile must satisfy 1 <= min <= opt <= max, got {self.batch_profile}'
            )


def gpu_name(device: str = 'auto') -> str:
    """Name of the CUDA device, as the runtime compares it against sidecars."""
    return tensorrt_backend.default_cuda_api(device).device_name()


def _platform_has_fast_fp16(builder: Any) -> bool:
    # Deprecated in TensorRT 10.5 but still present in 10.x; every GPU TensorRT 10 supports
    # (compute capability >= 7.5) has fast FP16, so a missing attribute means yes.
    return bool(getattr(builder, 'platform_has_fast_fp16', True))


def _parser_errors(parser: Any) -> str:
    return '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors)) or 'no details'


def _check_network_io(trt: ModuleType, network: Any, onnx_path: str) -> Any:
    """Check the parsed network's tensor names; return the input tensor."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    in_names = [t.name for t in inputs]
    out_names = [t.name for t in outputs]
    if in_names != [INPUT_NAME] or sorted(out_names) != sorted(OUTPUT_NAMES):
        raise ModelMetadataError(
            f'{onnx_path}: the graph must have input {INPUT_NAME!r} and outputs '
            f'{list(OUTPUT_NAMES)}, got inputs {in_names} and outputs {out_names}; re-export '
            f'it with `python -m training export`'
        )
    shape = tuple(int(d) for d in inputs[0].shape)
    if len(shape) != 4 or any(d < 0 for d in shape[1:]):
        raise ModelMetadataError(
            f'{onnx_path}: input {INPUT_NAME!r} must be [N, 3, H, W] with only N dynamic, '
            f'got {list(shape)}'
        )
    return inputs[0]


def _pin_fp32_layers(trt: ModuleType, network: Any, layer_types: tuple[str, ...]) -> int:
    """Force the listed layer types to compute and output FP32; return how many matched."""
    wanted = []
    for name in layer_types:
        if not hasattr(trt.LayerType, name):
            raise ConfigError(f'unknown TensorRT layer type {name!r} in fp32_layer_types')
        wanted.append(getattr(trt.LayerType, name))
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def _load_timing_cache(config: Any, path: pathlib.Path | None) -> Any:
    data = b''
    if path is not None and path.is_file():
        data = path.read_bytes()
    try:
        cache = config.create_timing_cache(data)
    except (RuntimeError, TypeError, ValueError):
        cache = None  # an unreadable (truncated, foreign) blob
    if cache is None or not config.set_timing_cache(cache, False):
        # A cache from another GPU or TensorRT release, or a damaged file, is only a lost
        # speed-up: start a fresh one rather than fail the build.
        _LOG.warning('timing cache %s is unusable on this GPU/TensorRT; starting afresh', path)
        cache = config.create_timing_cache(b'')
        config.set_timing_cache(cache, False)
    return cache


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    options: BuildOptions | None = None,
    *,
    gpu: str | None = None,
) -> EngineSidecar:
    """Build a serialized TensorRT engine from ``onnx_path`` and write it with its sidecar.

    ``gpu`` overrides the recorded GPU name (default: the current CUDA device's). Returns the
    sidecar written next to the engine. Raises EngineError when TensorRT is missing or the
    build fails, ModelMetadataError when the ONNX lacks metadata or the expected tensors.
    """
    options = options or BuildOptions()
    onnx_path = os.fspath(onnx_path)
    engine_path = pathlib.Path(engine_path)
    metadata = read_onnx_metadata(onnx_path)
    trt = tensorrt_backend.import_tensorrt()
    gpu = gpu if gpu is not None else gpu_name()
    started = time.monotonic()

    logger = trt.Logger(trt.Logger.VERBOSE if options.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10: no creation flag needed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        raise EngineError(f'{onnx_path}: TensorRT cannot parse the ONNX: {_parser_errors(parser)}')
    image = _check_network_io(trt, network, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))

    batch_profile = None
    n, c, h, w = (int(d) for d in image.shape)
    if (h, w) != metadata.input_hw:
        raise ModelMetadataError(
            f'{onnx_path}: input is {h}x{w} but metadata says {metadata.input_hw[0]}x'
            f'{metadata.input_hw[1]}'
        )
    if n < 0:
        lo, opt, hi = options.batch_profile
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
        config.add_optimization_profile(profile)
        batch_profile = (lo, opt, hi)

    precision = options.precision
    pinned = 0
    if precision == 'fp16':
        if _platform_has_fast_fp16(builder):
            config.set_flag(trt.BuilderFlag.FP16)
            pinned = _pin_fp32_layers(trt, network, options.fp32_layer_types)
            if pinned:
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            else:
                _LOG.warning(
                    '%s: no %s layers found to keep in FP32 (exported below opset 17?)',
                    onnx_path,
                    '/'.join(options.fp32_layer_types),
                )
        else:
            _LOG.warning('this GPU has no fast FP16; building an FP32 engine instead')
            precision = 'fp32'

    cache_file = pathlib.Path(options.timing_cache) if options.timing_cache else None
    timing_cache = _load_timing_cache(config, cache_file)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f'{onnx_path}: TensorRT failed to build the engine (see its log)')
    data = bytes(serialized)
    if cache_file is not None:
        atomic_write_bytes(cache_file, bytes(timing_cache.serialize()))

    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu,
        precision=precision,
        requested_precision=options.precision,
        onnx_sha256=file_sha256(onnx_path),
        engine_sha256=_sha256_bytes(data),
        metadata=metadata,
        batch_profile=batch_profile,
        fp32_layers=pinned,
        workspace_bytes=int(options.workspace_bytes),
    )
    # Engine first, sidecar second: a crash in between leaves a sha mismatch, which the
    # loader reports and the cache treats as a miss.
    atomic_write_bytes(engine_path, data)
    write_sidecar(engine_path, sidecar)
    _LOG.info(
        'built %s engine %s in %.1f s (%d layers kept in FP32)',
        precision,
        engine_path,
        time.monotonic() - started,
        pinned,
    )
    return sidecar


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_engine(
    onnx_path: str | os.PathLike,
    *,
    precision: str = 'fp16',
    cache_dir: str | os.PathLike | None = None,
    options: BuildOptions | None = None,
    gpu: str | None = None,
) -> pathlib.Path:
    """Return a cached engine for ``onnx_path`` on this GPU, building it only on a miss.

    The cache key is (ONNX sha256, TensorRT version, GPU name, precision); the timing cache
    is shared per (TensorRT version, GPU), so even a new model builds faster.
    """
    trt = tensorrt_backend.import_tensorrt()
    gpu = gpu if gpu is not None else gpu_name()
    onnx_sha256 = file_sha256(onnx_path)
    version = str(trt.__version__)
    path = cached_engine_path(
        onnx_sha256,
        tensorrt_version=version,
        gpu_name=gpu,
        precision=precision,
        cache_dir=cache_dir,
    )
    if cached_engine_is_valid(
        path, onnx_sha256=onnx_sha256, tensorrt_version=version, gpu_name=gpu, precision=precision
    ):
        _LOG.info('using cached TensorRT engine %s', path)
        return path
    options = dataclasses.replace(
        options or BuildOptions(),
        precision=precision,
        timing_cache=(options.timing_cache if options and options.timing_cache else None)
        or timing_cache_path(cache_dir, version, gpu),
    )
    _LOG.warning(
        'building a %s TensorRT engine for %s on %s (first start only; takes minutes)',
        precision,
        os.fspath(onnx_path),
        gpu,
    )
    sidecar = build_engine(onnx_path, path, options, gpu=gpu)
    if sidecar.precision != precision:
        # The GPU lacked fast FP16: the engine is FP32 but is filed under the requested
        # precision (sidecar.requested_precision) so the next start finds it.
        _LOG.warning('cached engine %s is %s, not %s', path, sidecar.precision, precision)
    return path
