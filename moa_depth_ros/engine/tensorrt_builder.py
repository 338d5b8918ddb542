"""Build a TensorRT engine from an exported ONNX file, check it, cache it.

Two build APIs, chosen by what the installed TensorRT offers (``has_weak_typing``):

- TensorRT 10.3-10.x, weakly typed: ``BuilderFlag.FP16`` lets the builder pick FP16
  kernels. The ONNX parser already computes LayerNorm in FP32, so nothing is pinned at
  first; a retry pins the sensitive layers (reductions, softmax, unary exp/log/sqrt) to FP32
  with ``OBEY_PRECISION_CONSTRAINTS``.
- TensorRT 11, strongly typed (weak typing is gone): the network computes in the types
  its ONNX states, so an FP16 engine is built from an FP16 graph (``fp16_onnx``: graph I/O
  and LayerNorm in FP32; the retry also keeps the sensitive op types in FP32).

FP32 means FP32: ``BuilderFlag.TF32``, on by default, is cleared unless asked for.

Every build is then run on fixed inputs (random, all-zero, saturated) and compared with ONNX
Runtime FP32 (``engine.accuracy``); the result goes into the sidecar. An FP16 engine that
misses the bar is rebuilt with the sensitive layers in FP32; if it still misses, it is
rebuilt in FP32 (as every reduced precision in this package: logged and recorded), or
refused with the numbers when ``BuildOptions.fallback_fp32`` is off: never served silently.
DepthCLIP builds in FP32 by default: its x1000 logit scale turns FP16 rounding in the
backbone into errors of ~0.25 logit.

``ensure_engine`` is what the node calls on start: it builds on the device that will run
the engine, once per cache key (``cache.engine_cache_key``), under an inter-process lock
(two nodes starting together build once), and reuses the cached engine afterwards. It lives
in the runtime package (not ``training/``) because a robot installs only ``moa_depth_ros``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import pathlib
import tempfile
import time
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from moa_depth_ros import __version__
from moa_depth_ros.engine import tensorrt_backend
from moa_depth_ros.engine.accuracy import (
    ACCURACY_BAR,
    CONFIDENCE_BAR,
    accuracy_holds,
    confidence_agreement,
    confidence_holds,
    depth_agreement,
    parity_errors,
    reference_inputs,
)
from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from moa_depth_ros.engine.cache import (
    PRECISIONS,
    EngineSidecar,
    GpuInfo,
    atomic_write_bytes,
    build_fingerprint,
    cached_engine_is_valid,
    cached_engine_path,
    engine_lock,
    file_sha256,
    timing_cache_path,
    write_sidecar,
)
from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 2 << 30
# Models whose default precision is FP32 (without TF32): DepthCLIP's logits are 1000 x a
# cosine, so FP16 rounding of its backbone features moves them by ~0.25.
FP32_DEFAULT_MODELS = frozenset({'depthclip'})
# TensorRT 10 layer types a retry pins to FP32 (names of ``trt.LayerType`` members): sums
# over many channels overflow FP16 (DepthCLIP's normalize sums 2048 squares: past 65504 at
# an RMS of 5.7), and exp/log lose what softmax and entropy need.
SENSITIVE_LAYER_TYPES = ('REDUCE', 'SOFTMAX', 'NORMALIZATION', 'UNARY')
# Named inputs the parity check runs, in ``reference_inputs`` order.
PARITY_INPUTS = ('random', 'zero', 'saturated')


def default_precision(metadata: ModelMetadata) -> str:
    """Return the precision a model builds in when none is asked for."""
    return 'fp32' if metadata.model_name in FP32_DEFAULT_MODELS else 'fp16'


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How to build an engine; every field has a safe default for the node's first start."""

    # 'auto': the model's default (``default_precision``), else 'fp16' or 'fp32'.
    precision: str = 'auto'
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    # (min, opt, max) batch for a dynamic-batch ONNX; ignored for a static one.
    batch_profile: tuple[int, int, int] = (1, 1, 8)
    # Let FP32 layers use TF32 tensor cores (10-bit mantissa products). Off: FP32 is FP32.
    tf32: bool = False
    # An FP16 build that misses the accuracy bar even with its sensitive layers in FP32 is
    # rebuilt in FP32 (logged, and recorded in the sidecar); False refuses it instead.
    fallback_fp32: bool = True
    timing_cache: str | os.PathLike | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ('auto', *PRECISIONS):
            raise ConfigError(
                f'precision must be auto or one of {list(PRECISIONS)}, got {self.precision!r}'
            )
        if self.workspace_bytes < 1 << 20:
            raise ConfigError(f'workspace_bytes must be >= 1 MiB, got {self.workspace_bytes}')
        lo, opt, hi = self.batch_profile
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(
                f'batch_profile must satisfy 1 <= min <= opt <= max, got {self.batch_profile}'
            )

    def resolved_precision(self, metadata: ModelMetadata) -> str:
        return default_precision(metadata) if self.precision == 'auto' else self.precision

    def key_fields(self, precision: str) -> dict[str, Any]:
        """Return what changes the engine (not the timing cache's path, nor the log level)."""
        return {
            'precision': precision,
            'workspace_bytes': int(self.workspace_bytes),
            'batch_profile': list(self.batch_profile),
            'tf32': bool(self.tf32),
            'fallback_fp32': bool(self.fallback_fp32),
        }


