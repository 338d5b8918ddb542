"""End to end per frame: a 640x480 rgb8 camera frame through the pipeline, per model/backend.

One frame is what the node does for it: decode the message, preprocess, run the network,
postprocess (upsample, depth range), back-project the cloud, then encode depth, confidence
and the cloud and serialize the outgoing messages (the CDR bytes the node publishes). Each stage is
timed, and the whole frame is timed around all of them; median and p90 over ``frames``
frames after ``warmup`` untimed ones, frames per second = timed frames / their wall time.

Every (model, backend) measurement runs in its own process (``python -m
moa_depth_ros.bench.e2e SPEC_JSON``), so its peak RSS (VmHWM) is its own and not a
leftover of an earlier, bigger model, and an onnxruntime measurement never has torch
loaded, as on a robot. The parent prepares the model files once: preset models are built
with random weights (the time does not depend on the weights), saved as a checkpoint for
the torch backend and exported to verified ONNX for onnxruntime and TensorRT, cached under
``cache_dir`` by config digest and package version.
"""

from __future__ import annotations

import array
import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

from moa_depth_ros.errors import ConfigError, EngineError, MoaDepthError

STAGES = ('decode', 'preprocess', 'network', 'postprocess', 'cloud', 'serialize')
BACKENDS = ('onnxruntime', 'torch', 'tensorrt')
# The suffix a backend runs (TensorRT builds its engine from the ONNX file, cached).
BACKEND_FILE = {'onnxruntime': 'onnx', 'tensorrt': 'onnx', 'torch': 'safetensors'}


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
    msg.data = array.array('B')
    msg.data.frombytes(np.ascontiguousarray(rgb).tobytes())
    return msg


def serialize_outputs(result: Any) -> int:
    """Serialize a frame's outputs as the node publishes them (default settings); bytes."""
    from moa_depth_ros.frame import cdr, outputs
    from moa_depth_ros.runtime import params

    serialized = outputs.frame_outputs(
        result, cdr.Header(0, 0, 'camera_optical_frame'), params.NodeSettings(), (0.1, 10.0)
    )
    return sum(len(output.data) for output in serialized)


def _stats_ms(values_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values_ms, dtype=np.float64)
    return {
        'median_ms': float(np.median(values)),
        'p90_ms': float(np.percentile(values, 90)),
        'mean_ms': float(np.mean(values)),
        'max_ms': float(np.max(values)),
    }


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
    'output_bytes'}; stats are median/p90/mean/max in ms. 'total' is the wall time of the
    whole frame, so it also holds what no stage timer covers.

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
        'stages': {stage: _stats_ms(values) for stage, values in per_stage.items()},
        'total': _stats_ms(totals),
        'fps': frames / loop_s,
        'output_bytes': int(nbytes),
    }


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


def load_pipeline(spec: dict[str, Any]) -> tuple[Any, Any]:
    """Load the spec's model file on its backend; return (engine, DepthPipeline)."""
    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig

    backend = spec['backend']
    engine = load_engine(
        spec['model_path'],
        backend=backend,
        device=spec.get('device', 'auto'),
        intra_op_threads=spec.get('threads') if backend == 'onnxruntime' else None,
        cache_dir=spec.get('cache_dir'),
    )
    if backend == 'torch' and spec.get('threads'):
        import torch

        torch.set_num_threads(int(spec['threads']))
    return engine, DepthPipeline(engine, PipelineConfig())


