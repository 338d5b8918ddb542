"""The TensorRT runtime backend: deserialise an engine, bind device buffers, run it.

Written against the TensorRT 10.3+ and 11.x Python APIs (``Runtime.deserialize_cuda_engine``,
the name-based I/O tensor API, ``IExecutionContext.set_tensor_address`` and
``execute_async_v3``), which the runtime side shares. Device memory, pinned host memory and
streams come from a small ``CudaApi``: NVIDIA's ``cuda-python`` bindings when installed (so
the node stays torch-free), else torch; pycuda is never needed. ``import tensorrt`` happens
inside functions only, so importing ``moa_depth_ros.engine`` never requires it or a GPU.

Every engine has a sidecar JSON (see ``cache.py``); an engine whose sidecar names another
GPU (name, compute capability, SM count) or TensorRT version is refused with the command
that rebuilds it.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import json
import logging
import os
import pathlib
import re
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, DepthEngine
from moa_depth_ros.engine.cache import (
    EngineSidecar,
    GpuInfo,
    check_sidecar_compatible,
    read_sidecar,
    rebuild_hint,
)
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)
# JetPack 6.1 ships TensorRT 10.3; 11.x is the newest API this package is written against.
MIN_TENSORRT_VERSION = (10, 3)
MAX_TENSORRT_MAJOR = 11


def import_tensorrt() -> ModuleType:
    """Import the TensorRT Python API or raise EngineError saying how to get it."""
    try:
        import tensorrt as trt
    except Exception as e:  # the PyPI stub package raises assorted errors on import
        raise EngineError(
            'TensorRT is not available (`import tensorrt` failed: '
            f'{type(e).__name__}: {e}); on a Jetson it comes with JetPack '
            '(python3-libnvinfer), on a desktop GPU `pip install -r '
            'requirements-gpu-cu12-trt11.txt` (cu13 for a CUDA 13 driver, trt10 for TensorRT '
            '10); or use the .onnx model with backend onnxruntime'
        ) from e
    if not hasattr(trt, 'Runtime') or not hasattr(trt, '__version__'):
        raise EngineError(
            'the installed `tensorrt` package is a stub without the TensorRT libraries; '
            'install TensorRT for this GPU (JetPack, or a requirements-gpu-cuXX-trtN.txt)'
        )
    version = version_tuple(trt.__version__)
    if version[:2] < MIN_TENSORRT_VERSION:
        raise EngineError(
            f'TensorRT {trt.__version__} is too old: moa_depth_ros needs TensorRT '
            f'{".".join(map(str, MIN_TENSORRT_VERSION))} or newer (JetPack 6.1 or later on a '
            f'Jetson)'
        )
    if version[0] > MAX_TENSORRT_MAJOR:
        raise EngineError(
            f'TensorRT {trt.__version__} is newer than moa_depth_ros supports (10.3 to '
            f'{MAX_TENSORRT_MAJOR}.x): its build API may have changed; install TensorRT '
            f'< {MAX_TENSORRT_MAJOR + 1} or use the .onnx model with backend onnxruntime'
        )
    return trt


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); unparsable parts end the tuple."""
    parts = []
    for part in str(version).split('.'):
        match = re.match(r'\d+', part)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts) or (0,)


def has_weak_typing(trt: ModuleType) -> bool:
    """Tell whether this TensorRT builds weakly typed FP16 networks (10.x yes, 11 no).

    Asked of the API rather than the version number: TensorRT 11 removed
    ``BuilderFlag.FP16``, ``OBEY_PRECISION_CONSTRAINTS`` and layer precisions together.
    """
    flags = trt.BuilderFlag
    return hasattr(flags, 'FP16') and hasattr(flags, 'OBEY_PRECISION_CONSTRAINTS')


def parse_cuda_device(device: str) -> int:
    """Parse 'auto' / 'cuda' / 'cuda:N' into a CUDA device index."""
    if device in ('auto', 'cuda', 'gpu'):
        return 0
    match = re.fullmatch(r'cuda:(\d+)', device)
    if match is None:
        raise ConfigError(
            f'the tensorrt backend runs on a CUDA device: device must be auto, cuda or cuda:N, '
            f'got {device!r}'
        )
    return int(match.group(1))


