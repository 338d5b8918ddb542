"""The OpenVINO backend: an exported ``.onnx`` model on an Intel CPU, integrated GPU or NPU.

OpenVINO reads the same ONNX file ONNX Runtime runs (no conversion step, no second file to
keep in step) and compiles it for one device. What this module adds around it:

- device names: the node's ``device`` values map onto OpenVINO's (``auto``/``cpu`` -> CPU,
  ``gpu``/``gpu:N`` -> GPU/GPU.N, ``npu`` -> NPU); a device this machine lacks is an
  ``EngineError`` that lists the ones it has;
- compiled-model caching (OpenVINO's ``CACHE_DIR``): the first start compiles, later starts
  load the compiled blob (``compile_s`` says how long it took). OpenVINO keys a file's blob
  by its path alone, so the cache has a directory per file version (``model_cache_dir``)
  and per precision;
- precision: ``auto`` (the default) is the device's own preference, OpenVINO's default
  inference precision for it: ``bf16`` on CPUs with native BF16 (AMX, AVX512-BF16), ``fp16``
  on Intel GPUs, else ``fp32``. A reduced precision, asked for or preferred, is kept only if,
  on fixed inputs (random, all-zero, saturated), its depth meets the package's accuracy bar
  against FP32 (``moa_depth_ros.engine.accuracy``); otherwise the engine
  runs FP32 and says why (``precision_note``, the node's log and /diagnostics).
  ``precision='fp32'`` forces FP32 (what the parity tests compare);
- INT8: an OpenVINO IR (``MODEL.int8.xml`` + ``.bin``) written by ``python -m training
  export --int8`` (NNCF post-training quantization, ``training.quantize``). Its ``rt_info``
  holds the FP32 file's metadata plus how it was quantized and its measured error
  (``read_ir_metadata``); an IR without that record is refused. It runs as ``precision``
  ``int8`` (``auto`` on an INT8 file means int8); the layers NNCF left in floating point run
  in the device's preferred precision (``rest_precision``: BF16 with AMX), as the export
  checked them, kept only if it meets the accuracy bar against the same INT8 model with an
  FP32 rest. ``precision='int8'`` on an FP32 file is
  a ``ConfigError`` that names the INT8 file beside it, if there is one;
- threads: ``intra_op_threads`` (the node's ``cpu_threads``) > 0 sets OpenVINO's inference
  threads; 0 leaves OpenVINO's default, a thread per core the process may run on, pinned as
  OpenVINO pins them. Measured live at 30 Hz on 2 cores shared with a camera and a viewer
  (README, Performance): one thread delivered fewer frames than two (60 vs 67 %), and
  unpinned threads the same as pinned ones (67 vs 68 %), so the defaults stay.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
import shutil
import time
from typing import Any, Sequence
import xml.etree.ElementTree as ET

import numpy as np

from moa_depth_ros.engine.accuracy import (
    ACCURACY_BAR,
    accuracy_holds,
    depth_agreement,
    reference_inputs,
)
from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, DepthEngine, ModelMetadata
from moa_depth_ros.engine.cache import cache_root
from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)

#: Precision hints this backend offers, and OpenVINO's element type names for them.
PRECISIONS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16'}  # the hint's string form
_FROM_OPENVINO = {name: ours for ours, name in PRECISIONS.items()}
#: The capability a device reports (OPTIMIZATION_CAPABILITIES) for each precision.
_CAPABILITY = {'fp32': 'FP32', 'bf16': 'BF16', 'fp16': 'FP16'}
_DEVICE_RE = re.compile(r'^(auto|cpu|gpu([:.]\d+)?|npu)$')
#: The precision of an INT8 model (its quantized layers; the rest: ``rest_precision``).
INT8 = 'int8'
#: The rt_info section of an INT8 IR that holds the model's metadata.
IR_METADATA_SECTION = 'moa_depth_ros'
INT8_SUFFIX = '.int8.xml'


def int8_ir_path(onnx_path: str | os.PathLike) -> pathlib.Path:
    """Return where ``export --int8`` writes the INT8 IR of ``onnx_path`` (beside it)."""
    path = pathlib.Path(onnx_path)
    return path.with_name(path.stem + INT8_SUFFIX)


def read_ir_metadata_props(path: str | os.PathLike) -> dict[str, str]:
    """Return the metadata strings an INT8 IR carries in its ``rt_info`` (no OpenVINO needed).

    Raises ``ModelMetadataError`` for an IR without them (not written by ``export --int8``)
    and ``EngineError`` for a missing or unreadable file.
    """
    path = pathlib.Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as e:
        raise EngineError(f'OpenVINO IR {os.fspath(path)!r} does not exist') from e
    except (OSError, ET.ParseError) as e:
        raise EngineError(f'{path}: not a readable OpenVINO IR (.xml): {e}') from e
    section = root.find(f'rt_info/{IR_METADATA_SECTION}')
    if section is None:
        raise ModelMetadataError(
            f'{path}: this OpenVINO IR has no {IR_METADATA_SECTION} metadata; the package '
            f'runs IRs written by `python -m training export --int8` (or an .onnx file)'
        )
    return {child.tag: child.get('value', '') for child in section}


def read_ir_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Return the validated ``ModelMetadata`` of an INT8 IR."""
    return ModelMetadata.from_dict(read_ir_metadata_props(path), source=os.fspath(path))


