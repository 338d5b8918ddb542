"""``backend='auto'`` for an ``.onnx`` file: ONNX Runtime or OpenVINO, whichever is faster here.

Rules first, measurement last:

1. a CUDA device, or ONNX Runtime with its CUDA provider and ``device='auto'``: ONNX Runtime
   (OpenVINO has no NVIDIA path);
2. an Intel GPU or NPU (``gpu``, ``gpu:N``, ``npu``), or a reduced precision (``bf16``,
   ``fp16``, which only OpenVINO offers for an ONNX file): OpenVINO;
3. OpenVINO not installed, or ``spin_wait`` (an ONNX Runtime setting): ONNX Runtime;
4. otherwise both are loaded and timed on the same input, alternating runs, and OpenVINO is
   chosen only if its outputs agree with ONNX Runtime's and its median is at least
   ``MARGIN`` faster. Agree means equal to ``PARITY_REL`` where OpenVINO runs FP32, and the
   accuracy bar (``moa_depth_ros.engine.accuracy``) where it runs the device's reduced
   precision (``precision`` auto: BF16 on CPUs with AMX or AVX512-BF16). The verdict is
   cached (a JSON file per model file, machine, precision and runtime versions), so only
   the first start measures. If OpenVINO cannot load the file, ONNX Runtime runs it and the
   log says why;
5. an INT8 model beside the file (``MODEL.int8.xml``, written by ``export --int8``) is a
   third candidate on the CPU with ``precision`` auto, when its metadata says it passed the
   accuracy bar at export and that it was made from this very file (``int8_source_sha256``):
   it is timed against the winner of rule 4 on the same input and chosen if it is at least
   ``MARGIN`` faster. Its accuracy is the export's measurement on real frames (a random
   input says nothing about a model calibrated on camera images).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable

import numpy as np

from moa_depth_ros.engine.accuracy import accuracy_holds, depth_agreement, parity_errors
from moa_depth_ros.engine.base import DepthEngine
from moa_depth_ros.engine.cache import cache_root
from moa_depth_ros.engine.machine import cpu_description  # what the benchmarks report
from moa_depth_ros.fileio import atomic_write_text

_LOG = logging.getLogger(__name__)

#: OpenVINO must be this much faster (median) to be chosen: near-equal timings would flip
#: the choice from one start to the next on timing noise.
MARGIN = 1.1
#: Both runtimes execute the same FP32 graph; their outputs must agree to this relative bound.
PARITY_REL = 1e-3
WARMUP_RUNS = 2
TIMED_RUNS = 7
CHOICE_FORMAT = 'moa_depth_ros.backend_choice'

Loader = Callable[[str], DepthEngine]
#: The verdict's name for the INT8 model beside the file (``load('openvino-int8')``).
INT8_CHOICE = 'openvino-int8'


def openvino_installed() -> bool:
    """Tell whether the openvino package can be imported here (without importing it)."""
    return importlib.util.find_spec('openvino') is not None


def _cuda_provider_available() -> bool:
    import onnxruntime as ort

    return 'CUDAExecutionProvider' in ort.get_available_providers()


def rule_based_choice(device: str, precision: str | None, spin_wait: bool) -> str | None:
    """Return the backend the rules decide, or None when it takes a measurement."""
    if device.startswith('cuda'):
        return 'onnxruntime'
    if device.startswith(('gpu', 'npu')) or precision in ('bf16', 'fp16'):
        return 'openvino'
    if not openvino_installed() or spin_wait:
        return 'onnxruntime'
    if device == 'auto' and _cuda_provider_available():
        return 'onnxruntime'
    return None


def _versions() -> dict[str, str]:
    import onnxruntime
    import openvino

    return {'onnxruntime': onnxruntime.__version__, 'openvino': openvino.__version__}


def int8_candidate(model: pathlib.Path, device: str, precision: str | None) -> pathlib.Path | None:
    """Return the verified INT8 model made from ``model`` beside it, if rule 5 applies."""
    from moa_depth_ros.engine.openvino_backend import int8_ir_path

    if precision not in (None, 'auto') or device not in ('auto', 'cpu'):
        return None
    candidate = int8_ir_path(model)
    return candidate if candidate.is_file() else None


def _int8_matches(model: pathlib.Path, candidate: pathlib.Path) -> str:
    """Return '' when ``candidate`` is a verified INT8 model of ``model``, else why not."""
    from moa_depth_ros.engine.cache import file_sha256
    from moa_depth_ros.engine.openvino_backend import is_int8, read_ir_metadata
    from moa_depth_ros.errors import MoaDepthError

    try:
        metadata = read_ir_metadata(candidate)
    except MoaDepthError as e:
        return f'{candidate.name} is unreadable: {e}'
    if not is_int8(metadata):
        return f'{candidate.name} records no verified INT8 quantization'
    if metadata.extra.get('int8_source_sha256') != file_sha256(model):
        return f'{candidate.name} was made from another version of {model.name}'
    return ''


def choice_path(
    model: pathlib.Path,
    threads: int | None,
    cache_dir: Any,
    precision: str | None = None,
    int8: pathlib.Path | None = None,
) -> pathlib.Path:
    """Where the verdict for this model file, machine, settings and runtimes is kept.

    The key covers the file (resolved path, size, modification time: a replaced model is
    measured again), the CPU, the thread and precision settings and both runtimes' versions.
    """
    stat = model.stat()
    key = json.dumps(
        {
            'model': os.fspath(model.resolve()),
            'size': stat.st_size,
            'mtime_ns': stat.st_mtime_ns,
            'cpu': _cpu_name(),
            'cores': os.cpu_count(),
            'threads': threads or 0,
            'precision': precision or 'auto',
            # A replaced INT8 model beside it is measured again.
            'int8': [int8.stat().st_size, int8.stat().st_mtime_ns] if int8 else None,
            **_versions(),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    directory = cache_root(cache_dir)
    return directory / 'backend-choice' / f'{model.stem}-{digest}.json'


def _cpu_name() -> str:
    return cpu_description()[0]


def read_choice(path: pathlib.Path) -> dict[str, Any] | None:
    """Return a cached verdict, or None if there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get('format') != CHOICE_FORMAT
        or data.get('backend') not in ('onnxruntime', 'openvino', INT8_CHOICE)
    ):
        return None
    return data


