"""The benchmark report: Markdown tables from a results dict, and the README splice."""

from __future__ import annotations

import json
import os
import stat

import pytest

from moa_depth_ros.errors import ConfigError
from tools.bench import floors, report


def _stats(median_ms, p90_ms=None):
    return {
        'median_ms': median_ms,
        'p90_ms': p90_ms or median_ms * 1.1,
        'mean_ms': median_ms,
        'max_ms': median_ms * 1.5,
    }


def _stage(median_ms, nbytes, floor_ms, in_total):
    return {
        'median_ms': median_ms,
        'p90_ms': median_ms * 1.2,
        'bytes': nbytes,
        'floor_ms': floor_ms,
        'ratio': median_ms / floor_ms,
        'in_total': in_total,
    }


def _results():
    stages = {
        'decode': 0.01,
        'preprocess': 0.2,
        'network': 250.0,
        'postprocess': 0.3,
        'cloud': 0.6,
        'serialize': 0.5,
    }
    return {
        'schema': report.SCHEMA,
        'command': 'make bench',
        'machine': {
            'cpu': 'Test CPU 9000',
            'isa': ['avx2'],
            'cores_available': 2,
            'logical_cores': 4,
            'ram_gib': 15.6,
            'gpu': 'none',
            'versions': {'python': '3.11.7', 'numpy': '2.4.6', 'onnxruntime': '1.31.1'},
            'date_utc': '2026-01-02 03:04 UTC',
            'load_average_start': [0.2, 0.1, 0.1],
            'load_average_end': [0.3, 0.2, 0.1],
        },
        'floors': {
            'memory': {'bytes': 64 << 20, 'copy_gbps': 10.0},
            'matmul': {'tflops': {'fp32': 0.05, 'bf16': 0.1}, 'n': 2048, 'threads': 2},
        },
        'frame_stages': {
            'width': 640,
            'height': 480,
            'input_hw': [224, 224],
            'threads': 1,
            'repeats': 200,
            'stages': {
                'resize to input': _stage(0.24, 600_000, 0.013, True),
                'back-project': _stage(0.35, 4_608_000, 0.1, True),
                'decode bgr8': _stage(0.3, 921_600, 0.02, False),
            },
            'total_ms': 0.59,
            'total_floor_ms': 0.113,
        },
        'end_to_end': {
            'camera': {'width': 640, 'height': 480, 'encoding': 'rgb8'},
            'frames': 200,
            'warmup': 5,
            'models': {'moa_depthclip': {'flops': 5_000_000_000}},
            'rss_method': 'VmHWM of a child',
            'rows': [
                {
                    'model': 'moa_depthclip',
                    'backend': 'onnxruntime',
                    'device': 'cpu',
                    'stages': {s: _stats(v) for s, v in stages.items()},
                    'total': _stats(252.0, 260.0),
                    'fps': 3.97,
                    'peak_rss_mib': 812.4,
                }
            ],
        },
        'load': {
            'frames': 10_000,
            'rate_hz': 60.0,
            'produced_hz': 59.98,
            'network': {'median_ms': 250.0},
            'process': {'median_ms': 252.0},
            'delivered_hz': 3.96,
            'dropped': 9_339,
            'drop_ratio': 0.9339,
            'latency': {'median_ms': 260.0, 'p90_ms': 266.0, 'max_ms': 301.0},
            'rss_every': 1000,
            'rss_samples_mib': [[0, 400.0], [5000, 401.0], [10000, 401.5]],
            'rss_growth_mib': 1.5,
            'rss_bound_mib': 16.0,
            'memory_flat': True,
            'network_description': 'real model: moa_depthclip via onnxruntime',
        },
        'training': {
            'batch': 8,
            'warmup': 1,
            'steps': 3,
            'amp': 'fp32',
            'device': 'cpu',
            'threads': 2,
            'rows': [
                {
                    'label': 'quickstart',
                    'model_name': 'moa_depthclip_tiny',
                    'input_hw': [128, 128],
                    'images_per_s': 12.345,
                    'step_s': {'median': 0.648},
                    'parameters': 9_000_000,
                    'trainable_parameters': 3_000_000,
                    'gflop_forward': 0.9,
                }
            ],
        },
        'skipped': [{'what': 'tensorrt', 'reason': 'tensorrt is not installed on this machine'}],
        'wall_s': {'floors': 3.0, 'end to end': 120.0, 'total': 600.0},
    }