def is_int8(metadata: ModelMetadata) -> bool:
    """Tell whether the model is an INT8 model that passed the accuracy bar at export."""
    extra = metadata.extra
    return extra.get('quantization', '').startswith('int8 static') and (
        extra.get('int8_verified') == 'true'
    )


def openvino_device(device: str, available: Sequence[str]) -> str:
    """Map a node ``device`` value onto an OpenVINO device this machine has.

    ``auto`` and ``cpu`` run on the CPU: an integrated GPU or NPU is used only when asked
    for, since which is faster depends on the chip and the network (measure with
    ``moa-depth bench MODEL --backend openvino --device gpu``).
    """
    if device.startswith('cuda'):
        raise ConfigError(
            f'device {device!r} is an NVIDIA GPU; OpenVINO runs on cpu, gpu[:N] (Intel) or '
            f'npu. Use backend:=tensorrt or onnxruntime for CUDA'
        )
    if not _DEVICE_RE.match(device):
        raise ConfigError(
            f'device for OpenVINO must be auto, cpu, gpu, gpu:N or npu, got {device!r}'
        )
    if device in ('auto', 'cpu'):
        name = 'CPU'
    else:
        name = device.upper().replace(':', '.')
    names = list(available)
    # 'GPU' alone is GPU.0 where a machine has several (OpenVINO lists GPU.0, GPU.1).
    if name in names or (name == 'GPU' and any(n.startswith('GPU.') for n in names)):
        return name
    raise EngineError(
        f'OpenVINO has no {name} device on this machine (it has {names or "none"}); for an '
        f'Intel GPU or NPU install its driver (intel-opencl-icd / the NPU driver)'
    )


def _check_io(model: Any, path: pathlib.Path, input_hw: tuple[int, int]) -> None:
    """Check names, ranks, sizes and element types against the metadata."""
    import openvino as ov

    in_names = [port.get_any_name() for port in model.inputs]
    out_names = [port.get_any_name() for port in model.outputs]
    if in_names != [INPUT_NAME] or out_names != list(OUTPUT_NAMES):
        raise ModelMetadataError(
            f'{path}: the graph must have input {INPUT_NAME!r} and outputs '
            f'{list(OUTPUT_NAMES)} in that order, got inputs {in_names} and outputs {out_names}; '
            f're-export it with `python -m training export`'
        )
    h, w = input_hw
    ports = [(model.inputs[0], 3), (model.outputs[0], 1), (model.outputs[1], 1)]
    for port, channels in ports:
        shape = port.get_partial_shape()
        dims = (
            [d.get_length() if d.is_static else None for d in shape]
            if shape.rank.is_static
            else []
        )
        if len(dims) != 4 or any(
            d is not None and d != e for d, e in zip(dims[1:], (channels, h, w))
        ):
            raise ModelMetadataError(
                f'{path}: tensor {port.get_any_name()!r} has shape {shape}, but the metadata '
                f'says the model is [N, {channels}, {h}, {w}]'
            )
        if port.get_element_type() != ov.Type.f32:
            raise ModelMetadataError(
                f'{path}: tensor {port.get_any_name()!r} must be float32, got '
                f'{port.get_element_type()}'
            )