class CudaApi(Protocol):
    """The few CUDA runtime services the TensorRT backend needs (raw device pointers)."""

    device_index: int

    def device_info(self) -> GpuInfo:
        """Name, compute capability, SM count and memory: what an engine is tuned for."""

    def activate(self) -> None:
        """Make this device current for the calling thread (CUDA tracks it per thread)."""

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def alloc_host(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory (uint8): copies from it are truly asynchronous."""

    def free_host(self, array: np.ndarray) -> None: ...

    def create_stream(self) -> int:
        """Create a stream; return the integer handle ``execute_async_v3`` takes."""

    def destroy_stream(self, stream: int) -> None: ...

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None: ...

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None: ...

    def synchronize(self, stream: int) -> None: ...


def _native_handle(handle: Any) -> int:
    """Return the integer value of a cuda-python handle (``int()`` is deprecated in 13)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python before 12.9 / 13.0: int() is the only way
        return int(handle)
    return int(get_cuda_native_handle(handle))


class CudaPythonApi:
    """``CudaApi`` over NVIDIA's cuda-python runtime bindings (no torch, no pycuda)."""

    def __init__(self, device_index: int = 0) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:  # cuda-python < 12.6 exposes the same module here
            from cuda import cudart
        self._rt = cudart
        self._streams: dict[int, Any] = {}
        self._host: dict[int, int] = {}  # array data pointer -> size
        self.device_index = device_index
        self.activate()

    def _check(self, result: tuple, what: str) -> Any:
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            name = self._rt.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise EngineError(f'CUDA error in {what}: {name}')
        return values[0] if len(values) == 1 else values

    def activate(self) -> None:
        self._check(
            self._rt.cudaSetDevice(self.device_index), f'cudaSetDevice({self.device_index})'
        )

    def device_info(self) -> GpuInfo:
        props = self._check(
            self._rt.cudaGetDeviceProperties(self.device_index), 'cudaGetDeviceProperties'
        )
        name = props.name
        name = (name.decode('utf-8', 'replace') if isinstance(name, bytes) else str(name)).strip(
            '\x00 '
        )
        return GpuInfo(
            name=name,
            compute_capability=f'{props.major}.{props.minor}',
            sm_count=int(props.multiProcessorCount),
            total_memory_bytes=int(props.totalGlobalMem),
        )

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1)), 'cudaMalloc'))

    def free(self, ptr: int) -> None:
        self._check(self._rt.cudaFree(ptr), 'cudaFree')

    def alloc_host(self, nbytes: int) -> np.ndarray:
        size = max(int(nbytes), 1)
        ptr = int(self._check(self._rt.cudaMallocHost(size), 'cudaMallocHost'))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(ptr))
        self._host[ptr] = size
        return array

    def free_host(self, array: np.ndarray) -> None:
        ptr = int(array.ctypes.data)
        if self._host.pop(ptr, None) is not None:
            self._check(self._rt.cudaFreeHost(ptr), 'cudaFreeHost')

    def create_stream(self) -> int:
        stream = self._check(
            self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking),
            'cudaStreamCreate',
        )
        handle = _native_handle(stream)
        self._streams[handle] = stream
        return handle

    def destroy_stream(self, stream: int) -> None:
        self._check(self._rt.cudaStreamDestroy(self._streams.pop(stream)), 'cudaStreamDestroy')

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpyAsync(
                ptr, host.ctypes.data, host.nbytes, kind, self._streams[stream]
            ),
            'cudaMemcpyAsync(host to device)',
        )

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._rt.cudaMemcpyAsync(
                host.ctypes.data, ptr, host.nbytes, kind, self._streams[stream]
            ),
            'cudaMemcpyAsync(device to host)',
        )

    def synchronize(self, stream: int) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._streams[stream]), 'cudaStreamSynchronize')


