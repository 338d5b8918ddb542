"""``python -m tools.bench all`` (``make bench``): the whole benchmark and its report.

One run measures, in order: the floors (memory copy bandwidth, matmul FP32/BF16), the
per-frame stages without the network against the memory floor (``frame_stages``), every
(model, backend) end to end on a 640x480 frame (each in its own process), the latest-frame
worker under a 60 Hz producer, depth_node live on ROS 2 (``moa_depth_ros.bench.live``) and
training throughput per recipe (``training``). It writes ``results.json`` and ``results.md``
to ``--out`` and, with ``--readme``, the README's performance section. Whatever it could
not measure is listed with the reason.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Callable

from moa_depth_ros.engine.loader import BACKENDS
from tools.bench.peers import PEERS

DEFAULT_MODELS = ('moa_depthclip', 'space_clip', 'moa_depthclip_tiny', *PEERS)
# Left out of the default run, with the reason the report gives.
NOT_BY_DEFAULT = {
    'depthclip': 'the zero-shot baseline (CLIP RN50 at 416x544, about 8x the FLOPs of '
    'MoA-DepthCLIP) is left out of the default run to keep it near 15 minutes on a small '
    'CPU; `--models depthclip` measures it',
}
# Full run and --quick (a smoke run: small counts, the numbers are not meant to be used).
FULL = {
    'frames': 200,
    'warmup': 5,
    'stage_repeats': 200,
    'load_frames': 10_000,
    'live_frames': 300,
    'train_warmup': 1,
    'train_steps': 3,
}
QUICK = {
    'frames': 20,
    'warmup': 2,
    'stage_repeats': 20,
    'load_frames': 300,
    'live_frames': 45,
    'train_warmup': 1,
    'train_steps': 2,
}
# The live section's model: faster than a 15 Hz camera on a small CPU, so what is measured is
# what ROS costs and delivers, not a network that cannot keep up.
DEFAULT_LIVE_MODEL = 'moa_depthclip_tiny'


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        help='model presets (random weights), peers (tools.bench.peers) or model files '
        '(.onnx, .safetensors)',
    )
    parser.add_argument(
        '--backends',
        nargs='+',
        default=list(BACKENDS),
        choices=BACKENDS,
        help='backends to try; those not installed are reported as skipped',
    )
    parser.add_argument('--frames', type=int, help='timed frames per model and backend (200)')
    parser.add_argument('--warmup', type=int, help='untimed frames first (5)')
    parser.add_argument('--width', type=int, default=640, help='camera width in pixels')
    parser.add_argument('--height', type=int, default=480, help='camera height in pixels')
    parser.add_argument('--threads', type=int, help='network CPU threads (default: backend)')
    parser.add_argument(
        '--quick', action='store_true', help='small counts for a smoke run (numbers not usable)'
    )
    parser.add_argument('--load-frames', type=int, help='frames of the load test (10000)')
    parser.add_argument('--load-rate-hz', type=float, default=60.0, help='producer rate')
    parser.add_argument(
        '--load-network',
        choices=('model', 'sleep'),
        default='model',
        help='load-test network: the first model on --load-backend, or a calibrated sleep',
    )
    parser.add_argument(
        '--load-network-ms', type=float, default=100.0, help='network time of --load-network sleep'
    )
    parser.add_argument('--load-backend', default='onnxruntime', choices=BACKENDS)
    parser.add_argument(
        '--load-frames-in-flight',
        type=int,
        default=2,
        choices=(1, 2),
        help="the node's frames_in_flight for the load test (2, its default)",
    )
    parser.add_argument(
        '--live-model',
        default=DEFAULT_LIVE_MODEL,
        help='model of the live ROS 2 section: a preset (random weights) or an .onnx file',
    )
    parser.add_argument('--live-frames', type=int, help='camera frames of the live section (300)')
    parser.add_argument('--live-rate-hz', type=float, default=15.0, help='live camera rate')
    parser.add_argument('--no-live', action='store_true', help='skip the live ROS 2 section')
    parser.add_argument(
        '--no-cpu',
        action='store_true',
        help='skip the CPU section (OpenVINO FP32/BF16/INT8, live at 30 Hz: tools.bench.cpu)',
    )
    parser.add_argument(
        '--train-recipes',
        nargs='+',
        help='recipe names (moa_depthclip, space_clip, quickstart: the default), model presets '
        'or recipe .yaml files',
    )
    parser.add_argument('--train-batch', type=int, default=8, help='images per step')
    parser.add_argument('--train-warmup', type=int, help='untimed steps first (1)')
    parser.add_argument('--train-steps', type=int, help='timed steps (3)')
    parser.add_argument('--train-amp', choices=('off', 'bf16'), default='off')
    parser.add_argument('--no-train', action='store_true', help='skip training throughput')
    parser.add_argument('--no-e2e', action='store_true', help='skip the end-to-end runs')
    parser.add_argument('--no-load', action='store_true', help='skip the load test')
    parser.add_argument('--out', default='runs/bench', help='where results.json/.md go')
    parser.add_argument(
        '--cache-dir', help='exported model files are cached here (default OUT/models)'
    )
    parser.add_argument('--readme', help='README to update between the BENCH markers')
    parser.add_argument(
        '--from-results',
        metavar='JSON',
        help='measure nothing: re-render results.md and the README section from this file',
    )
    parser.add_argument(
        '--max-run-minutes',
        type=float,
        default=5.0,
        help='skip (and report) a model/backend whose warm-up says --frames frames would '
        'take longer; 0 = no limit',
    )
    parser.add_argument(
        '--timeout-s', type=float, default=3600.0, help='limit per child measurement'
    )


def log_progress(message: str) -> None:
    print(f'[bench] {message}', file=sys.stderr, flush=True)


def counts(args: argparse.Namespace) -> dict[str, int]:
    """Frame counts: explicit options win, else --quick's or the full defaults."""
    base = QUICK if args.quick else FULL
    return {
        'frames': args.frames if args.frames is not None else base['frames'],
        'warmup': args.warmup if args.warmup is not None else base['warmup'],
        'stage_repeats': base['stage_repeats'],
        'load_frames': args.load_frames if args.load_frames is not None else base['load_frames'],
        'live_frames': args.live_frames if args.live_frames is not None else base['live_frames'],
        'train_warmup': base['train_warmup'] if args.train_warmup is None else args.train_warmup,
        'train_steps': base['train_steps'] if args.train_steps is None else args.train_steps,
    }


