"""Benchmark results as JSON and Markdown, and the README's generated performance section.

``results`` is one JSON-able dict (see ``tools.bench.suite.collect``): ``machine``
(what ran it, when), ``floors``, ``frame_stages``, ``end_to_end``, ``load``, ``training``,
``skipped`` (what was not measured and why) and ``wall_s``. ``render_markdown`` turns it
into tables; ``splice_readme`` replaces what lies between the README's
``<!-- BENCH:START -->`` and ``<!-- BENCH:END -->`` markers and leaves every other byte
of the file as it was. All files are written atomically.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Callable, Sequence

from moa_depth_ros.bench.measure import STAGES
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.fileio import atomic_write_bytes, atomic_write_text
from tools.bench.floors import network_floor_ms, ratio

SCHEMA = 'moa_depth_ros.bench/1'
MARKER_START = '<!-- BENCH:START -->'
MARKER_END = '<!-- BENCH:END -->'


# ------------------------------------------------------------------------------ writing


def write_results(
    results: dict[str, Any], out_dir: str | os.PathLike
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; return both paths."""
    out = pathlib.Path(out_dir)
    json_path = atomic_write_text(
        out / 'results.json', json.dumps(results, indent=2, default=str) + '\n'
    )
    md_path = atomic_write_text(out / 'results.md', render_markdown(results, level=1))
    return json_path, md_path


def _marker_span(
    data: bytes, path: pathlib.Path, markers: tuple[str, str] = (MARKER_START, MARKER_END)
) -> tuple[int, int]:
    """Byte offsets (end of the start marker, start of the end marker); ConfigError if bad."""
    start_marker, end_marker = (m.encode() for m in markers)
    counts = (data.count(start_marker), data.count(end_marker))
    start, end = data.find(start_marker), data.find(end_marker)
    if counts != (1, 1) or end < start:
        raise ConfigError(
            f'{os.fspath(path)} must contain {markers[0]} and then {markers[1]} exactly '
            f'once each (found {counts[0]} and {counts[1]}'
            f'{", end before start" if counts == (1, 1) else ""}); add them around the '
            f'performance section so the benchmark knows what it may replace'
        )
    return start + len(start_marker), end


def _read_readme(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f'cannot read the README {os.fspath(path)!r}: {e}') from e


def check_readme(
    readme_path: str | os.PathLike, markers: tuple[str, str] = (MARKER_START, MARKER_END)
) -> None:
    """Raise ConfigError unless the README exists and has the markers once, in order."""
    path = pathlib.Path(readme_path)
    _marker_span(_read_readme(path), path, markers)


def splice_readme(
    readme_path: str | os.PathLike,
    section: str,
    markers: tuple[str, str] = (MARKER_START, MARKER_END),
) -> pathlib.Path:
    """Replace the text between the BENCH markers (or ``markers``) with ``section``.

    Everything up to and including the start marker, and from the end marker on, stays
    byte-identical. Raises ConfigError when the markers are missing, repeated or out of
    order (nothing is written then).
    """
    path = pathlib.Path(readme_path)
    data = _read_readme(path)
    start, end = _marker_span(data, path, markers)
    body = b'\n' + section.strip('\n').encode('utf-8') + b'\n'
    new = data[:start] + body + data[end:]
    if new != data:
        atomic_write_bytes(path, new)
    return path


# ------------------------------------------------------------------------------ machine


def cpu_snapshot() -> dict[str, float] | None:
    """CPU seconds used so far by the whole machine and by this process with its children.

    Two snapshots give how much CPU *other* processes used in between (``other_cores``):
    the load average cannot tell, since it counts the benchmark itself. Children count
    once they have been waited for, which ``subprocess.run`` does. None without /proc/stat.
    """
    try:
        with open('/proc/stat', encoding='ascii') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    busy_ticks = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    own = os.times()
    return {
        'wall_s': time.monotonic(),
        'machine_busy_s': busy_ticks / os.sysconf('SC_CLK_TCK'),
        'own_s': own.user + own.system + own.children_user + own.children_system,
    }


