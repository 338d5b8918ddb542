"""Measuring on the target: the one timer, the camera frame, memory and the machine.

Everything ``moa-depth bench`` and the development benchmarks (``tools/bench``) time goes
through here: ``time_call`` times a repeated call, ``time_frames`` camera frames through the
pipeline and the node's serialization; ``peak_rss_mib`` / ``current_rss_mib`` read memory and
``machine_description`` says what ran it. Only numpy is imported up front, so a robot's
``moa-depth bench`` loads nothing it does not time (no torch: its peak RSS stays the node's).
"""

from __future__ import annotations

import array
import datetime
import importlib.metadata
import os
import pathlib
import platform
import resource
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from moa_depth_ros.engine.machine import cpu_description
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.pipeline import STAGES as PIPELINE_STAGES

# The stages of one frame, in order: the pipeline's own timings, then serializing the outputs.
STAGES = (*PIPELINE_STAGES, 'serialize')


def stats_ms(values_ms: Sequence[float]) -> dict[str, float]:
    """Median, p90, mean, min and max of durations in milliseconds."""
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size == 0:
        raise ConfigError('no durations to summarize')
    return {
        'median_ms': float(np.median(values)),
        'p90_ms': float(np.percentile(values, 90)),
        'mean_ms': float(np.mean(values)),
        'min_ms': float(np.min(values)),
        'max_ms': float(np.max(values)),
    }


def time_call(
    fn: Callable[[], Any], *, warmup: int = 1, iters: int = 20, min_seconds: float = 0.0
) -> dict[str, float]:
    """Time ``fn()`` with ``warmup`` untimed calls first.

    At least ``iters`` calls are timed and, with ``min_seconds``, as many more as fill that
    time. Returns ``stats_ms`` of the calls plus 'throughput_fps' (calls per second of the mean)
    and 'iters' (how many were timed).
    """
    if warmup < 0 or iters < 1 or not min_seconds >= 0:
        raise ConfigError(
            f'need warmup >= 0, iters >= 1 and min_seconds >= 0; got {warmup}, {iters}, '
            f'{min_seconds}'
        )
    for _ in range(warmup):
        fn()
    times_ms: list[float] = []
    begin = time.perf_counter()
    while len(times_ms) < iters or time.perf_counter() - begin < min_seconds:
        start = time.perf_counter()
        fn()
        times_ms.append((time.perf_counter() - start) * 1e3)
    stats = stats_ms(times_ms)
    return {**stats, 'throughput_fps': 1e3 / stats['mean_ms'], 'iters': len(times_ms)}


def copy_ms(nbytes: int, *, iters: int = 20, min_seconds: float = 0.0) -> dict[str, float]:
    """Time a numpy copy of ``nbytes`` (each byte read and written once): the memory floor."""
    if nbytes <= 0:
        raise ConfigError(f'need nbytes > 0, got {nbytes}')
    source = np.ones(int(nbytes), dtype=np.uint8)
    target = np.zeros_like(source)  # zeros, not empty: the pages exist before the first copy
    return time_call(
        lambda: np.copyto(target, source), warmup=1, iters=iters, min_seconds=min_seconds
    )


# ---------------------------------------------------------------------- the camera frame


class RclpyLikeMessage:
    """Stands in for an rclpy message: ``data`` is an array.array('B') as rclpy's is."""

    def __init__(self) -> None:
        self.data = array.array('B')


def synthetic_camera(width: int = 640, height: int = 480) -> Any:
    """Return a plumb_bob camera with a wide-angle distortion (the ray table is not flat)."""
    from moa_depth_ros.frame.geometry import CameraModel

    return CameraModel(
        width=width,
        height=height,
        fx_px=0.82 * width,
        fy_px=0.82 * width,
        cx_px=(width - 1) / 2,
        cy_px=(height - 1) / 2,
        distortion_model='plumb_bob',
        d=(-0.28, 0.07, 0.0005, -0.0003, 0.0),
    )