@dataclasses.dataclass
class _Build:
    """One serialized engine and how it was typed."""

    data: bytes
    precision: str
    typing: str
    fp32_layer_names: tuple[str, ...]
    batch_profile: tuple[int, int, int] | None
    tf32: bool
    # The batch the parity check runs: the static batch, else the profile's minimum.
    check_batch: int


def _platform_has_fast_fp16(builder: Any) -> bool:
    # Deprecated in TensorRT 10.5 but present through 10.x (gone in 11, which never asks);
    # every GPU TensorRT 10 supports (compute capability >= 7.5) has fast FP16.
    return bool(getattr(builder, 'platform_has_fast_fp16', True))


def _parser_errors(parser: Any) -> str:
    return '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors)) or 'no details'


def _check_network_io(network: Any, onnx_path: str) -> Any:
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


def _layers_of_types(trt: ModuleType, network: Any, type_names: Sequence[str]) -> list[Any]:
    wanted = {getattr(trt.LayerType, name) for name in type_names if hasattr(trt.LayerType, name)}
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return [layer for layer in layers if layer.type in wanted]


def _computes_floats(trt: ModuleType, layer: Any) -> bool:
    """Tell whether all outputs of a layer are floating point (a unary NOT is boolean)."""
    floats = (trt.float32, trt.float16)
    return all(layer.get_output(j).dtype in floats for j in range(layer.num_outputs))


def _pin_fp32(trt: ModuleType, layers: Sequence[Any]) -> None:
    """Make each layer compute and output FP32 (TensorRT 10 weak typing only)."""
    for layer in layers:
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)


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


def _fp16_onnx(onnx_path: str, directory: str, sensitive: bool) -> tuple[str, tuple[str, ...]]:
    """Write the FP16 graph TensorRT 11 builds from; return (its path, nodes kept in FP32)."""
    from moa_depth_ros.engine import fp16_onnx

    onnx = fp16_onnx.load_onnx()
    keep = fp16_onnx.SENSITIVE_FP32_OPS if sensitive else fp16_onnx.ALWAYS_FP32_OPS
    try:
        model = onnx.load(onnx_path)
    except Exception as e:  # onnx raises DecodeError and friends
        raise EngineError(f'{onnx_path}: cannot read the ONNX to convert it to FP16: {e}') from e
    converted, kept = fp16_onnx.convert_to_fp16(model, keep)
    path = os.path.join(directory, 'model_fp16.onnx')
    onnx.save(converted, path)
    return path, tuple(kept)


