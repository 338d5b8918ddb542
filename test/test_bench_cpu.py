"""``python -m tools.bench cpu``: merging partial runs and the README block (no measuring)."""

from __future__ import annotations

import pytest

from moa_depth_ros.errors import ConfigError
from tools.bench import cpu


def _row(model, label, network_ms, at='2026-12-06 23:00 UTC'):
    return {
        'model': model,
        'label': label,
        'precision': {'default': 'bf16'}.get(label, label),
        'engine': f'{model} via openvino [OpenVINO CPU {label}]',
        'network_ms': network_ms,
        'frame_ms': network_ms + 4.0,
        'frame_p90_ms': network_ms + 6.0,
        'measured_at': at,
    }


def _live(label, delivered, at='2026-12-06 23:10 UTC', transport=cpu.SHM_PROFILE):
    return {
        'model': 'moa_depthclip',
        'label': label,
        'transport': transport,
        'engine': 'x',
        'rate_hz': 30.0,
        'frames_sent': 300,
        'frames_with_depth': delivered,
        'delivered_ratio': delivered / 300,
        'latency_ms': {'median': 60.0, 'p90': 120.0, 'max': 200.0},
        'node_cpu_ms_per_frame': 55.0,
        'cpu_ms_per_frame_sent': {'node': 50.0, 'camera': 1.5, 'viewer': 4.0, 'navigation': 1.0},
        'cores_ms_per_frame_sent': 66.7,
        'pipeline_cpu_ms': 45.0,
        'network_ms': 25.0,
        'measured_at': at,
    }


def test_a_partial_run_replaces_only_its_own_rows():
    first = cpu.merge(
        None,
        {
            'machine': {'cpu': 'Xeon', 'cores_available': 2, 'openvino': '2026.4.1'},
            'network': {
                'rows': [_row('moa_depthclip', 'fp32', 60.0), _row('moa_depthclip', 'int8', 20.0)],
                'skipped': [],
            },
        },
    )
    live = {'rows': [_live('int8', 280)], 'skipped': []}
    merged = cpu.merge(first, {'machine': first['machine'], 'live': live})
    assert [r['label'] for r in merged['network']['rows']] == ['fp32', 'int8']
    again = {'rows': [_row('moa_depthclip', 'int8', 18.0, at='later')], 'skipped': []}
    merged = cpu.merge(merged, {'machine': first['machine'], 'network': again})
    rows = {r['label']: r for r in merged['network']['rows']}
    assert rows['int8']['network_ms'] == 18.0 and rows['fp32']['network_ms'] == 60.0
    assert merged['live']['rows'][0]['frames_with_depth'] == 280
    # A live row is one precision on one transport: the other transport's row stays.
    other = {'rows': [_live('int8', 250, transport=cpu.DEFAULT_TRANSPORTS)], 'skipped': []}
    merged = cpu.merge(merged, {'machine': first['machine'], 'live': other})
    assert [r['frames_with_depth'] for r in merged['live']['rows']] == [280, 250]
    # A row of the format before the transport was recorded is dropped at the next merge.
    merged['live']['rows'].append(
        {k: v for k, v in _live('fp32', 100).items() if k != 'transport'}
    )
    merged = cpu.merge(merged, {'machine': first['machine'], 'live': other})
    assert [r['label'] for r in merged['live']['rows']] == ['int8', 'int8']


def test_the_block_shows_the_ratios_the_targets_are_about_and_the_live_rows():
    results = {
        'machine': {'cpu': 'Xeon', 'cores_available': 2, 'openvino': '2026.4.1'},
        'network': {
            'rows': [
                _row('moa_depthclip', 'fp32', 66.0),
                _row('moa_depthclip', 'default', 28.0),
                _row('moa_depthclip', 'int8', 20.0),
            ],
            'skipped': [{'what': 'depth_anything_v2_small@518x518 int8', 'reason': 'why'}],
        },
        'live': {'rows': [_live('int8', 285)], 'skipped': []},
    }
    block = cpu.render(results)
    assert '| moa_depthclip | 1.40x | 3.30x | 2.36x |' in block
    row = '| int8 | large-frames profile | 285/300 (95.0 %) | 60 / 120 | 55.0 | 6.5 | 25.0 |'
    assert row in block  # camera + viewer + navigation: 1.5 + 4.0 + 1.0 ms per frame
    assert 'the cores give 66.7' in block
    assert '- depth_anything_v2_small@518x518 int8: why' in block


def test_the_block_goes_between_its_own_markers_only(tmp_path):
    readme = tmp_path / 'README.md'
    text = '# x\n<!-- BENCH:START -->\nold\n<!-- BENCH:END -->\n\n{}\nold cpu\n{}\ntail\n'
    readme.write_text(text.format(cpu.MARKER_START, cpu.MARKER_END))
    cpu.splice(str(readme), 'new cpu')
    assert readme.read_text() == text.format(cpu.MARKER_START, cpu.MARKER_END).replace(
        'old cpu', 'new cpu'
    )
    readme.write_text('no markers\n')
    with pytest.raises(ConfigError, match='BENCH-CPU:START'):
        cpu.splice(str(readme), 'x')