def other_cores(start: dict[str, float] | None, end: dict[str, float] | None) -> float | None:
    """Average number of cores other processes kept busy between two ``cpu_snapshot``s."""
    if not start or not end or end['wall_s'] <= start['wall_s']:
        return None
    other_s = (end['machine_busy_s'] - start['machine_busy_s']) - (end['own_s'] - start['own_s'])
    return max(other_s, 0.0) / (end['wall_s'] - start['wall_s'])


def busy_note(machine: dict[str, Any]) -> str | None:
    """Return a warning when other work loaded the machine during the run, else None."""
    cores = machine.get('cores_available') or 1
    other = machine.get('other_processes_cores')
    if other is not None:
        if other > 0.25 * cores:
            return (
                f'other processes kept {other:.1f} of the {cores} cores busy on average during '
                f'the run: these numbers are noisy and pessimistic'
            )
        return None
    load = (machine.get('load_average_start') or [0.0])[0]
    if load > 0.5 * cores:
        return (
            f'the machine was busy before the run (1-minute load average {load:.1f} on '
            f'{cores} cores): these numbers may be noisy and pessimistic'
        )
    return None


# ------------------------------------------------------------------------------ markdown


def _f(value: Any, digits: int = 1, suffix: str = '') -> str:
    """Format a number for a table cell; '–' for missing values."""
    if value is None:
        return '–'
    if isinstance(value, float) and value != value:  # NaN
        return '–'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'{value}{suffix}'
    return f'{value:.{digits}f}{suffix}'


def _plural(count: int, noun: str) -> str:
    return f'{count} {noun}{"" if count == 1 else "s"}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = '') -> list[str]:
    align = align or 'l' + 'r' * (len(header) - 1)
    rule = ['---:' if a == 'r' else '---' for a in align]
    lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join(rule) + ' |']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results.get('machine', {})
    v = m.get('versions', {})
    cores = f'{m.get("cores_available")} cores available'
    if m.get('logical_cores') and m.get('logical_cores') != m.get('cores_available'):
        cores += f' (of {m.get("logical_cores")})'
    versions = ', '.join(
        f'{name} {v[key]}'
        for name, key in (
            ('Python', 'python'),
            ('numpy', 'numpy'),
            ('torch', 'torch'),
            ('onnxruntime', 'onnxruntime'),
            ('OpenCV', 'opencv'),
            ('TensorRT', 'tensorrt'),
            ('moa_depth_ros', 'moa_depth_ros'),
        )
        if v.get(key)
    )
    isa = f' ({", ".join(m["isa"])})' if m.get('isa') else ''
    lines = [
        f'Measured on {m.get("date_utc", "?")} by `{results.get("command", "moa-depth bench")}` '
        f'on: {m.get("cpu", "?")}{isa}, {cores}, '
        f'{_f(m.get("ram_gib"))} GiB RAM, GPU: {m.get("gpu", "?")}; {versions}.',
        '',
        '> These numbers come from this machine only: on yours, run `make bench` (or '
        '`moa-depth bench MODEL` for one model file on the target).',
    ]
    note = busy_note(m)
    if note:
        lines += ['>', f'> Note: {note}.']
    return lines


