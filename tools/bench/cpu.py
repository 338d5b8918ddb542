"""``python -m tools.bench cpu``: what a CPU-only robot gets, FP32 against BF16 against INT8.

Two parts, each also part of ``make bench`` (``all``):

- **network and frame time per precision** (``bench_precisions``): each model (full-size
  MoA-DepthCLIP and the Depth-Anything-V2-Small peers, random weights) on OpenVINO at FP32
  (forced: what a CPU without AMX or AVX512-BF16 runs), at OpenVINO's default precision (BF16
  where the CPU has it) and as the INT8 model ``export --int8`` makes (NNCF, the same
  ``training.quantize`` code, calibrated on synthetic camera frames: with random weights only
  the speed means anything). Each (model, precision) runs in a child process
  (``tools.bench.e2e``), one after the other in one run, so they are compared side by side;
- **live at 30 Hz** (``live_rows``): depth_node on the full-size MoA-DepthCLIP, a 640x480
  camera at 30 Hz and a reliable viewer on the same cores (``moa_depth_ros.bench.live``),
  once per precision with every process on ``config/fastdds_large_frames.xml`` (camera-sized
  messages through shared memory), and INT8 once more on Fast DDS's default transports.
  Targets (issue 26, on the 2-core development VM): >= 95 % of frames delivered, median
  latency <= 50 ms, p90 <= 80 ms; INT8 >= 1.4x faster than BF16 and >= 2.2x faster than
  FP32 (network time).

Results are merged into ``OUT/cpu.json`` by (model, precision), so the two parts can run in
separate invocations (``--no-live``, ``--no-network``: each fits a short quiet window); the
README block between ``<!-- BENCH-CPU:START -->`` and ``<!-- BENCH-CPU:END -->`` is rendered
from the merged file, each row with the time it was measured.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any, Callable, Sequence

from moa_depth_ros.errors import ConfigError, MoaDepthError
from tools.bench.peers import PEERS

MODELS = ('moa_depthclip', *PEERS)
LIVE_MODEL = 'moa_depthclip'
#: (label, the precision parameter): FP32 forced, OpenVINO's default, the INT8 model.
PRECISIONS = (('fp32', 'fp32'), ('default', 'auto'), ('int8', 'int8'))
TARGETS = {
    'delivered_ratio': 0.95,
    'median_ms': 50.0,
    'p90_ms': 80.0,
    'int8_vs_default': 1.4,
    'int8_vs_fp32': 2.2,
}
CALIBRATION_FRAMES = 40
#: The Fast DDS profile of the live rows (README, Performance), and the label of the rows
#: run on Fast DDS's built-in transports instead.
FASTDDS_PROFILE = (
    pathlib.Path(__file__).resolve().parents[2] / 'config' / 'fastdds_large_frames.xml'
)
SHM_PROFILE = 'large-frames profile'
DEFAULT_TRANSPORTS = 'Fast DDS defaults'
#: (precision label, transport) of the live rows.
LIVE_ROWS = (
    *((label, SHM_PROFILE) for label, _ in PRECISIONS),
    ('int8', DEFAULT_TRANSPORTS),
)
MARKER_START = '<!-- BENCH-CPU:START -->'
MARKER_END = '<!-- BENCH-CPU:END -->'


def _now() -> str:
    return time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())


def ensure_int8(onnx_path: str | pathlib.Path, log: Callable[[str], None]) -> pathlib.Path:
    """Return the INT8 model of a benchmark export, quantizing it first if it is missing.

    Calibrated on ``CALIBRATION_FRAMES`` synthetic 640x480 frames (the benchmark's camera):
    the weights are random, so only the speed of the result is used.
    """
    from moa_depth_ros.bench.measure import synthetic_rgb
    from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
    from moa_depth_ros.engine.openvino_backend import int8_ir_path, read_ir_metadata_props
    from training.quantize import QUANTIZATION, network_input, quantize_openvino_int8, split_frames

    int8 = int8_ir_path(onnx_path)
    if int8.is_file() and read_ir_metadata_props(int8).get('quantization') == QUANTIZATION:
        return int8  # made by this recipe (an older one is made again)
    hw = read_onnx_metadata(onnx_path).input_hw
    log(f'quantizing {pathlib.Path(onnx_path).name} to INT8 (NNCF) ...')
    frames = [
        network_input(synthetic_rgb(640, 480, seed=s), hw) for s in range(CALIBRATION_FRAMES)
    ]
    report = quantize_openvino_int8(
        onnx_path, split_frames(frames, f'{len(frames)} synthetic 640x480 frames')
    )
    if report.path is None:
        raise ConfigError(f'{onnx_path}: {report.summary()}')
    return report.path


def model_files(
    entry: str, cache_dir: str, log: Callable[[str], None]
) -> tuple[dict[str, Any], str, pathlib.Path]:
    """Export ``entry`` (a preset or a peer) once: (its info, the FP32 .onnx, its INT8 IR).

    Raises ``ConfigError`` where the model cannot be exported for ONNX Runtime.
    """
    from tools.bench import e2e

    info = e2e.prepare_model(entry, ['onnxruntime'], cache_dir)
    if 'onnxruntime' in info['skipped']:
        raise ConfigError(info['skipped']['onnxruntime'])
    onnx_path = info['files']['onnx']
    return info, onnx_path, ensure_int8(onnx_path, log)


def bench_precisions(
    models: Sequence[str],
    *,
    cache_dir: str,
    frames: int,
    warmup: int,
    width: int = 640,
    height: int = 480,
    timeout_s: float = 900.0,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Time each model on OpenVINO at FP32, its default precision and INT8; rows + skipped."""
    from tools.bench import e2e

    rows, skipped = [], []
    for entry in models:
        try:
            info, onnx_path, int8_path = model_files(entry, cache_dir, log)
        except MoaDepthError as e:
            skipped.append({'what': entry, 'reason': str(e)})
            continue
        for label, precision in PRECISIONS:
            spec = {
                'model_path': str(int8_path if precision == 'int8' else onnx_path),
                'backend': 'openvino',
                'precision': None if precision == 'auto' else precision,
                'frames': frames,
                'warmup': warmup,
                'width': width,
                'height': height,
                'cache_dir': str(pathlib.Path(cache_dir) / 'engines'),
            }
            log(f'{info["name"]} on OpenVINO {label}: {warmup} + {frames} frames ...')
            result = e2e.run_child('tools.bench.e2e', spec, timeout_s)
            if 'error' in result:
                skipped.append({'what': f'{info["name"]} {label}', 'reason': result['error']})
                continue
            rows.append(
                {
                    'model': info['name'],
                    'label': label,
                    'precision': result['precision'],
                    'engine': result['engine'],
                    'network_ms': result['stages']['network']['median_ms'],
                    'frame_ms': result['total']['median_ms'],
                    'frame_p90_ms': result['total']['p90_ms'],
                    'measured_at': _now(),
                }
            )
    return {'rows': rows, 'skipped': skipped, 'frames': frames}


def live_rows(
    *,
    cache_dir: str,
    frames: int,
    rate_hz: float = 30.0,
    width: int = 640,
    height: int = 480,
    log: Callable[[str], None] = lambda message: None,
    labels: Sequence[str] = tuple(label for label, _ in PRECISIONS),
) -> dict[str, Any]:
    """Run the live node on the full-size model once per precision; rows + skipped."""
    from moa_depth_ros.bench import live

    _, onnx_path, int8_path = model_files(LIVE_MODEL, cache_dir, log)
    rows, skipped = [], []
    for label, transport in LIVE_ROWS:
        if label not in labels:
            continue
        precision = dict(PRECISIONS)[label]
        log(f'live {LIVE_MODEL} OpenVINO {label} at {rate_hz:g} Hz, {transport} ...')
        try:
            result = live.measure_live(
                str(int8_path if precision == 'int8' else onnx_path),
                backend='openvino',
                precision=precision,
                frames=frames,
                warmup_frames=max(15, int(rate_hz)),
                rate_hz=rate_hz,
                width=width,
                height=height,
                idle_s=3.0,
                fastdds_profile=str(FASTDDS_PROFILE) if transport == SHM_PROFILE else None,
                log=log,
            )
        except (MoaDepthError, RuntimeError, TimeoutError, OSError) as e:
            skipped.append(
                {'what': f'live {label}, {transport}', 'reason': f'{type(e).__name__}: {e}'}
            )
            continue
        model = result['node_diagnostics'].get('model', '')
        rows.append(
            {
                'model': LIVE_MODEL,
                'label': label,
                'transport': transport,
                'engine': model,
                'rate_hz': rate_hz,
                'frames_sent': result['frames_sent'],
                'frames_with_depth': result['frames_with_depth'],
                'delivered_ratio': result['delivered_ratio'],
                'latency_ms': result['latency_ms'],
                'node_cpu_ms_per_frame': result['node_cpu_ms_per_frame'],
                'cpu_ms_per_frame_sent': result['cpu_ms_per_frame_sent'],
                'cores_ms_per_frame_sent': result['cores_ms_per_frame_sent'],
                'pipeline_cpu_ms': result['pipeline_cpu_ms'],
                'network_ms': _network_ms(result['node_stage_ms']),
                'measured_at': _now(),
            }
        )
    return {'rows': rows, 'skipped': skipped}


def _network_ms(stages: dict[str, float]) -> float | None:
    return stages.get('network')


# ------------------------------------------------------------------------------ report


def merge(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Merge a run's rows into earlier results: a row replaces the one with its key.

    Live rows from before the transport was recorded (the bench camera then sent CameraInfo
    before the image) are dropped, not shown beside the new ones.
    """
    merged = dict(previous or {})
    for part, key in (('network', ('model', 'label')), ('live', ('model', 'label', 'transport'))):
        earlier = merged.get(part) or {}
        rows = {
            tuple(r[k] for k in key): r
            for r in earlier.get('rows', [])
            if all(k in r for k in key)
        }
        skipped = earlier.get('skipped', [])
        if part in new:
            rows.update({tuple(r[k] for k in key): r for r in new[part]['rows']})
            skipped = new[part]['skipped']
        if rows or part in new:
            merged[part] = {'rows': list(rows.values()), 'skipped': skipped}
    merged['machine'] = new.get('machine', merged.get('machine'))
    return merged


def _ratio(a: float | None, b: float | None) -> str:
    return f'{a / b:.2f}x' if a and b else '-'


def render(results: dict[str, Any], h: str = '###') -> str:
    """Render the README block: precisions, INT8 ratios against the targets, live rows."""
    lines = [f'{h} CPU only: FP32, BF16 and INT8 on OpenVINO', '']
    machine = results.get('machine') or {}
    lines += [
        f'`python -m tools.bench cpu` on {machine.get("cpu", "?")}, '
        f'{machine.get("cores_available", "?")} cores (camera, node and viewer share them), '
        f'OpenVINO {machine.get("openvino", "?")}; random weights (speed only). FP32 is '
        'forced (`precision:=fp32`: what a CPU without AMX or AVX512-BF16 runs); default is '
        "OpenVINO's own choice, BF16 on this CPU; INT8 is the model `python -m training export "
        '--int8` writes (NNCF post-training quantization, calibrated here on '
        f'{CALIBRATION_FRAMES} synthetic frames), run with `precision:=int8`. Each row says '
        'when it was measured; the network rows of one model come from one run, each live row '
        'from a run of its own (`--live-precisions` re-measures some).',
        '',
        '| model | precision | engine | network ms | frame ms (p90) | measured |',
        '| --- | --- | --- | ---: | ---: | --- |',
    ]
    network = (results.get('network') or {}).get('rows', [])
    by_key = {(r['model'], r['label']): r for r in network}
    for r in network:
        lines.append(
            f'| {r["model"]} | {r["label"]} | {r["engine"].split("[")[-1].rstrip("]")} | '
            f'{r["network_ms"]:.1f} | {r["frame_ms"]:.1f} ({r["frame_p90_ms"]:.1f}) | '
            f'{r["measured_at"]} |'
        )
    models = list(dict.fromkeys(r['model'] for r in network))
    if models:
        lines += [
            '',
            f'INT8 speed-up of the network (targets for moa_depthclip: >= '
            f'{TARGETS["int8_vs_default"]:g}x over the default, >= {TARGETS["int8_vs_fp32"]:g}x '
            'over FP32):',
            '',
            '| model | INT8 vs default | INT8 vs FP32 | default vs FP32 |',
            '| --- | ---: | ---: | ---: |',
        ]
        for model in models:
            ms = {
                label: (by_key.get((model, label)) or {}).get('network_ms')
                for label, _ in PRECISIONS
            }
            lines.append(
                f'| {model} | {_ratio(ms["default"], ms["int8"])} | '
                f'{_ratio(ms["fp32"], ms["int8"])} | {_ratio(ms["fp32"], ms["default"])} |'
            )
    live = (results.get('live') or {}).get('rows', [])
    if live:
        lines += [
            '',
            f'Live: depth_node on {LIVE_MODEL} (ViT-B/32 at 224x224), a 640x480 rgb8 camera at '
            f'{live[0]["rate_hz"]:g} Hz, a reliable viewer of depth, camera_info, confidence '
            'and points and a SensorDataQoS points subscriber, all on the same cores '
            '(`moa-depth bench MODEL --live --live-rate-hz 30`). Transport: every process on '
            f"`config/fastdds_large_frames.xml` ({SHM_PROFILE}), or Fast DDS's built-in "
            f'transports ({DEFAULT_TRANSPORTS}). Targets: >= {TARGETS["delivered_ratio"]:.0%} '
            f'delivered, latency median <= {TARGETS["median_ms"]:g} ms, p90 <= '
            f'{TARGETS["p90_ms"]:g} ms. CPU in ms per camera frame; the cores give '
            f'{max(r.get("cores_ms_per_frame_sent", 0.0) for r in live):.1f}.',
            '',
            '| precision | transport | depth delivered | latency median / p90 ms | '
            'node CPU ms/frame | camera + viewers CPU | network ms in the node | measured |',
            '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |',
        ]
        for r in live:
            lat = r['latency_ms']
            net = f'{r["network_ms"]:.1f}' if r.get('network_ms') else '-'
            others = {
                k: v for k, v in (r.get('cpu_ms_per_frame_sent') or {}).items() if k != 'node'
            }
            rest = f'{sum(others.values()):.1f}' if others else '-'
            lines.append(
                f'| {r["label"]} | {r["transport"]} | '
                f'{r["frames_with_depth"]}/{r["frames_sent"]} '
                f'({100 * r["delivered_ratio"]:.1f} %) | {lat["median"]:.0f} / {lat["p90"]:.0f} | '
                f'{r["node_cpu_ms_per_frame"]:.1f} | {rest} | {net} | {r["measured_at"]} |'
            )
    skipped = [
        *(results.get('network') or {}).get('skipped', []),
        *(results.get('live') or {}).get('skipped', []),
    ]
    if skipped:
        lines += ['', 'Not measured:', '']
        lines += [f'- {s["what"]}: {s["reason"]}' for s in skipped]
    return '\n'.join(lines)


def splice(readme: str, block: str) -> None:
    """Replace the README text between the BENCH-CPU markers with ``block``."""
    from tools.bench import report

    report.splice_readme(readme, block, markers=(MARKER_START, MARKER_END))


# ------------------------------------------------------------------------------- command


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument('--models', nargs='+', default=list(MODELS), help='presets or peers')
    parser.add_argument('--frames', type=int, default=60, help='timed frames per row')
    parser.add_argument('--warmup', type=int, default=5, help='untimed frames first')
    parser.add_argument('--live-frames', type=int, default=300, help='camera frames per live row')
    parser.add_argument('--live-rate-hz', type=float, default=30.0, help='live camera rate')
    parser.add_argument('--no-live', action='store_true', help='skip the live rows')
    parser.add_argument(
        '--live-precisions',
        nargs='+',
        default=[label for label, _ in PRECISIONS],
        choices=[label for label, _ in PRECISIONS],
        help='live rows to measure (the others stay as measured before)',
    )
    parser.add_argument('--no-network', action='store_true', help='skip the network rows')
    parser.add_argument('--out', default='runs/bench', help='where cpu.json goes')
    parser.add_argument('--cache-dir', help='exported models (default OUT/models)')
    parser.add_argument('--readme', help='README to update between the BENCH-CPU markers')


def collect(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure what the arguments ask for; return {'network', 'live', 'machine'} parts."""
    import openvino

    from moa_depth_ros.bench.measure import machine_description

    machine = machine_description()
    cache_dir = args.cache_dir or str(pathlib.Path(args.out) / 'models')
    new: dict[str, Any] = {
        'machine': {
            'cpu': machine['cpu'],
            'cores_available': machine['cores_available'],
            'openvino': openvino.__version__.split('-')[0],
        }
    }
    if not args.no_network:
        new['network'] = bench_precisions(
            args.models, cache_dir=cache_dir, frames=args.frames, warmup=args.warmup, log=log
        )
    if not args.no_live:
        new['live'] = live_rows(
            cache_dir=cache_dir,
            frames=args.live_frames,
            rate_hz=args.live_rate_hz,
            log=log,
            labels=getattr(args, 'live_precisions', [label for label, _ in PRECISIONS]),
        )
    return new


def run(args: argparse.Namespace) -> int:
    """Measure, merge into OUT/cpu.json, print the block (and splice it into the README)."""
    from moa_depth_ros.fileio import atomic_write_text
    from tools.bench.suite import log_progress

    if args.frames < 1 or args.warmup < 0 or args.live_frames < 1:
        raise ConfigError('need --frames >= 1, --warmup >= 0 and --live-frames >= 1')
    path = pathlib.Path(args.out) / 'cpu.json'
    previous = json.loads(path.read_text(encoding='utf-8')) if path.is_file() else None
    merged = merge(previous, collect(args, log_progress))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(merged, indent=2) + '\n')
    block = render(merged)
    if args.readme:
        splice(args.readme, block)
    print(block)
    return 0
