"""End to end per frame: a 640x480 rgb8 camera frame through the pipeline, per model/backend.

One frame is what the node does for it: decode the message, preprocess, run the network,
postprocess (upsample, depth range), back-project the cloud, then encode depth, confidence
and the cloud and serialize the outgoing messages (the CDR bytes the node publishes). Each
stage is timed, and the whole frame is timed around all of them; median and p90 over
``frames`` frames after ``warmup`` untimed ones, frames per second = timed frames / their
wall time.

Every (model, backend) measurement runs in its own process (``python -m tools.bench.e2e
SPEC_JSON``, timed by ``moa_depth_ros.bench.measure.measure_model``), so its peak RSS
(VmHWM) is its own and not a leftover of an earlier, bigger model, and an onnxruntime
measurement never has torch loaded, as on a robot. The parent prepares the model files
once: preset models are built with random weights (the time does not depend on the
weights), saved as a checkpoint for the torch backend and exported to verified ONNX for
onnxruntime and TensorRT, cached under ``cache_dir`` by config digest and package version.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from moa_depth_ros.bench.measure import measure_model
from moa_depth_ros.engine.loader import BACKENDS
from moa_depth_ros.errors import ConfigError, EngineError, MoaDepthError
from tools.bench import peers
from tools.bench.floors import count_flops

# The suffix a backend runs (TensorRT builds its engine from the ONNX file, cached).
BACKEND_FILE = {
    'onnxruntime': 'onnx',
    'openvino': 'onnx',
    'tensorrt': 'onnx',
    'torch': 'safetensors',
}


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

    root = pathlib.Path(__file__).resolve().parents[2]
    files = sorted((root / 'moa_depth_ros' / 'model').glob('*.py'))
    files.append(root / 'training' / 'onnx_export.py')
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
    """Model files and facts for one ``--models`` entry: a preset, a peer or a model file.

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
    if peers.is_peer(entry):
        # A peer is compared on the runtimes a robot runs; it is not a DepthModel checkpoint.
        for backend in backends:
            if BACKEND_FILE[backend] == 'safetensors':
                info['skipped'][backend] = 'peers run from their ONNX export only'
        wanted.discard('safetensors')
        if importlib.util.find_spec('transformers') is None:
            for backend in backends:
                info['skipped'][backend] = 'the peer is defined by transformers: not installed'
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
        digest = (
            peers.peer_digest(entry) if peers.is_peer(entry) else preset_config(entry).digest()
        )
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
            import warnings

            from training.onnx_export import export_onnx

            with warnings.catch_warnings():
                if peers.is_peer(entry):  # the tracer's notes on transformers' shape checks
                    warnings.simplefilter('ignore')
                export_onnx(model, onnx_path)
        facts = {
            'name': model.model_name if suffix == '.safetensors' else entry,
            'input_hw': list(model.input_hw),
            'flops': int(count_flops(model)),
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
    if peers.is_peer(entry):
        return peers.build_peer(entry, seed=0)
    torch.manual_seed(0)
    return create_model(entry).eval()


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
            result = run_child('tools.bench.e2e', spec, timeout_s)
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


def child_main(
    measure: Callable[[dict[str, Any]], dict[str, Any]], module: str, argv: Sequence[str] | None
) -> int:
    """Entry point of a child measurement (``run_child``): the JSON spec in, JSON result out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print(f'usage: python -m {module} SPEC_JSON', file=sys.stderr)
        return 2
    try:
        result = measure(json.loads(argv[0]))
    except MoaDepthError as e:
        print(f'{type(e).__name__}: {e}', file=sys.stderr)
        return 3
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: measure the JSON spec in argv[0] and print the result as JSON."""
    return child_main(measure_model, 'tools.bench.e2e', argv)


if __name__ == '__main__':
    sys.exit(main())