def model_cache_dir(root: pathlib.Path, model: pathlib.Path) -> pathlib.Path:
    """Return (and create) the OpenVINO cache directory for this version of ``model``.

    OpenVINO keys a model compiled from a file by the file's path, so a model re-exported to
    the same path would get the old compiled blob. Each version of the file (size and
    modification time) gets a directory of its own, and the directories of its earlier
    versions are deleted: one compiled model per path and precision is kept.
    """
    resolved = model.resolve()
    stat = resolved.stat()
    digest = hashlib.sha256(os.fspath(resolved).encode()).hexdigest()[:12]
    per_path = root / f'{resolved.stem}-{digest}'
    version = per_path / f'{stat.st_size}-{stat.st_mtime_ns}'
    if per_path.is_dir():
        for old in per_path.iterdir():
            if old != version:
                shutil.rmtree(old, ignore_errors=True)
    version.mkdir(parents=True, exist_ok=True)
    return version


def _not_int8_message(path: pathlib.Path) -> str:
    sibling = int8_ir_path(path)
    hint = (
        f'its INT8 model is {sibling}: set model_path to it'
        if sibling.is_file()
        else f'make one with `python -m training export --checkpoint CKPT --output {path.name} '
        f'--int8 --calibration FRAMES` (it writes {sibling.name})'
    )
    return (
        f'{path}: precision int8 runs an INT8 model (an OpenVINO IR written by export --int8), '
        f'and this is an FP32 .onnx file; {hint}'
    )


def _check_int8_request(path: pathlib.Path, metadata: ModelMetadata, precision: str) -> None:
    if not is_int8(metadata):
        raise ModelMetadataError(
            f'{path}: this IR does not record a verified INT8 quantization '
            f'(quantization={metadata.extra.get("quantization", "none")!r}, '
            f'int8_verified={metadata.extra.get("int8_verified", "none")!r}); re-export it '
            f'with `python -m training export --int8`'
        )
    if precision not in ('auto', INT8):
        source = metadata.extra.get('int8_source_onnx', 'its FP32 .onnx')
        raise ConfigError(
            f'{path} is an INT8 model: precision must be auto or int8, got {precision!r}; '
            f'for {precision} run the FP32 model ({source})'
        )


