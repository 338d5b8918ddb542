"""Say in one line whether this Python can run the GPU acceptance (test/gpu_acceptance.sh).

Standard library only, so it runs in any interpreter: it imports what the acceptance run
needs (the model stack that exports the networks, ONNX Runtime for the reference, TensorRT
and cuda-python for the engines, this package) and asks the CUDA runtime for a GPU. Prints
``gpu-acceptance: ready: ...`` and exits 0, or ``gpu-acceptance: refused: ...`` naming
everything that is missing and how to get it, and exits 2. Never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

# (import name, what provides it, why the acceptance run needs it)
MODULES = (
    ('numpy', 'numpy', 'arrays'),
    ('cv2', 'opencv-python-headless', 'the frame path the package imports'),
    ('torch', 'torch', 'exports the networks'),
    ('open_clip', 'open_clip_torch', 'the CLIP towers'),
    ('timm', 'timm', 'the CLIP towers'),
    ('onnx', 'onnx', 'the FP16 graph for TensorRT 11'),
    ('onnxruntime', 'onnxruntime', 'the FP32 reference'),
    ('moa_depth_ros', 'this repository (pip install -e .)', 'the package'),
    ('training', 'this repository on PYTHONPATH', 'the exporter'),
)
# The lane a missing TensorRT or cuda-python comes from.
INSTALL_HINT = (
    'run `make gpu-acceptance` (builds a venv for this machine: requirements-gpu-*.txt, or '
    "JetPack's python3-libnvinfer on a Jetson)"
)


def _tensorrt_problem(importer: Callable[[str], object]) -> str | None:
    try:
        trt = importer('tensorrt')
    except Exception as e:  # the PyPI stub raises assorted errors on import
        return f'tensorrt ({type(e).__name__}: {e})'
    if not hasattr(trt, 'Runtime'):
        return 'tensorrt (a stub without the TensorRT libraries)'
    from moa_depth_ros.engine import tensorrt_backend

    try:
        tensorrt_backend.import_tensorrt()
    except Exception as e:  # EngineError: too old or too new
        return f'tensorrt ({e})'
    return None


def _cuda_problem(importer: Callable[[str], object]) -> tuple[str | None, int]:
    """Return (what is wrong with cuda-python or the GPU, or None; the GPU count)."""
    try:
        runtime = importer('cuda.bindings.runtime')
    except ImportError:
        try:
            runtime = importer('cuda.cudart')  # cuda-python before 12.6
        except ImportError as e:
            return f'cuda-python ({e})', 0
    try:
        err, count = runtime.cudaGetDeviceCount()
    except Exception as e:  # the CUDA runtime library itself failed to load
        return f'a CUDA runtime ({type(e).__name__}: {e})', 0
    if err != runtime.cudaError_t.cudaSuccess or int(count) == 0:
        return 'a CUDA GPU (cudaGetDeviceCount found none: is the NVIDIA driver loaded?)', 0
    return None, int(count)


def problems(importer: Callable[[str], object] = importlib.import_module) -> tuple[list, dict]:
    """Return (what is missing, what was found)."""
    missing, found = [], {}
    for name, dist, why in MODULES:
        try:
            module = importer(name)
        except Exception as e:  # ImportError, or a broken install raising anything
            missing.append(f'{name} ({dist}: {why}; {type(e).__name__})')
        else:
            found[name] = getattr(module, '__version__', 'present')
    if 'moa_depth_ros' in found:  # the TensorRT check uses the package's own version gate
        problem = _tensorrt_problem(importer)
        if problem:
            missing.append(problem)
        else:
            found['tensorrt'] = importer('tensorrt').__version__
    problem, count = _cuda_problem(importer)
    if problem:
        missing.append(problem)
    else:
        found['gpus'] = count
    return missing, found


def main(importer: Callable[[str], object] = importlib.import_module) -> int:
    missing, found = problems(importer)
    if missing:
        print(
            f'gpu-acceptance: refused: {sys.executable} lacks {"; ".join(missing)}; '
            + INSTALL_HINT,
            flush=True,
        )
        return 2
    print(
        'gpu-acceptance: ready: ' + ', '.join(f'{k} {v}' for k, v in found.items()),
        flush=True,
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