class TorchCudaApi:
    """``CudaApi`` over torch CUDA tensors, for machines with torch but not cuda-python."""

    def __init__(self, device_index: int = 0) -> None:
        import torch

        if not torch.cuda.is_available():
            raise EngineError('the tensorrt backend needs a CUDA GPU; torch sees none')
        if device_index >= torch.cuda.device_count():
            raise EngineError(
                f'cuda:{device_index} does not exist; torch sees '
                f'{torch.cuda.device_count()} GPU(s)'
            )
        self._torch = torch
        self.device_index = device_index
        self.device = torch.device('cuda', device_index)
        self._buffers: dict[int, Any] = {}
        self._host: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self.activate()

    def activate(self) -> None:
        self._torch.cuda.set_device(self.device)

    def device_info(self) -> GpuInfo:
        props = self._torch.cuda.get_device_properties(self.device)
        return GpuInfo(
            name=str(props.name).strip(),
            compute_capability=f'{props.major}.{props.minor}',
            sm_count=int(props.multi_processor_count),
            total_memory_bytes=int(props.total_memory),
        )

    def alloc(self, nbytes: int) -> int:
        buf = self._torch.empty(max(int(nbytes), 1), dtype=self._torch.uint8, device=self.device)
        self._buffers[buf.data_ptr()] = buf
        return int(buf.data_ptr())

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def alloc_host(self, nbytes: int) -> np.ndarray:
        buf = self._torch.empty(max(int(nbytes), 1), dtype=self._torch.uint8, pin_memory=True)
        self._host[buf.data_ptr()] = buf
        return buf.numpy()

    def free_host(self, array: np.ndarray) -> None:
        self._host.pop(int(array.ctypes.data), None)

    def create_stream(self) -> int:
        stream = self._torch.cuda.Stream(device=self.device)
        self._streams[int(stream.cuda_stream)] = stream
        return int(stream.cuda_stream)

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        src = self._torch.from_numpy(host.reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._streams[stream]):
            self._buffers[ptr][: host.nbytes].copy_(src, non_blocking=True)

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        dst = self._torch.from_numpy(host.reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._streams[stream]):
            dst.copy_(self._buffers[ptr][: host.nbytes], non_blocking=True)

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()