def _run_ms(engine: DepthEngine, image: np.ndarray) -> float:
    started = time.perf_counter()
    engine.infer(image)
    return (time.perf_counter() - started) * 1e3


def _alternating_median_ms(
    first: DepthEngine, second: DepthEngine, image: np.ndarray
) -> tuple[float, float]:
    """Median ms of each engine on ``image``, warmed up and timed in alternating runs."""
    for _ in range(WARMUP_RUNS):
        first.infer(image)
        second.infer(image)
    first_ms: list[float] = []
    second_ms: list[float] = []
    for _ in range(TIMED_RUNS):
        first_ms.append(_run_ms(first, image))
        second_ms.append(_run_ms(second, image))
    return float(np.median(first_ms)), float(np.median(second_ms))


def measure(ort: DepthEngine, openvino: DepthEngine) -> dict[str, Any]:
    """Time both engines on the same input (alternating runs) and compare their outputs."""
    h, w = ort.input_hw
    image = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    ort_ms, ov_ms = _alternating_median_ms(ort, openvino, image)
    expected, got = ort.infer(image), openvino.infer(image)
    parity = parity_errors(expected, got)
    precision = getattr(openvino, 'precision', 'fp32')
    if precision == 'fp32':
        agrees = parity['depth_rel'] <= PARITY_REL and parity['confidence_rel'] <= PARITY_REL
        differs = (
            f'depth rel {parity["depth_rel"]:.2g}, confidence rel '
            f'{parity["confidence_rel"]:.2g} > {PARITY_REL:g}'
        )
    else:  # the engine checked its precision against its own fp32; check against ours too
        agreement = depth_agreement(expected[0], got[0])
        agrees = accuracy_holds(agreement)
        differs = f'{precision}: depth mean rel err {agreement["mean_rel_err"]:.2%}'
    faster = ov_ms * MARGIN <= ort_ms
    label = 'OpenVINO' if precision == 'fp32' else f'OpenVINO {precision}'
    if agrees and faster:
        backend, reason = 'openvino', f'{label} {ort_ms / ov_ms:.2f}x faster than ONNX Runtime'
    elif not agrees:
        backend = 'onnxruntime'
        reason = f'OpenVINO outputs differ from ONNX Runtime ({differs})'
    else:
        backend = 'onnxruntime'
        reason = f'{label} not {MARGIN:g}x faster ({ov_ms:.1f} vs {ort_ms:.1f} ms)'
    return {
        'format': CHOICE_FORMAT,
        'backend': backend,
        'reason': reason,
        'onnxruntime_ms': ort_ms,
        'openvino_ms': ov_ms,
        'parity': parity,
        'openvino_precision': precision,
        'measured_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'runs': TIMED_RUNS,
    }


