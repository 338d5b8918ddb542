"""``load_engine``: choose and construct a backend for a model file.

The file type decides by default: ``.engine`` / ``.plan`` TensorRT, ``.safetensors`` PyTorch,
``.onnx`` ONNX Runtime or OpenVINO (``engine.choice``: the faster of the two on this machine,
measured once, and the INT8 model beside the file where there is a verified one and it is
faster), ``.xml`` OpenVINO (an INT8 IR written by ``python -m training export --int8``).
``backend='tensorrt'`` with an ``.onnx`` file builds (once) and caches an engine for this
GPU. Each backend module is imported only when chosen, so choosing ONNX Runtime, OpenVINO
or TensorRT never imports torch.
"""

from __future__ import annotations

import importlib
import os
import pathlib

from moa_depth_ros.engine.base import DepthEngine
from moa_depth_ros.errors import ConfigError, EngineError

BACKENDS = ('tensorrt', 'onnxruntime', 'openvino', 'torch')
SUFFIX_BACKENDS = {
    '.engine': 'tensorrt',
    '.plan': 'tensorrt',
    '.onnx': 'onnxruntime',
    '.xml': 'openvino',
    '.safetensors': 'torch',
}


def backend_for_path(path: str | os.PathLike) -> str:
    """Return the default backend for a model file from its suffix."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKENDS:
        raise EngineError(
            f'{os.fspath(path)}: unknown model file type {suffix!r}; expected one of '
            f'{", ".join(sorted(SUFFIX_BACKENDS))} (.engine/.plan TensorRT, .onnx ONNX '
            f'Runtime or OpenVINO, .xml an OpenVINO INT8 model, .safetensors PyTorch)'
        )
    return SUFFIX_BACKENDS[suffix]


def _backend_module(name: str):
    return importlib.import_module(f'moa_depth_ros.engine.{name}')


def load_engine(
    path: str | os.PathLike,
    backend: str = 'auto',
    device: str = 'auto',
    *,
    precision: str | None = None,
    intra_op_threads: int | None = None,
    spin_wait: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> DepthEngine:
    """Load a depth model file behind the ``DepthEngine`` interface.

    ``backend``: 'auto' (by file type; for .onnx the faster of onnxruntime and openvino),
    'tensorrt', 'onnxruntime', 'openvino' or 'torch'.
    ``device``: 'auto', 'cpu', 'cuda' or 'cuda:N'; OpenVINO also 'gpu', 'gpu:N', 'npu'.
    ``precision``: torch 'fp32'/'bf16'/'fp16'; TensorRT-from-ONNX 'fp16'/'fp32' (default the
    model's: fp16, or fp32 without TF32 for DepthCLIP; every build is checked against ONNX
    Runtime FP32); OpenVINO 'bf16' or 'fp16' (default: the device's own preference, e.g.
    bf16 on CPUs with AMX), kept only if the depth meets the accuracy bar against fp32, or 'fp32';
    'int8' runs an INT8 model (the ``.int8.xml`` that ``export --int8`` writes; an FP32 file
    with 'int8' is a ConfigError naming it); ONNX Runtime runs the .onnx file as exported.
    ``intra_op_threads``: ONNX Runtime / OpenVINO CPU threads (None = its default).
    ``spin_wait``: let ONNX Runtime's threads busy-wait between runs (lower latency, a core
    kept busy); off by default.
    ``cache_dir``: engine cache for TensorRT-from-ONNX, OpenVINO's compiled models and the
    auto backend choice (default ~/.cache/moa_depth_ros/engines).
    """
    if backend not in ('auto', *BACKENDS):
        raise ConfigError(f'backend must be auto or one of {list(BACKENDS)}, got {backend!r}')
    path = pathlib.Path(path).expanduser()
    file_backend = backend_for_path(path)
    if not path.is_file():
        raise EngineError(f'model file {os.fspath(path)!r} does not exist')
    chosen = file_backend if backend == 'auto' else backend
    if precision == 'int8' and file_backend == 'onnxruntime' and chosen != 'tensorrt':
        # One message whichever runtime was named: the INT8 model is a file of its own.
        openvino_backend = _backend_module('openvino_backend')
        raise ConfigError(openvino_backend._not_int8_message(path))
    if backend == 'auto' and file_backend == 'onnxruntime':
        choice = _backend_module('choice')
        chosen = choice.rule_based_choice(device, precision, spin_wait) or 'measure'
        if chosen == 'measure':
            int8 = choice.int8_candidate(path, device, precision)

            def load(name: str) -> DepthEngine:
                if name == choice.INT8_CHOICE:
                    name, file, wanted = 'openvino', int8, 'int8'
                else:
                    file, wanted = path, precision
                return load_engine(
                    file,
                    name,
                    device,
                    precision=wanted,
                    intra_op_threads=intra_op_threads,
                    cache_dir=cache_dir,
                )

            return choice.choose(
                path,
                load,
                threads=intra_op_threads,
                cache_dir=cache_dir,
                precision=precision,
                int8=int8,
            )

    if chosen == 'tensorrt':
        tensorrt_backend = _backend_module('tensorrt_backend')
        if file_backend == 'onnxruntime':
            builder = _backend_module('tensorrt_builder')
            # Built on ``device``: the engine is for the GPU that will run it.
            path = builder.ensure_engine(
                path, precision=precision, device=device, cache_dir=cache_dir
            )
        elif file_backend != 'tensorrt':
            raise EngineError(
                f'{path}: the tensorrt backend runs .engine/.plan or .onnx files; export the '
                f'checkpoint first with `python -m training export`'
            )
        elif precision is not None:
            raise ConfigError(
                'precision is fixed when a TensorRT engine is built; rebuild it to change it'
            )
        return tensorrt_backend.TensorRTEngine(path, device=device)

    if chosen == 'onnxruntime':
        if file_backend != 'onnxruntime':
            raise EngineError(
                f'{path}: the onnxruntime backend runs .onnx files; got a {path.suffix} file'
                + (
                    ' (an OpenVINO INT8 model: backend:=openvino or auto)'
                    if file_backend == 'openvino'
                    else ''
                )
            )
        if precision not in (None, 'fp32'):
            raise ConfigError(
                f'onnxruntime runs the model as exported; precision {precision!r} is not '
                f'available (export an int8 model with `python -m training export --int8`)'
            )
        onnx_backend = _backend_module('onnx_backend')
        return onnx_backend.OnnxRuntimeEngine(
            path, device=device, intra_op_threads=intra_op_threads, spin_wait=spin_wait
        )

    if chosen == 'openvino':
        if file_backend not in ('onnxruntime', 'openvino'):
            raise EngineError(
                f'{path}: the openvino backend runs .onnx and INT8 .xml files; got a '
                f'{path.suffix} file'
            )
        if spin_wait:
            raise ConfigError(
                'spin_wait is an ONNX Runtime setting; OpenVINO manages its own threads'
            )
        openvino_backend = _backend_module('openvino_backend')
        return openvino_backend.OpenVinoEngine(
            path,
            device=device,
            precision=precision,
            intra_op_threads=intra_op_threads,
            cache_dir=cache_dir,
        )

    if file_backend != 'torch':
        raise EngineError(
            f'{path}: the torch backend runs .safetensors checkpoints; got a {path.suffix} file'
        )
    torch_backend = _backend_module('torch_backend')
    return torch_backend.TorchEngine(path, device=device, precision=precision or 'fp32')