def default_cuda_api(device: str = 'auto') -> CudaApi:
    """Return cuda-python's API when installed (keeps torch out of the node), else torch's."""
    index = parse_cuda_device(device)
    errors = []
    for factory in (CudaPythonApi, TorchCudaApi):
        try:
            return factory(index)
        except (ImportError, EngineError) as e:
            errors.append(f'{factory.__name__}: {e}')
    raise EngineError(
        'the tensorrt backend found no usable CUDA device or CUDA Python bindings '
        f'({"; ".join(errors)}); install cuda-python (`pip install cuda-python`) or torch'
    )


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TensorRTEngine(DepthEngine):
    """A serialized TensorRT engine plus its sidecar, run with ``execute_async_v3``.

    ``serialized`` and ``sidecar`` give an engine that is not on disk yet (the builder
    checks a fresh build before writing it); ``path`` then only names it in messages.
    """

    backend = 'tensorrt'

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = 'auto',
        cuda: CudaApi | None = None,
        serialized: bytes | None = None,
        sidecar: EngineSidecar | None = None,
    ) -> None:
        self._closed = True  # until fully constructed: close() then has nothing to free
        self.path = pathlib.Path(path)
        if serialized is None:
            if not self.path.is_file():
                raise EngineError(f'TensorRT engine {os.fspath(path)!r} does not exist')
            sidecar = read_sidecar(self.path)
        elif sidecar is None:
            raise ConfigError('an in-memory engine needs its sidecar')
        super().__init__(sidecar.metadata)
        self.sidecar = sidecar
        trt = import_tensorrt()
        self._trt = trt
        self._cuda = cuda if cuda is not None else default_cuda_api(device)
        check_sidecar_compatible(
            sidecar,
            tensorrt_version=str(trt.__version__),
            gpu=self._cuda.device_info(),
            engine_path=self.path,
        )
        if serialized is None:
            data = self.path.read_bytes()
            # Hash the bytes that get deserialised (one read; no window for a swapped file).
            if hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
                raise EngineError(
                    f'{self.path}: engine file does not match the sha256 in its sidecar '
                    f'(truncated, replaced or corrupt); ' + rebuild_hint(self.path)
                )
        else:
            data = serialized
        # TensorRT uses the calling thread's current device: make it ours before
        # deserialising and before every run (the node infers from a worker thread, whose
        # current device is 0 whatever ``device`` says).
        self._cuda.activate()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError(
                f'{self.path}: TensorRT could not deserialize the engine (see the TensorRT '
                f'log above); ' + rebuild_hint(self.path)
            )
        self._engine = engine
        self._batch_range = self._validate_io()
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError(f'{self.path}: could not create an execution context (GPU memory?)')
        self._stream = self._cuda.create_stream()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, capacity bytes)
        # Page-locked staging buffers: a copy from pageable memory makes CUDA stage it
        # through its own pinned buffer synchronously, so every copy would block.
        self._host: dict[str, np.ndarray] = {}
        self._closed = False

    def _validate_io(self) -> tuple[int, int]:
        """Check tensor names, dtypes and shapes against the metadata; return (min, max) batch."""
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise ModelMetadataError(
                f'{self.path}: engine must have input {INPUT_NAME!r} and outputs '
                f'{list(OUTPUT_NAMES)}, got inputs {inputs} and outputs {outputs}; re-export '
                f'the ONNX with `python -m training export` and rebuild'
            )
        h, w = self.input_hw
        self._dtypes = {}
        for name in names:
            shape = _dims(engine.get_tensor_shape(name))
            channels = 3 if name == INPUT_NAME else 1
            if len(shape) != 4 or shape[1:] != (channels, h, w):
                raise ModelMetadataError(
                    f'{self.path}: tensor {name!r} has shape {list(shape)}, but the sidecar '
                    f'says the model is [N, {channels}, {h}, {w}]'
                )
            self._dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        batch = _dims(engine.get_tensor_shape(INPUT_NAME))[0]
        # A dynamic batch needs set_input_shape before every run, even when the profile
        # admits one size only (built with --batch 1 1 1, say).
        self._dynamic_batch = batch < 0
        if batch > 0:
            return (batch, batch)
        min_shape, _, max_shape = engine.get_tensor_profile_shape(INPUT_NAME, 0)
        return (_dims(min_shape)[0], _dims(max_shape)[0])

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if ptr:
                self._cuda.free(ptr)
            ptr = self._cuda.alloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _host_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return a pinned host array of ``shape`` for tensor ``name`` (reused across runs)."""
        dtype = self._dtypes[name]
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = self._host.get(name)
        if raw is None or raw.nbytes < nbytes:
            if raw is not None:
                self._cuda.free_host(raw)
            raw = self._cuda.alloc_host(nbytes)
            self._host[name] = raw
        return raw[:nbytes].view(dtype).reshape(shape)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._cuda.activate()
        n = x.shape[0]
        h, w = self.input_hw
        if self._dynamic_batch and not self._context.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise EngineError(f'{self.path}: TensorRT rejected input shape {list(x.shape)}')
        host_in = self._host_array(INPUT_NAME, tuple(x.shape))
        np.copyto(host_in, x, casting='unsafe')
        self._context.set_tensor_address(INPUT_NAME, self._buffer(INPUT_NAME, host_in.nbytes))
        outputs = {}
        for name in OUTPUT_NAMES:
            outputs[name] = self._host_array(name, (n, 1, h, w))
            self._context.set_tensor_address(name, self._buffer(name, outputs[name].nbytes))
        self._cuda.copy_to_device(self._buffers[INPUT_NAME][0], host_in, self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise EngineError(f'{self.path}: TensorRT execute_async_v3 failed (see its log)')
        for name in OUTPUT_NAMES:
            self._cuda.copy_to_host(outputs[name], self._buffers[name][0], self._stream)
        self._cuda.synchronize(self._stream)
        # Copies out of the staging buffers, which the next run overwrites.
        depth, confidence = (np.array(outputs[name], dtype=np.float32) for name in OUTPUT_NAMES)
        return depth, confidence

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the engine; batches beyond its profile are split into supported chunks."""
        if self._closed:
            raise EngineError(f'{self.path}: engine is closed')
        x = self.check_input(image)
        lo, hi = self._batch_range
        n = x.shape[0]
        if lo <= n <= hi:
            return self._run(x)
        # Larger batches run in chunks of ``hi``; a batch (or last chunk) below ``lo`` cannot.
        if n < lo or 0 < n % hi < lo:
            sizes = f'exactly {lo}' if lo == hi else f'{lo} to {hi}'
            raise EngineError(
                f'{self.path}: engine runs batches of {sizes} (its optimisation profile); '
                f'a batch of {n} does not split into those; rebuild it with another --batch'
            )
        parts = [self._run(x[i : i + hi]) for i in range(0, n, hi)]
        return (
            np.concatenate([p[0] for p in parts], axis=0),
            np.concatenate([p[1] for p in parts], axis=0),
        )

    def close(self) -> None:
        """Free device and pinned host buffers and the stream. Idempotent.

        Frees on the engine's device: cudaFree and cudaStreamDestroy act on the calling
        thread's current device, which another engine or thread may have changed.
        """
        if getattr(self, '_closed', True):
            return
        self._closed = True
        self._cuda.activate()
        for ptr, _ in self._buffers.values():
            self._cuda.free(ptr)
        self._buffers.clear()
        for array in self._host.values():
            self._cuda.free_host(array)
        self._host.clear()
        self._cuda.destroy_stream(self._stream)
        self._context = None
        self._engine = None

    def layer_information(self) -> dict[str, Any]:
        """Return the engine inspector's JSON: each layer with its tensors' types."""
        if self._closed:
            raise EngineError(f'{self.path}: engine is closed')
        inspector = self._engine.create_engine_inspector()
        text = inspector.get_engine_information(self._trt.LayerInformationFormat.JSON)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise EngineError(f'{self.path}: the engine inspector gave no JSON: {e}') from e

    def describe(self) -> str:
        """One line for logs: model, backend, precision and GPU."""
        tf32 = ', TF32' if self.sidecar.tf32 else ''
        return (
            f'{super().describe()} [{self.sidecar.precision}{tf32}, {self.sidecar.gpu_name}, '
            f'TensorRT {self.sidecar.tensorrt_version}]'
        )