def _floor_lines(results: dict[str, Any]) -> list[str]:
    floors = results.get('floors') or {}
    memory, matmul = floors.get('memory') or {}, floors.get('matmul') or {}
    tflops = matmul.get('tflops', {})
    parts = []
    if memory:
        parts.append(
            f'memory copy {_f(memory.get("copy_gbps"))} GB/s (numpy copy of '
            f'{memory.get("bytes", 0) / 2**20:.0f} MiB)'
        )
    for dtype in ('fp32', 'bf16'):
        if dtype in tflops:
            parts.append(f'matmul {dtype.upper()} {tflops[dtype] * 1e3:.0f} GFLOP/s')
        elif dtype in matmul.get('skipped', {}):
            parts.append(f'matmul {dtype.upper()}: {matmul["skipped"][dtype]}')
    if not parts:
        return []
    threads = f', torch {matmul["threads"]} threads' if matmul.get('threads') else ''
    return [
        f'Floors measured in the same run: {"; ".join(parts)} (n={matmul.get("n")}{threads}). '
        '"x floor" = time / floor: for the network, median network time / (FLOPs / matmul '
        'rate); for a per-frame stage, its median / the time to copy the bytes it writes.'
    ]


def _e2e_lines(results: dict[str, Any], h: str) -> list[str]:
    e2e = results.get('end_to_end')
    if not e2e or not e2e.get('rows'):
        return []
    cam = e2e.get('camera', {})
    tflops = ((results.get('floors') or {}).get('matmul') or {}).get('tflops', {})
    header = [
        'model',
        'backend',
        *(f'{s} ms' for s in STAGES),
        'frame ms (p90)',
        'fps',
        'peak RSS MiB',
        'GFLOP',
        'network x FP32 floor',
        'x BF16 floor',
    ]
    rows = []
    for row in e2e['rows']:
        facts = e2e['models'].get(row['model'], {})
        flops = facts.get('flops')
        network_ms = row['stages']['network']['median_ms']
        ratios = []
        for dtype in ('fp32', 'bf16'):
            if row.get('device', 'cpu') != 'cpu':
                ratios.append('GPU')
                continue
            floor_ms = network_floor_ms(flops, tflops.get(dtype))
            ratios.append(_f(ratio(network_ms, floor_ms), 1))
        rows.append(
            [
                row['model'],
                f'{row["backend"]} ({row.get("device", "cpu")})',
                *(_f(row['stages'][s]['median_ms'], 0 if s == 'network' else 2) for s in STAGES),
                f'{_f(row["total"]["median_ms"], 1)} ({_f(row["total"]["p90_ms"], 1)})',
                _f(row['fps'], 2),
                _f(row.get('peak_rss_mib'), 0),
                _f(flops / 1e9 if flops else None, 2),
                *ratios,
            ]
        )
    return [
        f'{h} End to end per frame',
        '',
        f'A {cam.get("width")}x{cam.get("height")} {cam.get("encoding")} frame through the '
        f'pipeline: decode, preprocess, network, postprocess (upsample, range), cloud '
        f'(organized, with rgb), serialize (depth, camera_info, confidence, cloud: the bytes the '
        f'node publishes); medians over '
        f'{e2e.get("frames")} frames after {e2e.get("warmup")} warm-up frames, the frame time '
        f'as median (p90). Models with random weights (time does not depend on them). Peak '
        f'RSS: {e2e.get("rss_method")}.',
        '',
        *_table(header, rows, 'll' + 'r' * (len(header) - 2)),
    ]