def _check(args: argparse.Namespace, n: dict[str, int]) -> None:
    from moa_depth_ros.errors import ConfigError

    if n['frames'] < 1 or n['warmup'] < 0 or n['load_frames'] < 1:
        raise ConfigError(
            f'need --frames >= 1, --warmup >= 0, --load-frames >= 1; got {n["frames"]}, '
            f'{n["warmup"]}, {n["load_frames"]}'
        )
    if args.width <= 0 or args.height <= 0 or not args.load_rate_hz > 0:
        raise ConfigError(
            f'need a positive --width, --height and --load-rate-hz; got {args.width}, '
            f'{args.height}, {args.load_rate_hz}'
        )


def collect(
    args: argparse.Namespace,
    log: Callable[[str], None] = log_progress,
    command: str = 'python -m tools.bench all',
) -> dict[str, Any]:
    """Run every runtime benchmark the arguments ask for; return the results dict."""
    from moa_depth_ros.bench.measure import machine_description
    from tools.bench import e2e, floors, report
    from tools.bench.frame_stages import bench_frame_stages

    n = counts(args)
    _check(args, n)
    started = time.perf_counter()
    cpu_start = report.cpu_snapshot()
    wall: dict[str, float] = {}
    cache_dir = args.cache_dir or str(pathlib.Path(args.out) / 'models')
    results: dict[str, Any] = {
        'schema': report.SCHEMA,
        'command': command + (' --quick' if args.quick else ''),
        'machine': machine_description(),
        'settings': {
            'models': list(args.models),
            'backends': list(args.backends),
            'width': args.width,
            'height': args.height,
            'threads': args.threads,
            'quick': bool(args.quick),
            **n,
            'load_rate_hz': args.load_rate_hz,
            'load_network': args.load_network,
            'max_run_minutes': args.max_run_minutes,
        },
        'skipped': [],
        'cpu_start': cpu_start,
        'results_path': str(pathlib.Path(args.out) / 'results.json'),
    }
    skipped = results['skipped']
    if list(args.models) == list(DEFAULT_MODELS):
        skipped += [{'what': name, 'reason': why} for name, why in NOT_BY_DEFAULT.items()]

    log('floors: memory copy bandwidth, matmul FP32/BF16 ...')
    results['floors'] = floors.measure_floors(quick=args.quick)
    for dtype, reason in results['floors']['matmul']['skipped'].items():
        skipped.append({'what': f'matmul {dtype} floor', 'reason': reason})
    wall['floors'] = results['floors']['wall_s']

    log('per-frame stages without the network (frame-stages) ...')
    start = time.perf_counter()
    results['frame_stages'] = bench_frame_stages(
        width=args.width, height=args.height, repeats=n['stage_repeats']
    )
    wall['frame stages'] = time.perf_counter() - start

    if args.no_e2e:
        skipped.append({'what': 'end to end', 'reason': 'not requested (--no-e2e)'})
    else:
        start = time.perf_counter()
        results['end_to_end'] = e2e.bench_end_to_end(
            args.models,
            args.backends,
            frames=n['frames'],
            warmup=n['warmup'],
            width=args.width,
            height=args.height,
            threads=args.threads,
            cache_dir=cache_dir,
            timeout_s=args.timeout_s,
            max_run_s=args.max_run_minutes * 60 if args.max_run_minutes > 0 else None,
            log=log,
        )
        for item in results['end_to_end']['skipped']:
            what = (
                item['backend']
                if item['model'] == '*'
                else f'{item["model"]} on {item["backend"]}'
            )
            skipped.append({'what': what, 'reason': item['reason']})
        wall['end to end'] = time.perf_counter() - start

    if args.no_load:
        skipped.append({'what': 'load test', 'reason': 'not requested (--no-load)'})
    else:
        start = time.perf_counter()
        results['load'] = _load_test(args, n, results.get('end_to_end'), cache_dir, log)
        if 'error' in results['load']:
            skipped.append({'what': 'load test', 'reason': results['load']['error']})
        wall['load test'] = time.perf_counter() - start

    if args.no_live:
        skipped.append({'what': 'live ROS 2', 'reason': 'not requested (--no-live)'})
    else:
        start = time.perf_counter()
        results['live'] = _live(args, n, cache_dir, log)
        if 'error' in results['live']:
            skipped.append({'what': 'live ROS 2', 'reason': results['live']['error']})
        wall['live ROS 2'] = time.perf_counter() - start

    if args.no_cpu:
        skipped.append({'what': 'CPU precisions', 'reason': 'not requested (--no-cpu)'})
    else:
        start = time.perf_counter()
        results['cpu'] = _cpu(args, n, cache_dir, log)
        wall['CPU precisions'] = time.perf_counter() - start

    if args.no_train:
        skipped.append({'what': 'training throughput', 'reason': 'not requested (--no-train)'})
    else:
        start = time.perf_counter()
        results['training'] = _training(args, n, log)
        skipped.extend(results['training']['skipped'])
        wall['training'] = time.perf_counter() - start

    wall['total'] = time.perf_counter() - started
    results['wall_s'] = wall
    close_run(results)
    return results


