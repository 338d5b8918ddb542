"""``moa-depth bench MODEL``: how fast a model file runs here, as the node runs it.

Times ``--frames`` synthetic 640x480 rgb8 camera frames (after ``--warmup``) through what
the node does per frame: decode, resize to the network input, the network on the chosen
backend, upsampling and the depth range, the point cloud, and serializing the outputs the
node publishes. Prints the median and p90 of each stage and of the whole frame, the frame
rate, the output bytes and the process's peak memory, with the machine it ran on.

``--live`` then runs depth_node itself on ROS 2 with a camera and a viewer process
(``moa_depth_ros.bench.live``): frames delivered, camera-to-depth latency, the node's CPU per
frame beside the pipeline's, and its idle CPU. It needs rclpy and creates DDS participants:
run it where the robot's ROS 2 network may carry them.

``--compare BACKEND`` (repeatable) times the same model file on another backend too, and
``--peer FILE`` (repeatable) another network's exported ``.onnx`` (e.g. Depth-Anything-V2-Small:
``python -m tools.bench export-peer`` in the repository), each through the same pipeline and
frame; a last table prints every run beside the first with the ratio of their times.

``--json`` also writes every number to a file. The development suite (``make bench`` in the
repository) measures the same way across model presets and backends.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from typing import Any, Callable

from moa_depth_ros.bench import measure
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.runtime.params import BACKENDS, PRECISIONS

# What the live section is held to (the README's performance targets for a VGA camera).
LIVE_TARGETS = {
    'delivered_ratio': 0.99,
    'complete_ratio': 0.99,
    'beyond_ms': 12.0,
    'idle': 2.0,
    # Clouds a Nav2-style (SensorDataQoS) subscriber gets over those a reliable one gets.
    'navigation_ratio': 0.95,
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument('model', help='model file: .onnx, .engine/.plan or .safetensors')
    parser.add_argument('--backend', default='auto', choices=BACKENDS)
    parser.add_argument(
        '--device',
        default='auto',
        help="'auto', 'cpu', 'cuda' or 'cuda:N'; OpenVINO also 'gpu', 'gpu:N' or 'npu'",
    )
    parser.add_argument(
        '--precision', default='auto', choices=PRECISIONS, help='as the precision parameter'
    )
    parser.add_argument(
        '--compare',
        action='append',
        default=[],
        choices=[b for b in BACKENDS if b != 'auto'],
        metavar='BACKEND',
        help='also time the model on this backend (repeatable)',
    )
    parser.add_argument(
        '--peer',
        action='append',
        default=[],
        metavar='FILE',
        help='also time this exported .onnx network on the same backend(s) (repeatable)',
    )
    parser.add_argument('--threads', type=int, default=0, help='network CPU threads (0: default)')
    parser.add_argument(
        '--spin-wait', action='store_true', help="ONNX Runtime's threads busy-wait (node: off)"
    )
    parser.add_argument('--frames', type=int, default=200, help='timed frames')
    parser.add_argument('--warmup', type=int, default=5, help='untimed frames first')
    parser.add_argument('--width', type=int, default=640, help='camera width in pixels')
    parser.add_argument('--height', type=int, default=480, help='camera height in pixels')
    parser.add_argument(
        '--live', action='store_true', help='also run depth_node live on ROS 2 (needs rclpy)'
    )
    parser.add_argument('--live-frames', type=int, default=300, help='camera frames (live)')
    parser.add_argument('--live-rate-hz', type=float, default=15.0, help='camera rate (live)')
    parser.add_argument('--json', metavar='PATH', help='also write the results to this file')


def _check(args: argparse.Namespace) -> None:
    if args.frames < 1 or args.warmup < 0 or args.live_frames < 1 or args.threads < 0:
        raise ConfigError(
            f'need --frames >= 1, --warmup >= 0, --live-frames >= 1, --threads >= 0; got '
            f'{args.frames}, {args.warmup}, {args.live_frames}, {args.threads}'
        )
    if args.width <= 0 or args.height <= 0 or not args.live_rate_hz > 0:
        raise ConfigError(
            f'need a positive --width, --height and --live-rate-hz; got {args.width}, '
            f'{args.height}, {args.live_rate_hz}'
        )
    if args.live and importlib.util.find_spec('rclpy') is None:
        raise ConfigError('--live needs rclpy: source ROS 2 (or install the ros-jazzy-* wheels)')


def format_frames(result: dict[str, Any]) -> list[str]:
    """Format the end-to-end timing of ``measure.measure_model`` as text lines."""
    lines = [
        f'{result["engine"]} on {result["device"]}, loaded in {result["load_s"]:.1f} s',
        f'{result["frames"]} frames after {result["warmup"]} warm-up frames:',
        f'  {"stage":<13}{"median ms":>10}{"p90 ms":>9}',
    ]
    for stage, stats in result['stages'].items():
        lines.append(f'  {stage:<13}{stats["median_ms"]:>10.2f}{stats["p90_ms"]:>9.2f}')
    total = result['total']
    lines += [
        f'  {"frame":<13}{total["median_ms"]:>10.2f}{total["p90_ms"]:>9.2f}',
        f'{result["fps"]:.1f} frames/s on one frame at a time; outputs '
        f'{result["output_bytes"] / 1e6:.1f} MB per frame; peak RSS '
        f'{result["peak_rss_mib"]:.0f} MiB',
    ]
    return lines


def format_comparison(runs: list[dict[str, Any]]) -> list[str]:
    """Format every run beside the first: network and frame medians and their ratios."""
    first = runs[0]
    base_net = first['stages']['network']['median_ms']
    base_frame = first['total']['median_ms']
    lines = [
        "side by side (ratio = time / the first row's time; below 1 is faster):",
        f'  {"model":<34}{"backend":<13}{"precision":<10}{"network ms":>11}{"x":>7}'
        f'{"frame ms":>10}{"x":>7}',
    ]
    for run in runs:
        net = run['stages']['network']['median_ms']
        frame = run['total']['median_ms']
        lines.append(
            f'  {run["model_name"][:33]:<34}{run["backend"]:<13}{run["precision"]:<10}'
            f'{net:>11.1f}{net / base_net:>7.2f}{frame:>10.1f}{frame / base_frame:>7.2f}'
        )
    return lines


def format_live(live: dict[str, Any]) -> list[str]:
    """Format the live ROS 2 section of ``live.measure_live`` against its targets."""

    def verdict(ok: bool) -> str:
        return 'met' if ok else 'NOT met'

    lat = live['latency_ms']
    beyond = live['cpu_beyond_pipeline_ms']
    return [
        f'live on ROS 2: {live["frames_sent"]} frames of {live["width"]}x{live["height"]} at '
        f'{live["rate_hz"]:g} Hz, reliable camera and viewer',
        f'  depth delivered {live["frames_with_depth"]}/{live["frames_sent"]} '
        f'({100 * live["delivered_ratio"]:.1f} %, target >= 99 %: '
        f'{verdict(live["delivered_ratio"] >= LIVE_TARGETS["delivered_ratio"])})',
        f'  depth + depth/camera_info {live["frames_with_depth_and_info"]} '
        f'({100 * live["complete_ratio"]:.1f} %: '
        f'{verdict(live["complete_ratio"] >= LIVE_TARGETS["complete_ratio"])})',
        f'  latency camera stamp -> depth received: median {_ms(lat["median"])}, '
        f'p90 {_ms(lat["p90"])}',
        f'  node CPU {live["node_cpu_ms_per_frame"]:.1f} ms per frame; the pipeline alone '
        f'{live["pipeline_cpu_ms"]:.1f} ms CPU ({live["pipeline_wall_ms"]:.1f} ms wall); '
        f'beyond {beyond:.1f} ms (target <= 12 ms: {verdict(beyond <= LIVE_TARGETS["beyond_ms"])})'
        f'; publish {_ms(live.get("node_publish_ms"))}, one copy of the '
        f'{live["output_mb_per_frame"]:.1f} MB of outputs {live["copy_floor_ms"]:.2f} ms',
        f'  idle node {live["idle_core_percent"]:.1f} % of a core (target < 2 %: '
        f'{verdict(live["idle_core_percent"] < LIVE_TARGETS["idle"])})',
        *_cpu_share_line(live),
        *_navigation_line(live, verdict),
    ]


def _cpu_share_line(live: dict[str, Any]) -> list[str]:
    shares = live.get('cpu_ms_per_frame_sent')
    if not shares:
        return []
    used = ', '.join(f'{role} {ms:.1f}' for role, ms in shares.items())
    return [
        f'  CPU ms per camera frame: {used}; together {sum(shares.values()):.1f} of the '
        f'{live["cores_ms_per_frame_sent"]:.1f} the cores give'
    ]


def _navigation_line(live: dict[str, Any], verdict: Callable[[bool], str]) -> list[str]:
    nav = live.get('navigation')
    if not nav:
        return []
    return [
        f'  points to a SensorDataQoS (Nav2) subscriber {nav["clouds_sensor_data_qos"]}/'
        f"{nav['clouds_reliable']} of the reliable viewer's ({100 * nav['ratio']:.1f} %, "
        f'target >= 95 %: {verdict(nav["ratio"] >= LIVE_TARGETS["navigation_ratio"])}); '
        f'cloud {nav["cloud_points"]} points, {nav["cloud_kib"]:.0f} KiB'
    ]


def _ms(value: float | None) -> str:
    return '-' if value is None else f'{value:.1f} ms'


def _comparisons(args: argparse.Namespace, backend: str) -> list[tuple[str, str]]:
    """(model file, backend) runs after the first: other backends, then each peer on all."""
    backends = [backend, *(b for b in dict.fromkeys(args.compare) if b != backend)]
    runs = [(args.model, b) for b in backends[1:]]
    runs += [(peer, b) for peer in args.peer for b in backends]
    return runs


def run(args: argparse.Namespace) -> int:
    """Time the model, print the results (and write them with --json)."""
    _check(args)
    machine = measure.machine_description()
    versions = machine['versions']
    print(
        f'moa_depth_ros {versions["moa_depth_ros"]} on {machine["cpu"]} '
        f'({machine["cores_available"]} cores), GPU: {machine["gpu"]}; onnxruntime '
        f'{versions["onnxruntime"] or "-"}, TensorRT {versions["tensorrt"] or "-"}',
        flush=True,
    )
    spec = {
        'model_path': args.model,
        'backend': args.backend,
        'device': args.device,
        'precision': None if args.precision == 'auto' else args.precision,
        'threads': args.threads or None,
        'spin_wait': args.spin_wait,
        'frames': args.frames,
        'warmup': args.warmup,
        'width': args.width,
        'height': args.height,
    }
    frames = measure.measure_model(spec)
    print('\n'.join(format_frames(frames)), flush=True)
    results: dict[str, Any] = {'machine': machine, 'frames': frames}
    runs = [frames]
    for model, backend in _comparisons(args, frames['backend']):
        print(f'\n{model} on {backend}:', flush=True)
        other = measure.measure_model({**spec, 'model_path': model, 'backend': backend})
        print('\n'.join(format_frames(other)), flush=True)
        runs.append(other)
    if len(runs) > 1:
        results['compared'] = runs[1:]
        print('\n' + '\n'.join(format_comparison(runs)), flush=True)
    if args.live:
        from moa_depth_ros.bench import live

        results['live'] = live.measure_live(
            args.model,
            backend=frames['backend'],
            device=args.device,
            threads=args.threads or None,
            spin_wait=args.spin_wait,
            precision=args.precision,
            frames=args.live_frames,
            warmup_frames=max(15, int(args.live_rate_hz)),
            rate_hz=args.live_rate_hz,
            width=args.width,
            height=args.height,
            log=lambda message: print(message, flush=True),
        )
        print('\n'.join(format_live(results['live'])))
    if args.json:
        from moa_depth_ros.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, sort_keys=True) + '\n')
        print(f'wrote {args.json}')
    return 0