def _side_by_side_lines(results: dict[str, Any], h: str) -> list[str]:
    """ONNX Runtime beside OpenVINO per model, and every model beside the reference model."""
    from tools.bench.peers import PEERS, REFERENCE_MODEL

    e2e = results.get('end_to_end')
    rows_in = [r for r in (e2e or {}).get('rows', []) if r.get('device', 'cpu') == 'cpu']
    runtimes = ('onnxruntime', 'openvino')
    by_key = {(r['model'], r['backend']): r for r in rows_in if r['backend'] in runtimes}
    if not any(b == 'openvino' for _, b in by_key):
        return []
    models = list(dict.fromkeys(m for m, _ in by_key))

    def network(model: str, backend: str) -> float | None:
        row = by_key.get((model, backend))
        return row['stages']['network']['median_ms'] if row else None

    def frame(model: str, backend: str) -> float | None:
        row = by_key.get((model, backend))
        return row['total']['median_ms'] if row else None

    rows = []
    for model in models:
        ort, ov = network(model, 'onnxruntime'), network(model, 'openvino')
        rows.append(
            [
                model + (' (peer)' if model in PEERS else ''),
                _f(ort, 1),
                _f(ov, 1),
                (by_key.get((model, 'openvino')) or {}).get('precision', '–'),
                _f(ratio(ort, ov), 2),
                _f(frame(model, 'onnxruntime'), 1),
                _f(frame(model, 'openvino'), 1),
                *(_f(ratio(network(model, b), network(REFERENCE_MODEL, b)), 2) for b in runtimes),
            ]
        )
    header = [
        'model',
        'network ms ONNX Runtime',
        'network ms OpenVINO',
        'OpenVINO precision',
        'OpenVINO speed-up',
        'frame ms ONNX Runtime',
        'frame ms OpenVINO',
        f'network x {REFERENCE_MODEL} (ONNX Runtime)',
        f'x {REFERENCE_MODEL} (OpenVINO)',
    ]
    return [
        f'{h} CPU runtimes and peers side by side',
        '',
        'The rows above, regrouped: each model on ONNX Runtime and OpenVINO (the same .onnx '
        'file, the same frames, in this run). ONNX Runtime runs the FP32 file; OpenVINO runs '
        "its default, the CPU's preferred precision (BF16 where the CPU has AMX or "
        'AVX512-BF16), kept only because its depth met the accuracy bar against FP32 (the '
        'precision column; `precision:=fp32` forces FP32). Speed-up = ONNX Runtime network time / '
        f'OpenVINO network time; "x {REFERENCE_MODEL}" = network time / {REFERENCE_MODEL}\'s '
        "on the same runtime. Peers: a network with Depth-Anything-V2-Small's architecture "
        "(transformers' DepthAnything definition, random weights) at the sizes its ROS 2 nodes "
        'run it.',
        '',
        *_table(header, rows),
    ]


def _stage_lines(results: dict[str, Any], h: str) -> list[str]:
    stages = results.get('frame_stages')
    if not stages:
        return []
    rows = [
        [
            name,
            _f(s['median_ms'], 3),
            _f(s['p90_ms'], 3),
            _f(s['bytes'] / 1e6, 2),
            _f(s['floor_ms'], 3),
            _f(s['ratio'], 1),
        ]
        for name, s in stages['stages'].items()
        if s.get('in_total')
    ]
    rows.append(
        [
            '**sum (network excluded)**',
            _f(stages['total_ms'], 3),
            '',
            '',
            _f(stages['total_floor_ms'], 3),
            _f(stages['total_ms'] / max(stages['total_floor_ms'], 1e-9), 1),
        ]
    )
    return [
        f'{h} Per-frame stages against the memory floor',
        '',
        f'`python -m tools.bench frame-stages` in the same run: '
        f'{stages["width"]}x{stages["height"]} rgb8, network input '
        f'{stages["input_hw"][0]}x{stages["input_hw"][1]}, OpenCV threads {stages["threads"]}'
        f', {stages["repeats"]} runs per stage; the floor is a numpy copy of '
        f'the bytes the stage writes.',
        '',
        *_table(['stage', 'median ms', 'p90 ms', 'MB out', 'copy floor ms', 'x floor'], rows),
    ]


