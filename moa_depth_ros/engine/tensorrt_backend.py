"""The TensorRT runtime backend: deserialise an engine, bind device buffers, run it.

Written against the TensorRT 10 Python API (``Runtime.deserialize_cuda_engine``, the
name-based I/O tensor API, ``IExecutionContext.set_tensor_address`` and
``execute_async_v3``). Device memory and streams come from a small ``CudaApi``: NVIDIA's
``cuda-python`` bindings when installed (so the node stays torch-free), else torch CUDA
tensors; pycuda is never needed. ``import tensorrt`` happens inside functions only, so
importing ``moa_depth_ros.engine`` never requires it.

Every engine has a sidecar JSON (see ``cache.py``); an engine whose sidecar names another
GPU model or TensorRT version is refused with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, DepthEngine
from moa_depth_ros.engine.cache import check_sidecar_compatible, read_sidecar, rebuild_hint
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)
MIN_TENSORRT_MAJOR = 10


def import_tensorrt() -> ModuleType:
    """Import the TensorRT Python API or raise EngineError saying how to get it."""
    try:
        import tensorrt as trt
    except Exception as e:  # the PyPI stub package raises assorted errors on import
        raise EngineError(
            'TensorRT is not available (`import tensorrt` failed: '
            f'{type(e).__name__}: {e}); on a Jetson it comes with JetPack '
            '(python3-libnvinfer), on a desktop GPU `pip install -r requirements-gpu-cu12.txt` '
            '(or -cu13.txt for a CUDA 13 driver); or use the .onnx model with backend onnxruntime'
        ) from e
    if not hasattr(trt, 'Runtime') or not hasattr(trt, '__version__'):
        raise EngineError(
            'the installed `tensorrt` package is a stub without the TensorRT libraries; '
            'install TensorRT for this GPU (JetPack, or requirements-gpu-cu12.txt / -cu13.txt)'
        )
    major = _major_version(trt.__version__)
    if major < MIN_TENSORRT_MAJOR:
        raise EngineError(
            f'TensorRT {trt.__version__} is too old: moa_depth_ros needs TensorRT '
            f'>= {MIN_TENSORRT_MAJOR} (name-based I/O tensors, execute_async_v3)'
        )
    return trt


def _major_version(version: str) -> int:
    match = re.match(r'(\d+)', str(version))
    return int(match.group(1)) if match else 0


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

    def device_name(self) -> str: ...

    def activate(self) -> None:
        """Make this device current for the calling thread (CUDA tracks it per thread)."""

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def create_stream(self) -> int: ...

    def destroy_stream(self, stream: int) -> None: ...

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None: ...

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None: ...

    def synchronize(self, stream: int) -> None: ...


class CudaPythonApi:
    """``CudaApi`` over NVIDIA's cuda-python runtime bindings (no torch, no pycuda)."""

    def __init__(self, device_index: int = 0) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:  # cuda-python < 12.6 exposes the same module here
            from cuda import cudart
        self._rt = cudart
        self._streams: dict[int, Any] = {}
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

    def device_name(self) -> str:
        props = self._check(
            self._rt.cudaGetDeviceProperties(self.device_index), 'cudaGetDeviceProperties'
        )
        name = props.name
        return (name.decode('utf-8', 'replace') if isinstance(name, bytes) else str(name)).strip(
            '\x00 '
        )

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1)), 'cudaMalloc'))

    def free(self, ptr: int) -> None:
        self._check(self._rt.cudaFree(ptr), 'cudaFree')

    def create_stream(self) -> int:
        stream = self._check(
            self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking),
            'cudaStreamCreate',
        )
        handle = int(stream)
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
        self._torch = torch
        self.device = torch.device('cuda', device_index)
        self._buffers: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self.activate()

    def activate(self) -> None:
        self._torch.cuda.set_device(self.device)

    def device_name(self) -> str:
        return str(self._torch.cuda.get_device_name(self.device)).strip()

    def alloc(self, nbytes: int) -> int:
        buf = self._torch.empty(max(int(nbytes), 1), dtype=self._torch.uint8, device=self.device)
        self._buffers[buf.data_ptr()] = buf
        return int(buf.data_ptr())

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def create_stream(self) -> int:
        stream = self._torch.cuda.Stream(device=self.device)
        self._streams[int(stream.cuda_stream)] = stream
        return int(stream.cuda_stream)

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        src = self._torch.from_numpy(host.reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._streams[stream]):
            self._buffers[ptr][: host.nbytes].copy_(src)

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        dst = self._torch.from_numpy(host.reshape(-1).view(np.uint8))
        with self._torch.cuda.stream(self._streams[stream]):
            dst.copy_(self._buffers[ptr][: host.nbytes])

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
    """A serialized TensorRT engine plus its sidecar, run with ``execute_async_v3``."""

    backend = 'tensorrt'

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = 'auto',
        cuda: CudaApi | None = None,
    ) -> None:
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise EngineError(f'TensorRT engine {os.fspath(path)!r} does not exist')
        sidecar = read_sidecar(self.path)
        super().__init__(sidecar.metadata)
        self.sidecar = sidecar
        trt = import_tensorrt()
        self._trt = trt
        self._cuda = cuda if cuda is not None else default_cuda_api(device)
        check_sidecar_compatible(
            sidecar,
            tensorrt_version=str(trt.__version__),
            gpu_name=self._cuda.device_name(),
            engine_path=self.path,
        )
        data = self.path.read_bytes()
        # Hash the bytes that get deserialised (one read; no window for a swapped file).
        if hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
            raise EngineError(
                f'{self.path}: engine file does not match the sha256 in its sidecar (truncated, '
                f'replaced or corrupt); ' + rebuild_hint(self.path)
            )
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

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._cuda.activate()
        n = x.shape[0]
        h, w = self.input_hw
        if self._dynamic_batch and not self._context.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise EngineError(f'{self.path}: TensorRT rejected input shape {list(x.shape)}')
        host_in = np.ascontiguousarray(x, dtype=self._dtypes[INPUT_NAME])
        self._context.set_tensor_address(INPUT_NAME, self._buffer(INPUT_NAME, host_in.nbytes))
        outputs = {}
        for name in OUTPUT_NAMES:
            outputs[name] = np.empty((n, 1, h, w), dtype=self._dtypes[name])
            ptr = self._buffer(name, outputs[name].nbytes)
            self._context.set_tensor_address(name, ptr)
        self._cuda.copy_to_device(self._buffers[INPUT_NAME][0], host_in, self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise EngineError(f'{self.path}: TensorRT execute_async_v3 failed (see its log)')
        for name in OUTPUT_NAMES:
            self._cuda.copy_to_host(outputs[name], self._buffers[name][0], self._stream)
        self._cuda.synchronize(self._stream)
        depth, confidence = (outputs[name].astype(np.float32, copy=False) for name in OUTPUT_NAMES)
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
        """Free device buffers and the stream. Idempotent."""
        if getattr(self, '_closed', True):
            return
        self._closed = True
        for ptr, _ in self._buffers.values():
            self._cuda.free(ptr)
        self._buffers.clear()
        self._cuda.destroy_stream(self._stream)
        self._context = None
        self._engine = None

    def describe(self) -> str:
        """One line for logs: model, backend, precision and GPU."""
        return (
            f'{super().describe()} [{self.sidecar.precision}, {self.sidecar.gpu_name}, '
            f'TensorRT {self.sidecar.tensorrt_version}]'
        )
