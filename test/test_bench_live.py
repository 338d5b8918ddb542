"""``moa-depth bench --live``: depth_node, a camera and a viewer as processes.

Runs on real rclpy over Fast DDS in the private network namespace (``ros2`` marker). The
numbers are this machine's; the test checks that every quantity the README table shows is
measured and sane, not that a target is met (the benchmark prints that).
"""

from __future__ import annotations

import os
import pathlib

import pytest
from tiny_model import write_tiny_onnx

from moa_depth_ros.bench import command, live
from tools.bench import report

pytestmark = [pytest.mark.ros2, pytest.mark.slow]
ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_live_run_measures_delivery_latency_and_node_cpu(tmp_path, ros_domain, monkeypatch):
    write_tiny_onnx(tmp_path / 'tiny.onnx')
    monkeypatch.chdir(tmp_path)  # a relative path, as `moa-depth bench runs/x.onnx --live` gets
    result = live.measure_live(
        'tiny.onnx',
        frames=30,
        warmup_frames=15,
        width=160,
        height=120,
        idle_s=1.0,
        domain_id=ros_domain,
        node_params={'frames_in_flight': 1},
        fastdds_profile=str(ROOT / 'config' / 'fastdds_large_frames.xml'),
    )
    assert result['frames_sent'] == 30 and result['node_exit_status'] == 0
    assert result['node_params'] == {'frames_in_flight': 1}
    assert result['fastdds_profile'].endswith('config/fastdds_large_frames.xml')
    # Every process's CPU over the streaming window, against what the cores give.
    shares = result['cpu_ms_per_frame_sent']
    assert set(shares) == {'node', 'camera', 'viewer', 'navigation'}
    assert shares['node'] > 0 and all(ms >= 0 for ms in shares.values())
    assert result['cores_ms_per_frame_sent'] == pytest.approx(
        len(os.sched_getaffinity(0)) * 1e3 / 15
    )
    # A network far faster than the 15 Hz camera: most frames come back even on a busy CI.
    assert result['frames_with_depth'] >= 20, result
    assert result['frames_with_depth_and_info'] <= result['frames_with_depth']
    assert set(result['frames_per_output']) == set(live.OUTPUT_TOPICS)
    assert 0 < result['latency_ms']['median'] <= result['latency_ms']['p90'] < 5000
    assert result['node_cpu_ms_per_frame'] > 0 and result['pipeline_cpu_ms'] > 0
    assert result['node_publish_ms'] is not None and result['node_publish_ms'] > 0
    assert {'decode', 'network', 'cloud'} <= set(result['node_stage_ms'])
    assert 0 <= result['idle_core_percent'] < 100
    assert result['output_mb_per_frame'] == pytest.approx(160 * 120 * 24 / 1e6)
    text = '\n'.join(command.format_live(result))
    assert 'depth delivered' in text and 'beyond' in text and 'idle node' in text
    assert 'CPU ms per camera frame: node' in text
    result.update(model_name='tiny_test_model', rclpy='x')
    text = report.render_markdown({'live': result, 'machine': {}}, level=3)
    assert '### Live on ROS 2 (rclpy x, Fast DDS)' in text and '| 160x120 at 15 Hz |' in text


def test_node_parameters_reach_the_node_command_line():
    cmd = live._node_command(
        'm.onnx',
        'openvino',
        'cpu',
        None,
        False,
        'int8',
        {
            'frames_in_flight': 1,
            'publish_cloud': False,
        },
    )
    assert cmd[cmd.index('frames_in_flight:=1') - 1] == '-p'
    assert 'publish_cloud:=false' in cmd and 'precision:=int8' in cmd


def test_process_cpu_counts_every_thread_of_a_process():
    start = live.process_cpu_s(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert live.process_cpu_s(os.getpid()) > start


def test_the_live_run_names_the_node_as_the_node_does():
    from moa_depth_ros.runtime import node

    assert live.NODE_NAME == node.NODE_NAME