def engine_device(engine: Any) -> str:
    """'cpu' or 'cuda': where the network ran (the CPU floors apply only to 'cpu')."""
    if engine.backend == 'tensorrt':
        return 'cuda'
    if engine.backend == 'torch':
        return str(engine.device.type)
    providers = getattr(engine, 'providers', None) or ['?']
    return 'cuda' if providers[0] == 'CUDAExecutionProvider' else 'cpu'


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (run in a child process): load, warm up, time ``frames`` frames."""
    import cv2

    rss_start = current_rss_mib()
    load_start = time.perf_counter()
    engine, pipeline = load_pipeline(spec)
    load_s = time.perf_counter() - load_start
    width, height = int(spec.get('width', 640)), int(spec.get('height', 480))
    msg = rgb8_message(synthetic_rgb(width, height))
    camera = synthetic_camera(width, height)
    timing = time_frames(
        pipeline,
        msg,
        camera,
        frames=int(spec['frames']),
        warmup=int(spec['warmup']),
        max_seconds=spec.get('max_seconds'),
    )
    result = {
        **timing,
        'engine': engine.describe(),
        'device': engine_device(engine),
        'load_s': load_s,
        'rss_before_load_mib': rss_start,
        'peak_rss_mib': peak_rss_mib(),
        'opencv_threads': cv2.getNumThreads(),
    }
    engine.close()
    return result


def child_env() -> dict[str, str]:
    """Environment for a child process that can import this package from its source tree."""
    env = dict(os.environ)
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH', '')) if p)
    return env


def run_child(module: str, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m module SPEC_JSON``; return its JSON result or {'error': reason}."""
    try:
        proc = subprocess.run(
            [sys.executable, '-m', module, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=child_env(),
        )
    except subprocess.TimeoutExpired:
        return {'error': f'did not finish within {timeout_s:.0f} s'}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
        return {'error': f'exit status {proc.returncode}: {tail}'}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {'error': f'printed no JSON result: {lines[-1][:200]!r}'}


# ------------------------------------------------------------------------- parent side


def backend_unavailable(backend: str) -> str | None:
    """Return why ``backend`` cannot run on this machine, or None when it can be tried."""
    if backend not in BACKENDS:
        raise ConfigError(f'unknown backend {backend!r}; choose from {list(BACKENDS)}')
    # The backend names are their Python modules; importing them here would load them into
    # the parent, so only look them up.
    if importlib.util.find_spec(backend) is None:
        return f'{backend} is not installed on this machine'
    return None


def _code_digest() -> str:
    """Digest of the model and exporter source: a code change must not reuse a stale export."""
    import hashlib

    package = pathlib.Path(__file__).resolve().parents[1]
    files = sorted((package / 'model').glob('*.py')) + [package / 'engine' / 'onnx_export.py']
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()


def _cache_stem(name: str, digest: str) -> str:
    from moa_depth_ros import __version__

    return f'{name}-{digest[:12]}-{_code_digest()[:8]}-v{__version__}'


def prepare_model(
    entry: str, backends: Sequence[str], cache_dir: str | os.PathLike
) -> dict[str, Any]:
    """Model files and facts for one ``--models`` entry: a preset name or a model file.

    Returns {'name', 'source', 'files': {'onnx'|'safetensors': path}, 'flops', 'gflop',
    'input_hw', 'parameters', 'skipped': {backend: reason}}. FLOPs need the torch model:
    an ``.onnx`` file alone has None.
    """
    cache = pathlib.Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = {BACKEND_FILE[b] for b in backends}
    info: dict[str, Any] = {'name': entry, 'source': entry, 'files': {}, 'skipped': {}}
    suffix = pathlib.Path(entry).suffix.lower()
    if suffix == '.onnx':
        from moa_depth_ros.engine.onnx_backend import read_onnx_info

        path = pathlib.Path(entry)
        if not path.is_file():
            raise EngineError(f'model file {entry!r} does not exist')
        props = read_onnx_info(path).metadata_props
        info.update(
            name=props.get('model_name', path.stem),
            input_hw=[int(props.get('input_height', 0)), int(props.get('input_width', 0))],
            flops=None,
            parameters=None,
            files={'onnx': str(path)},
        )
        for backend in backends:
            if BACKEND_FILE[backend] == 'safetensors':
                info['skipped'][backend] = 'needs a .safetensors checkpoint; got an .onnx file'
        return info
    if not importlib.util.find_spec('torch'):
        for backend in backends:
            info['skipped'][backend] = 'building a preset or reading a checkpoint needs torch'
        return info
    from moa_depth_ros.engine.cache import file_sha256
    from moa_depth_ros.model import load_model, preset_config

    if suffix == '.safetensors':
        digest = file_sha256(entry)
        stem = _cache_stem(pathlib.Path(entry).stem, digest)
    else:
        digest = preset_config(entry).digest()
        stem = _cache_stem(entry, digest)
        # Exports of an older config or code are never read again (hundreds of MB each).
        for old in cache.glob(f'{entry}-*'):
            if not old.name.startswith(f'{stem}.'):
                old.unlink()
    facts_path = cache / f'{stem}.json'
    onnx_path = cache / f'{stem}.onnx'
    ckpt_path = pathlib.Path(entry) if suffix == '.safetensors' else cache / f'{stem}.safetensors'
    need_onnx = 'onnx' in wanted and not onnx_path.is_file()
    need_ckpt = 'safetensors' in wanted and not ckpt_path.is_file()
    if need_onnx or need_ckpt or not facts_path.is_file():
        model = _build(entry, suffix, load_model)
        if need_ckpt:
            from moa_depth_ros.model import save_checkpoint

            save_checkpoint(model, ckpt_path)
        if need_onnx:
            from moa_depth_ros.engine.onnx_export import export_onnx

            export_onnx(model, onnx_path)
        facts = {
            'name': model.model_name if suffix == '.safetensors' else entry,
            'input_hw': list(model.input_hw),
            'flops': int(_count_flops(model)),
            'parameters': int(sum(p.numel() for p in model.parameters())),
        }
        from moa_depth_ros.fileio import atomic_write_text

        atomic_write_text(facts_path, json.dumps(facts, indent=2) + '\n')
        del model
    facts = json.loads(facts_path.read_text(encoding='utf-8'))
    info.update(facts)
    info['gflop'] = facts['flops'] / 1e9
    if 'onnx' in wanted:
        info['files']['onnx'] = str(onnx_path)
    if 'safetensors' in wanted:
        info['files']['safetensors'] = str(ckpt_path)
    return info


def _build(entry: str, suffix: str, load_model: Any) -> Any:
    import torch

    from moa_depth_ros.model import create_model

    if suffix == '.safetensors':
        return load_model(entry).eval()
    torch.manual_seed(0)
    return create_model(entry).eval()


def _count_flops(model: Any) -> int:
    from moa_depth_ros.bench.floors import model_flops

    return model_flops(model)


def bench_end_to_end(
    models: Sequence[str],
    backends: Sequence[str],
    *,
    frames: int = 200,
    warmup: int = 5,
    width: int = 640,
    height: int = 480,
    threads: int | None = None,
    cache_dir: str | os.PathLike = 'runs/bench/models',
    timeout_s: float = 1800.0,
    max_run_s: float | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every (model, backend) pair, each in its own process.

    ``max_run_s``: a pair whose warm-up shows that ``frames`` frames would take longer is
    not timed; it is listed in 'skipped' with its warm-up frame time (None: no limit).

    Returns {'models': {name: facts}, 'rows': [...], 'skipped': [{'model', 'backend',
    'reason'}], 'rss_method': ...}. A pair that cannot run (backend not installed, wrong
    file type, failure in the child) is listed in 'skipped' with its reason, never dropped.
    """
    if frames < 1 or warmup < 0 or width <= 0 or height <= 0:
        raise ConfigError(
            f'need frames >= 1, warmup >= 0 and a positive size, got frames={frames}, '
            f'warmup={warmup}, {width}x{height}'
        )
    log = log or (lambda message: None)
    unavailable = {b: backend_unavailable(b) for b in backends}
    usable = [b for b in backends if unavailable[b] is None]
    out: dict[str, Any] = {
        'camera': {'width': width, 'height': height, 'encoding': 'rgb8'},
        'frames': frames,
        'warmup': warmup,
        'models': {},
        'rows': [],
        'skipped': [],
        'rss_method': 'peak RSS (VmHWM) of a fresh child process per (model, backend): '
        'interpreter, libraries, model and frame buffers, nothing carried over',
    }
    for backend, reason in unavailable.items():
        if reason:
            out['skipped'].append({'model': '*', 'backend': backend, 'reason': reason})
    for entry in models:
        start = time.perf_counter()
        log(f'preparing {entry} ...')
        try:
            info = prepare_model(entry, usable, cache_dir)
        except MoaDepthError as e:
            out['skipped'].append({'model': entry, 'backend': '*', 'reason': str(e)})
            continue
        info['prepare_s'] = time.perf_counter() - start
        out['models'][info['name']] = info
        for backend in usable:
            if backend in info['skipped']:
                out['skipped'].append(
                    {'model': info['name'], 'backend': backend, 'reason': info['skipped'][backend]}
                )
                continue
            spec = {
                'model_path': info['files'][BACKEND_FILE[backend]],
                'backend': backend,
                'frames': frames,
                'warmup': warmup,
                'width': width,
                'height': height,
                'threads': threads,
                'cache_dir': str(pathlib.Path(cache_dir) / 'engines'),
                'max_seconds': max_run_s,
            }
            log(f'{info["name"]} on {backend}: {warmup} + {frames} frames ...')
            start = time.perf_counter()
            result = run_child('moa_depth_ros.bench.e2e', spec, timeout_s)
            if 'error' in result:
                out['skipped'].append(
                    {'model': info['name'], 'backend': backend, 'reason': result['error']}
                )
                continue
            if result.get('over_budget'):
                estimate_ms = result['warmup_frame_ms']
                out['skipped'].append(
                    {
                        'model': info['name'],
                        'backend': backend,
                        'reason': f'{estimate_ms / 1e3:.2f} s per frame in warm-up here, so '
                        f'{frames} frames would take ~{estimate_ms * frames / 6e4:.0f} min, '
                        f'over the {max_run_s / 60:g} min limit per run (--max-run-minutes; '
                        f'0 measures it anyway)',
                        'warmup_frame_ms': estimate_ms,
                    }
                )
                continue
            result.update(model=info['name'], backend=backend, wall_s=time.perf_counter() - start)
            out['rows'].append(result)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: measure the JSON spec in argv[0] and print the result as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print('usage: python -m moa_depth_ros.bench.e2e SPEC_JSON', file=sys.stderr)
        return 2
    try:
        result = measure(json.loads(argv[0]))
    except MoaDepthError as e:
        print(f'{type(e).__name__}: {e}', file=sys.stderr)
        return 3
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