def synthetic_rgb(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """Return a uint8 RGB frame: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 37.0 + y / 23.0)], axis=-1)
    noisy = base * 230.0 + rng.normal(0.0, 6.0, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def rgb8_message(rgb: np.ndarray) -> RclpyLikeMessage:
    """Return an rgb8 sensor_msgs/Image-like message holding a copy of ``rgb``."""
    msg = RclpyLikeMessage()
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = 'rgb8', 0, int(rgb.shape[1]) * 3
    msg.data.frombytes(np.ascontiguousarray(rgb).tobytes())
    return msg


def serialize_outputs(result: Any) -> int:
    """Serialize a frame's outputs as the node publishes them (default settings); bytes."""
    from moa_depth_ros.frame import cdr, outputs
    from moa_depth_ros.runtime import params

    serialized = outputs.frame_outputs(
        result, cdr.Header(0, 0, 'camera_optical_frame'), params.NodeSettings()
    )
    return sum(len(output.data) for output in serialized)


def time_frames(
    pipeline: Any,
    msg: Any,
    camera: Any,
    frames: int = 200,
    warmup: int = 5,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Run ``warmup`` then ``frames`` frames through ``pipeline`` + serialization; time them.

    Returns {'frames', 'warmup', 'stages': {stage: stats}, 'total': stats, 'fps',
    'output_bytes'}; stats are ``stats_ms``. 'total' is the wall time of the whole frame, so
    it also holds what no stage timer covers.

    With ``max_seconds``, the warm-up frames (all but the first, which pays for lazy
    initialisation) estimate the frame time; when ``frames`` of them would take longer, no
    frame is timed and {'over_budget': True, 'warmup_frame_ms': estimate} is returned.
    """
    if frames < 1 or warmup < 0:
        raise ConfigError(f'need frames >= 1 and warmup >= 0, got {frames} and {warmup}')
    warm_ms = []
    for _ in range(warmup):
        start = time.perf_counter()
        serialize_outputs(pipeline.process_msg(msg, camera))
        warm_ms.append((time.perf_counter() - start) * 1e3)
    if max_seconds and warm_ms:
        estimate_ms = float(np.median(warm_ms[1:] or warm_ms))
        if estimate_ms * frames / 1e3 > max_seconds:
            return {'over_budget': True, 'warmup_frame_ms': estimate_ms, 'warmup': warmup}
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals, nbytes = [], 0
    loop_start = time.perf_counter()
    for _ in range(frames):
        start = time.perf_counter()
        result = pipeline.process_msg(msg, camera)
        serialize_start = time.perf_counter()
        nbytes = serialize_outputs(result)
        end = time.perf_counter()
        for stage in STAGES[:-1]:
            per_stage[stage].append(result.timings_ms.get(stage, 0.0))
        per_stage['serialize'].append((end - serialize_start) * 1e3)
        totals.append((end - start) * 1e3)
    loop_s = time.perf_counter() - loop_start
    return {
        'frames': int(frames),
        'warmup': int(warmup),
        'stages': {stage: stats_ms(values) for stage, values in per_stage.items()},
        'total': stats_ms(totals),
        'fps': frames / loop_s,
        'output_bytes': int(nbytes),
    }


def load_pipeline(spec: dict[str, Any]) -> tuple[Any, Any]:
    """Load the spec's model file on its backend; return (engine, DepthPipeline).

    ``spec``: 'model_path', 'backend', optional 'device', 'precision', 'threads',
    'spin_wait', 'cache_dir'.
    """
    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig

    backend = spec.get('backend', 'auto')
    engine = load_engine(
        spec['model_path'],
        backend=backend,
        device=spec.get('device', 'auto'),
        precision=spec.get('precision'),
        intra_op_threads=spec.get('threads') or None,
        spin_wait=bool(spec.get('spin_wait', False)),
        cache_dir=spec.get('cache_dir'),
    )
    try:
        if engine.backend == 'torch' and spec.get('threads'):
            import torch

            torch.set_num_threads(int(spec['threads']))
        return engine, DepthPipeline(engine, PipelineConfig())
    except BaseException:
        engine.close()  # the caller's cleanup starts only once this returns
        raise


def engine_device(engine: Any) -> str:
    """Where the network ran: 'cpu', 'cuda', or OpenVINO's 'gpu' / 'npu'.

    The CPU floors apply only to 'cpu'.
    """
    if engine.backend == 'tensorrt':
        return 'cuda'
    if engine.backend == 'torch':
        return str(engine.device.type)
    if engine.backend == 'openvino':
        return str(engine.device).split('.')[0].lower()  # 'CPU', 'GPU.1', 'NPU'
    providers = getattr(engine, 'providers', None) or ['?']
    return 'cuda' if providers[0] == 'CUDAExecutionProvider' else 'cpu'


def engine_precision(engine: Any) -> str:
    """Return the arithmetic the network ran in: fp32, bf16, fp16 or int8 (a quantized file)."""
    if engine.backend == 'tensorrt':
        return str(engine.sidecar.precision)
    if engine.backend == 'onnxruntime':
        return 'int8' if 'quantization' in engine.metadata.extra else 'fp32'
    return str(getattr(engine, 'precision', 'fp32'))


def measure_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Load a model file, warm up and time ``spec['frames']`` camera frames end to end.

    ``spec``: what ``load_pipeline`` takes, plus 'frames', 'warmup', optional 'width',
    'height' (640x480) and 'max_seconds' (see ``time_frames``).
    """
    import cv2

    rss_start = current_rss_mib()
    load_start = time.perf_counter()
    engine, pipeline = load_pipeline(spec)
    try:
        load_s = time.perf_counter() - load_start
        width, height = int(spec.get('width', 640)), int(spec.get('height', 480))
        timing = time_frames(
            pipeline,
            rgb8_message(synthetic_rgb(width, height)),
            synthetic_camera(width, height),
            frames=int(spec['frames']),
            warmup=int(spec['warmup']),
            max_seconds=spec.get('max_seconds'),
        )
        return {
            **timing,
            'engine': engine.describe(),
            'model_name': engine.model_name,
            'backend': engine.backend,
            'device': engine_device(engine),
            'precision': engine_precision(engine),
            'load_s': load_s,
            'rss_before_load_mib': rss_start,
            'peak_rss_mib': peak_rss_mib(),
            'opencv_threads': cv2.getNumThreads(),
        }
    finally:
        engine.close()


# ------------------------------------------------------------------------------- memory


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory.
    Not ``ru_maxrss``: Linux carries that over from the parent across fork + exec, so a
    child started from a big parent would report the parent's size.
    """
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform.startswith('linux') else kib / 2**20


def current_rss_mib() -> float:
    """Resident set size now, MiB (/proc/self/statm; falls back to the peak elsewhere)."""
    try:
        with open('/proc/self/statm', encoding='ascii') as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()
    return resident_pages * os.sysconf('SC_PAGE_SIZE') / 2**20


# ------------------------------------------------------------------------------ machine


def _ram_gib() -> float | None:
    try:
        with open('/proc/meminfo', encoding='ascii') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpu() -> str:
    """Name the NVIDIA GPUs the driver lists, or a Jetson's model; from /proc, not CUDA.

    Asking CUDA would load a GPU runtime (torch or cuda-python) into the measured process.
    """
    names = []
    for info in sorted(pathlib.Path('/proc/driver/nvidia/gpus').glob('*/information')):
        try:
            for line in info.read_text(encoding='utf-8', errors='replace').splitlines():
                if line.startswith('Model:'):
                    names.append(line.split(':', 1)[1].strip())
        except OSError:
            continue
    if names:
        return ', '.join(names)
    try:
        model = pathlib.Path('/proc/device-tree/model').read_text(errors='replace').strip('\0\n ')
    except OSError:
        model = ''
    if 'jetson' in model.lower():
        return model
    return 'none found (no NVIDIA driver in /proc)'


def package_version(distribution: str, *alternatives: str) -> str | None:
    """Return the installed version of the first of these distributions found, else None."""
    for name in (distribution, *alternatives):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine_description() -> dict[str, Any]:
    """Describe this machine: CPU, cores, RAM, GPU, library versions, UTC date, load."""
    import cv2

    from moa_depth_ros import __version__

    cpu, isa = cpu_description()
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        'cpu': cpu,
        'isa': isa,
        'cores_available': available,
        'logical_cores': os.cpu_count(),
        'ram_gib': _ram_gib(),
        'gpu': _gpu(),
        'os': platform.platform(),
        'versions': {
            'python': platform.python_version(),
            'numpy': np.__version__,
            'torch': package_version('torch'),
            'onnxruntime': package_version('onnxruntime', 'onnxruntime-gpu'),
            'opencv': cv2.__version__,
            'tensorrt': package_version('tensorrt', 'tensorrt-cu12', 'tensorrt-cu13'),
            'rclpy': package_version('ros-rclpy', 'rclpy'),
            'moa_depth_ros': __version__,
        },
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'load_average_start': load,
    }