# The keys a tensor's type goes by in the engine inspector's JSON, as NVIDIA's own readers
# of it take them (NVIDIA/TensorRT at the 11.1 release): Polygraphy reads "Format/Datatype"
# (tools/Polygraphy/polygraphy/backend/trt/util.py: "Row major linear FP16 format", or just
# "Half" when the inspector has no execution context); the trt-perf-analysis tool reads
# "Datatype" beside "Format" (.agents/skills/trt-perf-analysis/scripts/trt_perf/data.py and
# its report_template/app.js: "float", "half", "bf16", "fp8", ...). Matched without regard
# to case.
TYPE_KEYS = ('datatype', 'format/datatype')
# Words of a type string -> precision, checked in this order (BFLOAT16 and FLOAT16 both
# contain FLOAT, so whole words, never substrings).
_TYPE_WORDS = (
    ('bf16', {'BF16', 'BFLOAT16'}),
    ('fp8', {'FP8', 'FLOAT8', 'E4M3', 'E5M2'}),
    ('fp16', {'FP16', 'HALF', 'FLOAT16'}),
    ('fp32', {'FP32', 'FLOAT', 'FLOAT32'}),
)


def tensor_precision(tensor: Any) -> str:
    """Return 'fp16', 'fp32', 'bf16', 'fp8', 'int' or 'other' for one inspector tensor."""
    fields = {str(k).lower(): v for k, v in tensor.items()} if isinstance(tensor, dict) else {}
    text = next((str(fields[key]) for key in TYPE_KEYS if fields.get(key)), '')
    words = set(re.findall(r'[A-Z0-9]+', text.upper()))
    for precision, names in _TYPE_WORDS:
        if words & names:
            return precision
    if any(word.startswith(('INT', 'UINT', 'BOOL')) for word in words):
        return 'int'
    return 'other'


def layer_precisions(information: dict[str, Any]) -> dict[str, int]:
    """Count an engine's layers by the type of their first output ('fp16', 'fp32', ...).

    Reads ``TensorRTEngine.layer_information()`` of a DETAILED build, whichever key the
    type is under (``TYPE_KEYS``). Layers without detail (names only) count as 'unknown'.
    """
    counts: collections.Counter[str] = collections.Counter()
    for layer in information.get('Layers', []):
        outputs = layer.get('Outputs') if isinstance(layer, dict) else None
        if not outputs:
            counts['unknown'] += 1
            continue
        counts[tensor_precision(outputs[0])] += 1
    return dict(counts)