def close_run(results: dict[str, Any]) -> None:
    """Record the end of the run: load average, and how busy other processes kept the CPU."""
    from tools.bench import report

    machine = results['machine']
    machine['load_average_end'] = load_average()
    machine['other_processes_cores'] = report.other_cores(
        results.get('cpu_start'), report.cpu_snapshot()
    )


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (None where the OS has none)."""
    import os

    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _load_test(
    args: argparse.Namespace,
    n: dict[str, int],
    e2e_results: dict[str, Any] | None,
    cache_dir: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from moa_depth_ros.errors import MoaDepthError
    from tools.bench import e2e

    spec: dict[str, Any] = {
        'network': args.load_network,
        'frames': n['load_frames'],
        'rate_hz': args.load_rate_hz,
        'width': args.width,
        'height': args.height,
        'network_ms': args.load_network_ms,
        'frames_in_flight': args.load_frames_in_flight,
    }
    if args.load_network == 'model':
        reason = e2e.backend_unavailable(args.load_backend)
        if reason:
            return {'error': f'--load-backend {args.load_backend}: {reason}'}
        entry = args.models[0]
        try:
            info = e2e.prepare_model(entry, [args.load_backend], cache_dir)
        except MoaDepthError as e:
            return {'error': f'{entry}: {e}'}
        if args.load_backend in info['skipped']:
            return {
                'error': f'{entry} on {args.load_backend}: {info["skipped"][args.load_backend]}'
            }
        spec.update(
            model_path=info['files'][e2e.BACKEND_FILE[args.load_backend]],
            backend=args.load_backend,
            threads=args.threads,
            cache_dir=str(pathlib.Path(cache_dir) / 'engines'),
        )
        what = f'{info["name"]} on {args.load_backend}'
    else:
        what = f'a {args.load_network_ms:g} ms sleep'
    log(
        f'load test: {n["load_frames"]} frames at {args.load_rate_hz:g} Hz into the latest-frame '
        f'worker, network = {what} (~{n["load_frames"] / args.load_rate_hz:.0f} s) ...'
    )
    timeout_s = n['load_frames'] / args.load_rate_hz + args.timeout_s
    return e2e.run_child('tools.bench.load', spec, timeout_s)


def _live(
    args: argparse.Namespace, n: dict[str, int], cache_dir: str, log: Callable[[str], None]
) -> dict[str, Any]:
    import importlib.util

    from moa_depth_ros.bench import live
    from moa_depth_ros.errors import MoaDepthError
    from tools.bench import e2e

    if importlib.util.find_spec('rclpy') is None:
        return {
            'error': 'rclpy is not importable (source ROS 2, or install the ros-jazzy-* wheels)'
        }
    reason = e2e.backend_unavailable('onnxruntime')
    if reason:
        return {'error': f'onnxruntime: {reason}'}
    try:
        info = e2e.prepare_model(args.live_model, ['onnxruntime'], cache_dir)
        if 'onnxruntime' in info['skipped']:
            return {'error': f'{args.live_model}: {info["skipped"]["onnxruntime"]}'}
        result = live.measure_live(
            info['files']['onnx'],
            threads=args.threads,
            frames=n['live_frames'],
            warmup_frames=max(15, int(args.live_rate_hz)),
            rate_hz=args.live_rate_hz,
            width=args.width,
            height=args.height,
            idle_s=3.0 if args.quick else 10.0,
            log=log,
        )
    except (MoaDepthError, RuntimeError, TimeoutError, OSError) as e:
        return {'error': f'{type(e).__name__}: {e}'}
    from moa_depth_ros.bench.measure import package_version

    result.update(model_name=info['name'], rclpy=package_version('ros-rclpy', 'rclpy'))
    return result


def _cpu(
    args: argparse.Namespace, n: dict[str, int], cache_dir: str, log: Callable[[str], None]
) -> dict[str, Any]:
    import importlib.util

    from tools.bench import cpu

    missing = [m for m in ('openvino', 'nncf', 'rclpy') if importlib.util.find_spec(m) is None]
    if missing:
        why = f'needs {", ".join(missing)}'
        return {'network': {'rows': [], 'skipped': [{'what': 'CPU precisions', 'reason': why}]}}
    # The models of this run that the CPU section covers (the full-size one and the peers).
    models = [m for m in args.models if m in cpu.MODELS]
    if not models and args.no_live:
        return {}
    cpu_args = argparse.Namespace(
        models=models,
        frames=min(n['frames'], 60),
        warmup=n['warmup'],
        live_frames=n['live_frames'],
        live_rate_hz=30.0,
        no_live=args.no_live,
        no_network=args.no_e2e or not models,
        out=args.out,
        cache_dir=cache_dir,
    )
    return cpu.collect(cpu_args, log)


def _training(
    args: argparse.Namespace, n: dict[str, int], log: Callable[[str], None]
) -> dict[str, Any]:
    import importlib.util

    from tools.bench import training

    if importlib.util.find_spec('torch') is None:
        return {'rows': [], 'skipped': [{'what': 'training throughput', 'reason': 'needs torch'}]}
    return training.bench_training(
        args.train_recipes or training.DEFAULT_RECIPES,
        batch=args.train_batch,
        warmup=n['train_warmup'],
        steps=n['train_steps'],
        amp=args.train_amp,
        log=log,
    )


def finish(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Write results.json/.md, update the README if asked, print the Markdown."""
    from tools.bench import report

    json_path, md_path = report.write_results(results, args.out)
    if args.readme:
        report.splice_readme(args.readme, report.render_markdown(results, level=3))
    if results.get('cpu'):
        from tools.bench import cpu

        block = cpu.render(results['cpu'])
        if args.readme and cpu.MARKER_START in pathlib.Path(args.readme).read_text('utf-8'):
            cpu.splice(args.readme, block)
        elif args.readme:
            print(f'({args.readme} has no {cpu.MARKER_START}: the CPU section is not in it)')
        print(block)
    print(report.render_markdown(results, level=1))
    print(f'wrote {json_path} and {md_path}' + (f'; updated {args.readme}' if args.readme else ''))


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before measuring anything if the README cannot be updated at the end."""
    from tools.bench import report

    if args.readme:
        report.check_readme(args.readme)


def read_results(path: str) -> dict[str, Any]:
    """Load a results.json written earlier (for --from-results)."""
    import json

    from moa_depth_ros.errors import ConfigError
    from tools.bench import report

    try:
        results = json.loads(pathlib.Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise ConfigError(f'--from-results {path!r}: cannot read benchmark results: {e}') from e
    if not isinstance(results, dict) or results.get('schema') != report.SCHEMA:
        raise ConfigError(
            f'--from-results {path!r}: not a benchmark results file (schema '
            f'{report.SCHEMA!r} expected)'
        )
    return results


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks, write the results, print the tables."""
    check_outputs(args)
    if args.from_results:
        finish(read_results(args.from_results), args)
        return 0
    finish(collect(args), args)
    return 0