class OpenVinoEngine(DepthEngine):
    """An exported ``.onnx`` depth model compiled and run by OpenVINO."""

    backend = 'openvino'

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = 'auto',
        precision: str | None = None,
        intra_op_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise EngineError(
                'backend openvino needs the openvino package: pip install -r '
                'requirements-openvino.txt (or choose backend:=onnxruntime)'
            ) from e
        self.path = pathlib.Path(path)
        precision = precision or 'auto'
        if precision not in ('auto', *PRECISIONS, INT8):
            raise ConfigError(
                f'OpenVINO precision must be auto, {INT8} or one of {list(PRECISIONS)}, got '
                f'{precision!r}'
            )
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ConfigError(f'intra_op_threads must be >= 0, got {intra_op_threads}')
        # The metadata comes from our own readers (ONNX protobuf, IR XML), so a file without
        # it is refused before OpenVINO spends a second reading the graph.
        self.int8 = self.path.suffix.lower() == '.xml'
        if self.int8:
            super().__init__(read_ir_metadata(self.path))
            _check_int8_request(self.path, self.metadata, precision)
        else:
            super().__init__(read_onnx_metadata(self.path))
            if precision == INT8:
                raise ConfigError(_not_int8_message(self.path))
        self._core = ov.Core()
        self.device = openvino_device(device, self._core.available_devices)
        if self.int8 and self.device != 'CPU':
            raise ConfigError(
                f'{self.path}: the INT8 model is for the CPU (device auto or cpu), got '
                f'{device!r}; run the FP32 .onnx on {self.device}'
            )
        #: What was asked for ('auto' or a precision); ``precision`` is what runs.
        self.requested_precision = precision
        # The arithmetic of the layers that are not INT8 (all of them in an FP32 file): for an
        # INT8 model the device's preference, as the export checked it, kept only if it meets
        # the accuracy bar against the same model with an FP32 rest.
        rest = self._preferred_precision() if precision in ('auto', INT8) else precision
        capabilities = self._capabilities()
        if capabilities and _CAPABILITY[rest] not in capabilities:
            if precision in ('auto', INT8):
                rest = 'fp32'  # a plugin that prefers what it does not list
            else:
                raise ConfigError(
                    f'OpenVINO {self.device} cannot run {rest} (it offers '
                    f'{sorted(c for c in capabilities if c in _CAPABILITY.values())}); '
                    f'use precision:=fp32'
                )
        root = cache_root(cache_dir)
        try:
            self.cache_dir: pathlib.Path | None = model_cache_dir(root / 'openvino', self.path)
        except OSError as e:
            # A read-only home (some robots) costs the cache, not the engine.
            self.cache_dir = None
            _LOG.warning('OpenVINO model cache disabled: cannot create it under %s: %s', root, e)
        self._threads = int(intra_op_threads or 0)
        started = time.perf_counter()
        self.precision_note = ''
        self.precision_check: dict[str, float] = {}
        if rest == 'fp32':
            self._compiled, self._request = self._compile(rest)
        elif not self._verify_precision(rest):
            rest = 'fp32'
        #: Precision of the layers an INT8 model keeps in floating point; for an FP32
        #: file, ``precision`` itself.
        self.rest_precision = rest
        self.precision = INT8 if self.int8 else rest
        self.compile_s = time.perf_counter() - started

    def _capabilities(self) -> list[str]:
        try:
            return list(self._core.get_property(self.device, 'OPTIMIZATION_CAPABILITIES'))
        except Exception:  # a plugin that does not report them: let compilation decide
            return []

    def _preferred_precision(self) -> str:
        """Return the device's default inference precision (OpenVINO's choice), else fp32."""
        try:
            hint = self._core.get_property(self.device, 'INFERENCE_PRECISION_HINT')
        except Exception:  # a plugin without the property runs what it compiles
            return 'fp32'
        return _FROM_OPENVINO.get(getattr(hint, 'to_string', lambda: str(hint))(), 'fp32')

    def _compile(self, precision: str) -> tuple[Any, Any]:

        config: dict[str, Any] = {
            'PERFORMANCE_HINT': 'LATENCY',
            'INFERENCE_PRECISION_HINT': PRECISIONS[precision],
        }
        if self._threads and self.device == 'CPU':
            config['INFERENCE_NUM_THREADS'] = self._threads
        if self.cache_dir is not None:
            # A directory per precision: OpenVINO 2026.4's cache key leaves out the precision
            # hint, so a bf16 compile after an fp32 one of the same file loaded the fp32 blob
            # (and crashed in it, for Depth-Anything-V2).
            directory = self.cache_dir / precision
            try:
                directory.mkdir(exist_ok=True)
                config['CACHE_DIR'] = os.fspath(directory)
            except OSError as e:
                _LOG.warning('OpenVINO model cache disabled: cannot create %s: %s', directory, e)
        try:
            # From the file, not a model read first: with the cache on, a later start loads
            # the compiled blob without building the graph in memory at all.
            compiled = self._core.compile_model(os.fspath(self.path), self.device, config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(
                f'{self.path}: OpenVINO cannot read or compile the model for {self.device} '
                f'({precision}; corrupt, truncated, or an operator it lacks): '
                f'{type(e).__name__}: {e}'
            ) from e
        _check_io(compiled, self.path, self.input_hw)
        return compiled, compiled.create_infer_request()

    def _verify_precision(self, precision: str) -> bool:
        """Keep a reduced precision only if its depth meets the accuracy bar against FP32.

        Returns whether it was kept (else FP32 is compiled and runs). For an INT8 model the
        reference is the same model with its unquantized layers in FP32. The FP32 reference
        is compiled, run and released before the reduced precision is compiled, so the two
        compiled models never take memory at once (a refusal recompiles FP32 from OpenVINO's
        cache).
        """
        reference, request = self._compile('fp32')
        images = reference_inputs(self.input_hw, self._static_batch(reference) or 1)
        expected = [self._run(request, image)[0] for image in images]
        reference = request = None
        self._compiled, self._request = self._compile(precision)
        results = [
            depth_agreement(want, self._run(self._request, image)[0])
            for want, image in zip(expected, images)
        ]
        failing = [numbers for numbers in results if not accuracy_holds(numbers)]
        worst = failing[0] if failing else max(results, key=lambda n: n['mean_rel_err'])
        self.precision_check = worst
        if not failing:
            return True
        preferred = " (the device's default)" if self.requested_precision == 'auto' else ''
        self.precision_note = (
            f'{precision}{preferred} refused: its depth differs from fp32 by '
            f'{worst["mean_rel_err"]:.2%} on average and '
            f'{1 - worst["delta1_agreement"]:.2%} of pixels are off by more than '
            f'1.25x (allowed: {ACCURACY_BAR["mean_rel_err"]:.0%} and '
            f'{1 - ACCURACY_BAR["delta1_agreement"]:.0%}); running fp32'
        )
        _LOG.warning('%s: %s', self.path, self.precision_note)
        self._compiled = self._request = None
        self._compiled, self._request = self._compile('fp32')
        return False

    @staticmethod
    def _static_batch(compiled: Any) -> int | None:
        dim = compiled.inputs[0].get_partial_shape()[0]
        return dim.get_length() if dim.is_static else None

    def _run(self, request: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # share_inputs: OpenVINO reads the caller's contiguous array in place; outputs are
        # copied, since the request reuses its buffers on the next run.
        results = request.infer({INPUT_NAME: x}, share_inputs=True)
        return (
            np.array(results[OUTPUT_NAMES[0]], dtype=np.float32),
            np.array(results[OUTPUT_NAMES[1]], dtype=np.float32),
        )

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model; a static-batch model gets a larger batch one chunk at a time."""
        if self._request is None:
            raise EngineError(f'{self.path}: engine is closed')
        x = self.check_input(image)
        batch = self._static_batch(self._compiled)
        if batch is None or x.shape[0] == batch:
            return self._run(self._request, x)
        if x.shape[0] % batch:
            raise EngineError(
                f'{self.path}: model has a static batch of {batch}; got a batch of {x.shape[0]}'
            )
        parts = [self._run(self._request, x[i : i + batch]) for i in range(0, x.shape[0], batch)]
        return (
            np.concatenate([p[0] for p in parts], axis=0),
            np.concatenate([p[1] for p in parts], axis=0),
        )

    def close(self) -> None:
        """Release the compiled model and its request. Idempotent."""
        self._request = None
        self._compiled = None

    def describe(self) -> str:
        """One line for logs: model, OpenVINO device and the precision actually run."""
        note = f'; {self.precision_note}' if self.precision_note else ''
        auto = ' (auto)' if self.requested_precision == 'auto' else ''
        rest = f', rest {self.rest_precision}' if self.int8 else ''
        return f'{super().describe()} [OpenVINO {self.device} {self.precision}{rest}{auto}{note}]'