def _load_lines(results: dict[str, Any], h: str) -> list[str]:
    load = results.get('load')
    if not load or 'frames' not in load:
        return []
    lat = load['latency']
    samples = load.get('rss_samples_mib') or []
    first = samples[0][1] if samples else None
    last = samples[-1][1] if samples else None
    row = [
        str(load['frames']),
        f'{_f(load["rate_hz"], 0)} ({_f(load.get("produced_hz"), 1)})',
        f'{_f(load.get("network", {}).get("median_ms"), 1)} / '
        f'{_f(load.get("process", {}).get("median_ms"), 1)}',
        _f(load.get('delivered_hz'), 2),
        f'{load["dropped"]} ({100 * load["drop_ratio"]:.1f} %)',
        f'{_f(lat["median_ms"], 0)} / {_f(lat["p90_ms"], 0)} / {_f(lat["max_ms"], 0)}',
        f'{_f(first, 1)} → {_f(last, 1)} ({load["rss_growth_mib"]:+.1f})',
        'yes' if load['memory_flat'] else '**NO**',
    ]
    return [
        f"{h} Under load (the node's latest-frame worker, no ROS)",
        '',
        f'A producer submits new {load.get("width", 640)}x{load.get("height", 480)} rgb8 '
        f'frames on a fixed schedule, stamped at capture, to the worker the node uses; the '
        f'worker runs the pipeline and serializes the outputs. Network: '
        f'{load.get("network_description")}. Drops = frames replaced in the one-slot mailbox '
        f'before the worker took them; frame work = pipeline + serialization on the worker '
        f'(medians); latency = capture stamp to outputs serialized; RSS '
        f'sampled every {load["rss_every"]} frames, flat = last - first within '
        f'{_f(load["rss_bound_mib"], 0)} MiB.',
        '',
        *_table(
            [
                'frames',
                'target Hz (produced)',
                'network / frame work ms',
                'delivered Hz',
                'dropped',
                'latency median / p90 / max ms',
                'RSS MiB first → last (growth)',
                'memory flat',
            ],
            [row],
        ),
    ]


def _live_lines(results: dict[str, Any], h: str) -> list[str]:
    live = results.get('live')
    if not live or 'frames_sent' not in live:
        return []
    lat = live['latency_ms']
    row = [
        f'{live["width"]}x{live["height"]} at {_f(live["rate_hz"], 0)} Hz',
        f'{live["frames_with_depth"]}/{live["frames_sent"]} '
        f'({100 * live["delivered_ratio"]:.1f} %)',
        f'{live["frames_with_depth_and_info"]} ({100 * live["complete_ratio"]:.1f} %)',
        f'{_f(lat["median"], 0)} / {_f(lat["p90"], 0)}',
        _f(live['node_cpu_ms_per_frame'], 1),
        f'{_f(live["pipeline_cpu_ms"], 1)} ({_f(live["pipeline_wall_ms"], 1)} wall)',
        _f(live['cpu_beyond_pipeline_ms'], 1),
        _f(live.get('node_publish_ms'), 1),
        f'{_f(live["output_mb_per_frame"], 1)} MB: {_f(live["copy_floor_ms"], 2)}',
        f'{_f(live["idle_core_percent"], 1)} %',
    ]
    nav = live.get('navigation') or {}
    nav_text = (
        f'{nav["clouds_sensor_data_qos"]}/{nav["clouds_reliable"]} ({100 * nav["ratio"]:.1f} %)'
        f', {nav["cloud_points"]} points'
        if nav
        else '-'
    )
    row.append(nav_text)
    return [
        f'{h} Live on ROS 2 (rclpy {live.get("rclpy", "?")}, Fast DDS)',
        '',
        f'depth_node as its own process on {live["model_name"]} ({live["backend"]}), a camera '
        f'process publishing rgb8 images and CameraInfo (reliable), and a viewer process '
        f'subscribed reliably to depth/image_rect, depth/camera_info, depth/confidence and '
        f'points, on a '
        f'private ROS domain. Delivered = frames whose depth reached the viewer; complete = '
        f'depth and depth/camera_info both (what a synchronizing consumer can use); latency = '
        f'camera stamp to depth received. Node CPU = user + system time of the node process '
        f'per published frame while the camera streams; pipeline alone = the same model and '
        f'frame in the benchmark process without ROS; beyond = node CPU - pipeline CPU, what '
        f"receiving and publishing cost, beside the node's own publish time and the time to "
        f"copy one frame's output bytes once. Idle = the node started, no camera. Nav2 "
        f"points = clouds a subscriber with Nav2's costmap QoS (SensorDataQoS: best effort, "
        f'keep last 5, its own process) got of those the reliable viewer got, and the cloud '
        f'size (cloud_decimation 0 keeps it within cloud_max_kib). Targets: >= 99 % delivered '
        f'and complete, beyond <= 12 ms, idle < 2 % of a core, Nav2 points >= 95 %.',
        '',
        *_table(
            [
                'camera',
                'depth delivered',
                'depth + camera_info',
                'latency median / p90 ms',
                'node CPU ms/frame',
                'pipeline alone CPU ms',
                'beyond ms',
                'publish ms',
                'output bytes: copy ms',
                'idle node',
                'Nav2 points',
            ],
            [row],
        ),
    ]