def _measure_int8(
    model: pathlib.Path,
    int8: pathlib.Path,
    winner: DepthEngine,
    verdict: dict[str, Any],
    load: Callable[[str], DepthEngine],
) -> tuple[DepthEngine, dict[str, Any]]:
    """Rule 5: time the INT8 model against rule 4's winner; return the faster and the verdict."""
    why_not = _int8_matches(model, int8)
    if why_not:
        verdict['int8'] = why_not
        return winner, verdict
    try:
        candidate = load(INT8_CHOICE)
    except Exception as e:  # the FP32 file still runs
        verdict['int8'] = f'{int8.name} cannot run: {type(e).__name__}: {e}'
        return winner, verdict
    h, w = winner.input_hw
    image = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    winner_ms, int8_ms = _alternating_median_ms(winner, candidate, image)
    verdict['int8_ms'] = int8_ms
    if int8_ms * MARGIN <= winner_ms:
        winner.close()
        error = candidate.metadata.extra.get('int8_mean_rel_err', '?')
        verdict.update(
            backend=INT8_CHOICE,
            reason=f'INT8 model {int8.name} {winner_ms / int8_ms:.2f}x faster than '
            f'{winner.backend} {getattr(winner, "precision", "fp32")} on {model.name} (export '
            f'check: depth mean rel err {error} vs FP32)',
        )
        return candidate, verdict
    candidate.close()
    verdict['int8'] = f'INT8 not {MARGIN:g}x faster ({int8_ms:.1f} vs {winner_ms:.1f} ms)'
    return winner, verdict


def choose(
    model: pathlib.Path,
    load: Callable[[str], DepthEngine],
    *,
    threads: int | None,
    cache_dir: Any,
    precision: str | None = None,
    int8: pathlib.Path | None = None,
) -> DepthEngine:
    """Load the faster of ONNX Runtime and OpenVINO for ``model`` (rules 4 and 5 above).

    ``load(backend)`` constructs one engine (``load(INT8_CHOICE)`` the INT8 model ``int8``).
    A cached verdict loads only its backend; else the candidates are loaded and measured,
    the verdict is written (atomically; an unwritable cache only costs the next start
    another measurement) and the losers are closed.
    """
    path = choice_path(model, threads, cache_dir, precision, int8)
    cached = read_choice(path)
    if cached is not None:
        engine = load(cached['backend'])
        engine.selection = f'auto: {cached["reason"]} (measured {cached["measured_at"]})'
        return engine
    ort = load('onnxruntime')
    try:
        openvino = load('openvino')
    except Exception as e:  # a model OpenVINO cannot compile still runs
        ort.selection = f'auto: OpenVINO cannot run it ({type(e).__name__}: {e})'
        _LOG.warning('%s: %s', model, ort.selection)
        return ort
    try:
        verdict = measure(ort, openvino)
    except Exception:
        ort.close()
        openvino.close()
        raise
    chosen, other = (openvino, ort) if verdict['backend'] == 'openvino' else (ort, openvino)
    other.close()
    if int8 is not None:
        chosen, verdict = _measure_int8(model, int8, chosen, verdict, load)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(verdict, indent=2, sort_keys=True) + '\n')
    except OSError as e:
        _LOG.warning('cannot cache the backend choice in %s: %s', path, e)
    chosen.selection = f'auto: {verdict["reason"]} (measured now)'
    _LOG.info('%s: %s', model, chosen.selection)
    return chosen