def _row(markdown: str, first_cell: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f'no table row starting with {first_cell!r} in:\n{markdown}')


def test_markdown_names_the_machine_and_date_and_says_numbers_are_from_it():
    text = report.render_markdown(_results())
    assert 'Test CPU 9000' in text and '2026-01-02 03:04 UTC' in text
    assert '2 cores available (of 4)' in text and 'onnxruntime 1.31.1' in text
    assert 'come from this machine' in text
    assert 'busy' not in text  # an idle machine gets no noise warning


def test_markdown_end_to_end_row_has_stage_medians_fps_rss_and_floor_ratios():
    text = report.render_markdown(_results())
    row = _row(text, 'moa_depthclip')
    assert row[1] == 'onnxruntime (cpu)'
    assert row[2:8] == ['0.01', '0.20', '250', '0.30', '0.60', '0.50']
    assert row[8] == '252.0 (260.0)' and row[9] == '3.97' and row[10] == '812'
    # 5 GFLOP at 50 GFLOP/s = 100 ms floor: 250 ms is 2.5x; at BF16's 100 GFLOP/s, 5.0x.
    assert row[11] == '5.00' and row[12] == '2.5' and row[13] == '5.0'


def test_markdown_load_training_and_skipped_sections():
    text = report.render_markdown(_results())
    load = _row(text, '10000')
    assert load[3] == '3.96' and load[4] == '9339 (93.4 %)'
    assert load[5] == '260 / 266 / 301' and load[7] == 'yes'
    assert '+1.5' in load[6]
    training = _row(text, 'quickstart')
    assert training[2] == '128x128' and training[3] == '12.35'
    assert '- tensorrt: tensorrt is not installed on this machine' in text


def test_stage_table_keeps_the_pipeline_order_through_json(tmp_path):
    json_path, _ = report.write_results(_results(), tmp_path)
    text = report.render_markdown(json.loads(json_path.read_text()))
    assert text.index('| resize to input |') < text.index('| back-project |')
    assert '| decode bgr8 |' not in text  # not part of an rgb8 frame's total
    assert _row(text, 'back-project')[5] == '3.5'  # 0.35 ms / 0.1 ms copy floor
    assert _row(text, '**sum (network excluded)**')[5] == '5.2'


def test_markdown_warns_when_other_processes_kept_the_cpu_busy():
    results = _results()
    results['machine']['other_processes_cores'] = 1.2
    assert 'other processes kept 1.2 of the 2 cores busy' in report.render_markdown(results)
    results['machine']['other_processes_cores'] = 0.1
    assert 'noisy' not in report.render_markdown(results)


def test_other_cores_subtracts_the_benchmarks_own_cpu_time():
    start = {'wall_s': 100.0, 'machine_busy_s': 50.0, 'own_s': 10.0}
    end = {'wall_s': 110.0, 'machine_busy_s': 70.0, 'own_s': 25.0}
    assert report.other_cores(start, end) == pytest.approx(0.5)  # (20 - 15) s over 10 s
    assert report.other_cores(None, end) is None
    snapshot = report.cpu_snapshot()
    assert snapshot is None or snapshot['machine_busy_s'] >= snapshot['own_s'] >= 0


def test_write_results_writes_json_and_markdown(tmp_path):
    json_path, md_path = report.write_results(_results(), tmp_path / 'bench')
    assert json.loads(json_path.read_text())['load']['dropped'] == 9_339
    assert md_path.read_text().startswith('# moa_depth_ros benchmark')
    assert not [p for p in (tmp_path / 'bench').iterdir() if p.name.startswith('.')]