def _build_once(
    trt: ModuleType,
    onnx_path: str,
    metadata: ModelMetadata,
    options: BuildOptions,
    precision: str,
    *,
    sensitive_fp32: bool,
) -> _Build:
    """Parse, configure and build one engine (no check, nothing written but the timing cache)."""
    weak = tensorrt_backend.has_weak_typing(trt)
    logger = trt.Logger(trt.Logger.VERBOSE if options.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if precision == 'fp16' and weak and not _platform_has_fast_fp16(builder):
        _LOG.warning('this GPU has no fast FP16; building an FP32 engine instead')
        precision = 'fp32'
    flags = 0
    creation = getattr(trt, 'NetworkDefinitionCreationFlag', None)
    if not weak and creation is not None and hasattr(creation, 'STRONGLY_TYPED'):
        # Accepted and ignored by TensorRT 11, where every network is strongly typed.
        flags = 1 << int(creation.STRONGLY_TYPED)
    with tempfile.TemporaryDirectory(prefix='moa-depth-trt-') as tmp:
        source, kept = onnx_path, ()
        if precision == 'fp16' and not weak:
            source, kept = _fp16_onnx(onnx_path, tmp, sensitive_fp32)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(source):
            raise EngineError(
                f'{onnx_path}: TensorRT cannot parse the ONNX: {_parser_errors(parser)}'
            )
        image = _check_network_io(network, onnx_path)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
        if hasattr(trt, 'ProfilingVerbosity'):
            # Layer types and precisions in the engine, for its inspector (no run-time cost).
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        tf32 = bool(options.tf32)
        if hasattr(trt.BuilderFlag, 'TF32'):
            # On by default in TensorRT: clear it, or an "FP32" engine multiplies in TF32.
            (config.set_flag if tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
        else:
            tf32 = False

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

        if precision == 'fp16' and weak:
            config.set_flag(trt.BuilderFlag.FP16)
            # The parser computes LayerNorm in FP32 already; report those layers as such.
            fp32 = _layers_of_types(trt, network, ('NORMALIZATION',))
            if sensitive_fp32:
                fp32 = [
                    layer
                    for layer in _layers_of_types(trt, network, SENSITIVE_LAYER_TYPES)
                    if _computes_floats(trt, layer)
                ]
                _pin_fp32(trt, fp32)
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            kept = tuple(str(layer.name) for layer in fp32)

        cache_file = pathlib.Path(options.timing_cache) if options.timing_cache else None
        timing_cache = _load_timing_cache(config, cache_file)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f'{onnx_path}: TensorRT failed to build the engine (see its log)')
        if cache_file is not None:
            atomic_write_bytes(cache_file, bytes(timing_cache.serialize()))
    return _Build(
        data=bytes(serialized),
        precision=precision,
        typing='weakly_typed' if weak else 'strongly_typed',
        fp32_layer_names=kept,
        batch_profile=batch_profile,
        tf32=tf32,
        check_batch=batch_profile[0] if batch_profile else n,
    )


def reference_outputs(
    onnx_path: str | os.PathLike, inputs: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """ONNX Runtime FP32 on the CPU: what every engine is judged against."""
    from moa_depth_ros.engine.onnx_backend import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(onnx_path, device='cpu')
    try:
        return [engine.infer(x) for x in inputs]
    finally:
        engine.close()


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def compare_with_reference(
    engine: Any,
    inputs: Sequence[np.ndarray],
    reference: Sequence[tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Run ``engine`` on ``inputs``; judge depth and confidence against ``reference``.

    Depth must meet ``ACCURACY_BAR`` and confidence ``CONFIDENCE_BAR``, on every input.
    """
    results = {}
    passed = True
    for name, x, ref in zip(PARITY_INPUTS, inputs, reference):
        got = engine.infer(x)
        finite = bool(np.isfinite(got[0]).all() and np.isfinite(got[1]).all())
        agreement = depth_agreement(ref[0], got[0])
        confidence = confidence_agreement(ref[1], got[1])
        errors = parity_errors(ref, got) if finite else {}
        depth_ok = accuracy_holds(agreement)
        confidence_ok = confidence_holds(confidence)
        ok = finite and depth_ok and confidence_ok
        numbers = {**agreement, **confidence, **errors}
        results[name] = {
            'passed': ok,
            'finite': finite,
            'depth_passed': depth_ok,
            'confidence_passed': confidence_ok,
            **{key: _finite_or_none(value) for key, value in numbers.items()},
        }
        passed = passed and ok
    return {'passed': passed, 'inputs': results}


def _summary(parity: dict[str, Any]) -> str:
    parts = []
    for name, result in parity['inputs'].items():
        if not result['finite']:
            parts.append(f'{name} input: non-finite outputs (FP16 overflow)')
        elif not result['passed']:
            if not result.get('depth_passed', False):
                mean = result['mean_rel_err']
                mean = 'nan' if mean is None else f'{mean:.2%}'
                parts.append(
                    f'{name} input: mean relative depth error {mean}, '
                    f'{result["delta1_agreement"]:.1%} of pixels within 1.25x'
                )
            if not result.get('confidence_passed', False):
                parts.append(
                    f'{name} input: mean confidence error '
                    f'{result["confidence_mean_abs_err"]:.3f}, '
                    f'{result["confidence_within_0_05"]:.1%} of pixels within 0.05'
                )
    return '; '.join(parts) or 'all inputs within the bar'


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    options: BuildOptions | None = None,
    *,
    device: str = 'auto',
    cuda: tensorrt_backend.CudaApi | None = None,
) -> EngineSidecar:
    """Build, check and write a TensorRT engine for ``onnx_path`` on ``device``.

    The build runs on that device (TensorRT builds for the calling thread's current
    device) and the sidecar records that GPU. Returns the sidecar written next to the
    engine. Raises EngineError when TensorRT is missing, the build fails, or the engine
    misses the accuracy bar against ONNX Runtime FP32; ModelMetadataError when the ONNX
    lacks metadata or the expected tensors. Nothing is written unless the engine passes.
    """
    options = options or BuildOptions()
    onnx_path = os.fspath(onnx_path)
    engine_path = pathlib.Path(engine_path)
    metadata = read_onnx_metadata(onnx_path)
    trt = tensorrt_backend.import_tensorrt()
    cuda = cuda if cuda is not None else tensorrt_backend.default_cuda_api(device)
    cuda.activate()
    gpu = cuda.device_info()
    requested = options.resolved_precision(metadata)
    started = time.monotonic()

    attempts: list[dict[str, Any]] = []
    reference = inputs = None
    # (precision, sensitive layers in FP32): FP16, FP16 with the sensitive layers pinned,
    # then (unless refused instead) FP32.
    stages = [(requested, False)]
    if requested == 'fp16':
        stages.append(('fp16', True))
        if options.fallback_fp32:
            stages.append(('fp32', False))
    fallback = ''
    for stage_precision, sensitive_fp32 in stages:
        build = _build_once(
            trt, onnx_path, metadata, options, stage_precision, sensitive_fp32=sensitive_fp32
        )
        sidecar = EngineSidecar(
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu.name,
            precision=build.precision,
            requested_precision=requested,
            onnx_sha256=file_sha256(onnx_path),
            engine_sha256=hashlib.sha256(build.data).hexdigest(),
            metadata=metadata,
            batch_profile=build.batch_profile,
            fp32_layers=len(build.fp32_layer_names),
            workspace_bytes=int(options.workspace_bytes),
            gpu_compute_capability=gpu.compute_capability,
            gpu_sm_count=gpu.sm_count,
            gpu_memory_bytes=gpu.total_memory_bytes,
            typing=build.typing,
            tf32=build.tf32,
            fp32_layer_names=build.fp32_layer_names,
            build_options=options.key_fields(requested),
            package_version=__version__,
        )
        if reference is None:
            inputs = reference_inputs(metadata.input_hw, batch=build.check_batch)
            reference = reference_outputs(onnx_path, inputs)
        engine = tensorrt_backend.TensorRTEngine(
            engine_path, cuda=cuda, serialized=build.data, sidecar=sidecar
        )
        try:
            result = compare_with_reference(engine, inputs, reference)
        finally:
            engine.close()
        attempts.append(
            {
                'precision': build.precision,
                'fp32_layers': len(build.fp32_layer_names),
                'sensitive_fp32': sensitive_fp32,
                **result,
            }
        )
        if result['passed'] or build.precision == 'fp32':
            break
        if not sensitive_fp32:
            _LOG.warning(
                '%s: the FP16 engine misses the accuracy bar (%s); rebuilding with the '
                'sensitive layers (reductions, softmax, exp/log/sqrt) in FP32',
                onnx_path,
                _summary(result),
            )
        elif options.fallback_fp32:
            fallback = (
                f'FP16 missed the accuracy bar even with {len(build.fp32_layer_names)} '
                f'sensitive layers in FP32 ({_summary(result)}): built in FP32 instead'
            )
            _LOG.warning('%s: %s', onnx_path, fallback)
    last = attempts[-1]
    if not last['passed']:
        if build.precision == 'fp16':
            raise EngineError(
                f'{onnx_path}: refused: the FP16 TensorRT engine misses the accuracy bar '
                f'(mean relative depth error <= {ACCURACY_BAR["mean_rel_err"]:.0%}, '
                f'>= {ACCURACY_BAR["delta1_agreement"]:.0%} of pixels within 1.25x of ONNX '
                f'Runtime FP32; mean confidence error <= '
                f'{CONFIDENCE_BAR["confidence_mean_abs_err"]}, '
                f'>= {CONFIDENCE_BAR["confidence_within_0_05"]:.0%} of pixels within 0.05) '
                f'even with {last["fp32_layers"]} sensitive layers in FP32: '
                f'{_summary(last)}; build it in FP32 (precision fp32) instead, or allow the '
                f'FP32 fallback'
            )
        raise EngineError(
            f'{onnx_path}: refused: the FP32 TensorRT engine disagrees with ONNX Runtime FP32 '
            f'({_summary(last)}); an operator TensorRT runs differently? Use the .onnx with '
            f'backend onnxruntime'
        )
    parity = {
        'passed': True,
        'reference': 'onnxruntime fp32 (CPU)',
        'bar': {**ACCURACY_BAR, **CONFIDENCE_BAR},
        'batch': int(inputs[0].shape[0]),
        'fallback': fallback,
        'inputs': last['inputs'],
        'attempts': [
            {key: value for key, value in attempt.items() if key != 'inputs'}
            for attempt in attempts
        ],
    }
    sidecar = dataclasses.replace(sidecar, parity=parity)
    # Engine first, sidecar second: a crash in between leaves a sha mismatch, which the
    # loader reports and the cache treats as a miss.
    atomic_write_bytes(engine_path, build.data)
    write_sidecar(engine_path, sidecar)
    _LOG.info(
        'built %s engine %s on %s in %.1f s (%d layers in FP32; parity with ONNX Runtime: %s)',
        sidecar.precision,
        engine_path,
        gpu.describe(),
        time.monotonic() - started,
        sidecar.fp32_layers,
        _summary(last),
    )
    return sidecar


def ensure_engine(
    onnx_path: str | os.PathLike,
    *,
    precision: str | None = None,
    device: str = 'auto',
    cache_dir: str | os.PathLike | None = None,
    options: BuildOptions | None = None,
    cuda: tensorrt_backend.CudaApi | None = None,
) -> pathlib.Path:
    """Return a cached engine for ``onnx_path`` on ``device``, building it only on a miss.

    ``precision`` None means the model's default (``default_precision``). The cache key
    holds the ONNX sha256, TensorRT version, the GPU's name, compute capability, SM count
    and memory, precision, build options and package version. Check, build and re-check run
    under an inter-process lock, so concurrent starts build once and never pair one build's
    sidecar with another's engine. The timing cache is shared per (TensorRT, GPU).
    """
    trt = tensorrt_backend.import_tensorrt()
    cuda = cuda if cuda is not None else tensorrt_backend.default_cuda_api(device)
    gpu: GpuInfo = cuda.device_info()
    metadata = read_onnx_metadata(onnx_path)
    options = options or BuildOptions()
    if precision is not None:
        options = dataclasses.replace(options, precision=precision)
    resolved = options.resolved_precision(metadata)
    onnx_sha256 = file_sha256(onnx_path)
    version = str(trt.__version__)
    fingerprint = build_fingerprint(options.key_fields(resolved))
    key = {
        'onnx_sha256': onnx_sha256,
        'tensorrt_version': version,
        'gpu': gpu,
        'precision': resolved,
    }
    path = cached_engine_path(
        **key,
        options_fingerprint=fingerprint,
        package_version=__version__,
        cache_dir=cache_dir,
    )

    def cached() -> bool:
        return cached_engine_is_valid(
            path, **key, options_fingerprint=fingerprint, package_version=__version__
        )

    if cached():
        _LOG.info('using cached TensorRT engine %s', path)
        return path
    with engine_lock(path):
        if cached():  # another process built it while this one waited
            _LOG.info('using TensorRT engine %s, built by another process', path)
            return path
        options = dataclasses.replace(
            options,
            precision=resolved,
            timing_cache=options.timing_cache or timing_cache_path(cache_dir, version, gpu),
        )
        _LOG.warning(
            'building a %s TensorRT engine for %s on %s (first start only; takes minutes)',
            resolved,
            os.fspath(onnx_path),
            gpu.describe(),
        )
        sidecar = build_engine(onnx_path, path, options, cuda=cuda)
    if sidecar.precision != resolved:
        # The GPU lacked fast FP16: the engine is FP32 but is filed under the requested
        # precision (sidecar.requested_precision) so the next start finds it.
        _LOG.warning('cached engine %s is %s, not %s', path, sidecar.precision, resolved)
    return path