def _training_lines(results: dict[str, Any], h: str) -> list[str]:
    training = results.get('training')
    if not training or not training.get('rows'):
        return []
    rows = [
        [
            row['label'],
            row['model_name'],
            f'{row["input_hw"][0]}x{row["input_hw"][1]}',
            _f(row['images_per_s'], 2),
            _f(row['step_s']['median'], 2),
            f'{row["trainable_parameters"] / 1e6:.2f} M / {row["parameters"] / 1e6:.1f} M',
            _f(row.get('gflop_forward'), 1),
        ]
        for row in training['rows']
    ]
    return [
        f'{h} Training throughput',
        '',
        f"Images per second at batch {training['batch']}: forward_train, the recipe's loss, "
        f'backward, gradient clipping and an AdamW step over trainable_parameter_groups, '
        f'{training["amp"]} on {training["device"]} ({training["threads"]} torch threads), '
        f'{_plural(training["warmup"], "warm-up step")} then '
        f'{_plural(training["steps"], "timed step")}; random '
        f'images and depth (data loading excluded).',
        '',
        *_table(
            [
                'recipe',
                'model',
                'input',
                'images/s',
                's/step (median)',
                'trainable / all params',
                'GFLOP/image fwd',
            ],
            rows,
            'lllrrrr',
        ),
    ]


def _skipped_lines(results: dict[str, Any], h: str) -> list[str]:
    skipped = results.get('skipped') or []
    if not skipped:
        return []
    return [
        f'{h} Not measured',
        '',
        *(f'- {item["what"]}: {item["reason"]}' for item in skipped),
    ]


def _notes_lines(results: dict[str, Any], h: str) -> list[str]:
    notes = results.get('notes') or []
    return [f'{h} Notes', '', *(f'- {note}' for note in notes)] if notes else []


def _wall_lines(results: dict[str, Any]) -> list[str]:
    wall = results.get('wall_s') or {}
    if not wall:
        return []
    parts = [f'{k} {v / 60:.1f} min' for k, v in wall.items() if k != 'total' and v]
    total = wall.get('total')
    return [
        f'Benchmark wall time: {(total or 0) / 60:.1f} min ({", ".join(parts)}). Full results: '
        f'`{results.get("results_path", "runs/bench/results.json")}`.'
    ]


def render_markdown(results: dict[str, Any], level: int = 3) -> str:
    """Render ``results`` as Markdown; section headings at ``level`` (README: 3)."""
    h = '##' if level == 1 else '#' * min(max(level, 1), 6)
    parts: list[list[str]] = []
    if level == 1:
        parts.append(['# moa_depth_ros benchmark'])
    builders: list[Callable[..., list[str]]] = [
        _e2e_lines,
        _side_by_side_lines,
        _stage_lines,
        _load_lines,
        _live_lines,
        _training_lines,
        _skipped_lines,
        _notes_lines,
    ]
    parts.append(_machine_lines(results))
    parts.append(_floor_lines(results))
    for build in builders:
        parts.append(build(results, h))
    parts.append(_wall_lines(results))
    return '\n\n'.join('\n'.join(p) for p in parts if p) + '\n'