README = (
    '# Project\r\n\r\nIntro with ünïcode and trailing spaces   \n\n## Performance\n\n'
    f'{report.MARKER_START}\nold numbers\n{report.MARKER_END}\n\n## After\nkeep me'
)


def test_splice_replaces_only_between_markers(tmp_path):
    path = tmp_path / 'README.md'
    path.write_bytes(README.encode('utf-8'))
    os.chmod(path, 0o644)
    report.splice_readme(path, '### Table\n\n| a | b |\n')
    data = path.read_bytes()
    head, _, tail = README.encode('utf-8').partition(b'old numbers\n')
    assert data.startswith(head)  # everything up to and including the start marker
    assert data.endswith(tail)  # the end marker and everything after it
    assert b'### Table\n\n| a | b |\n' in data and b'old numbers' not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    report.splice_readme(path, '### Table\n\n| a | b |\n')
    assert path.read_bytes() == data  # idempotent


@pytest.mark.parametrize(
    'text',
    [
        '# no markers here\n',
        f'{report.MARKER_START}\nonly the start\n',
        f'{report.MARKER_END}\nx\n{report.MARKER_START}\n',
        f'{report.MARKER_START}\n{report.MARKER_END}\n{report.MARKER_START}\n{report.MARKER_END}\n',
    ],
)
def test_splice_without_one_pair_of_markers_fails_and_leaves_the_file(tmp_path, text):
    path = tmp_path / 'README.md'
    path.write_text(text)
    with pytest.raises(ConfigError, match='BENCH:START'):
        report.splice_readme(path, 'new')
    with pytest.raises(ConfigError, match='BENCH:START'):
        report.check_readme(path)
    assert path.read_text() == text


def test_floors_are_positive_and_ratios_divide():
    bandwidth = floors.copy_bandwidth(1 << 20, min_seconds=0.0, min_repeats=3)
    assert bandwidth['copy_gbps'] > 0 and bandwidth['repeats'] >= 3
    matmul = floors.matmul_rates(n=64, min_seconds=0.01)
    assert matmul['tflops']['fp32'] > 0
    assert matmul['tflops'].get('bf16', 1.0) > 0
    assert floors.network_floor_ms(2_000_000_000, 0.1) == pytest.approx(20.0)
    assert floors.ratio(50.0, 20.0) == pytest.approx(2.5)
    assert floors.ratio(50.0, 0.0) is None and floors.network_floor_ms(None, 0.1) is None
    with pytest.raises(ConfigError):
        floors.copy_bandwidth(0)


def test_markdown_puts_the_cpu_runtimes_and_peers_side_by_side_with_ratios():
    results = _results()
    rows = results['end_to_end']['rows']
    template = rows[0]

    def row(model, backend, network_ms):
        stages = {**template['stages'], 'network': _stats(network_ms)}
        return {
            **template,
            'model': model,
            'backend': backend,
            'stages': stages,
            'total': _stats(network_ms + 2.0),
        }

    peer = 'depth_anything_v2_small@392x518'
    rows += [
        {**row('moa_depthclip', 'openvino', 100.0), 'precision': 'bf16'},
        row(peer, 'onnxruntime', 400.0),
        {**row(peer, 'openvino', 300.0), 'precision': 'fp32'},
    ]
    text = report.render_markdown(results)
    section = text[text.index('CPU runtimes and peers side by side') :]
    table = [line for line in section.splitlines() if line.startswith('| ')][2:]
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in table]
    assert [c[0] for c in cells[:2]] == ['moa_depthclip', f'{peer} (peer)']
    # ONNX Runtime, OpenVINO and its precision, speed-up, frames, then network time /
    # moa_depthclip's on each runtime.
    assert cells[0][1:] == ['250.0', '100.0', 'bf16', '2.50', '252.0', '102.0', '1.00', '1.00']
    assert cells[1][1:] == ['400.0', '300.0', 'fp32', '1.33', '402.0', '302.0', '1.60', '3.00']


def test_markdown_has_no_side_by_side_table_without_openvino():
    assert 'side by side' not in report.render_markdown(_results())
