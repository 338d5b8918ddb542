"""depth_node as its own process: input from a camera's first frame, windowed loss, idle CPU.

The node runs as a robot runs it (the installed console script, real Fast DDS); the camera,
a parameter client and /diagnostics live in this process, on a private ROS domain.

- A reliable VGA camera started after the node delivers its frames from its first one (the
  node reads both ways until it knows the publishers; before, it read best effort for up to
  a second and lost 11-15 % of such frames).
- Transport loss is judged over a sliding window: /diagnostics is OK again within 5 s of a
  lossy stretch ending (it counted since start and stayed WARN for many seconds).
- With a camera streaming and nobody subscribed to any output the node does not subscribe to
  the image (no transfer, no decode, no inference): its CPU use is measured (README).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from ros_graph import image_msg, wait_for
from test_node_live import NODE, NS, Live
from tiny_model import write_tiny_onnx

pytestmark = [pytest.mark.ros2]

VGA = (480, 640, 3)
RATE_HZ = 15.0


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


def started_node(domain_id, tmp_path, model_path, *params):
    """Start the node process; this process plays the camera and reads /diagnostics.

    No output subscriber: a test subscribes when it wants depth.
    """
    node = Live(
        domain_id, tmp_path, model_path, 'diagnostics_period_s:=0.5', *params,
        subscribe_outputs=False,
    )  # fmt: skip
    node.wait_started()
    return node


def stream(camera, frames, first_sec=1000, stop=None):
    """Publish VGA frames at RATE_HZ on an absolute schedule; return how many were sent."""
    rgb = np.random.default_rng(0).integers(0, 255, VGA, dtype=np.uint8)
    start = time.monotonic()
    for i in range(frames):
        if stop is not None and stop.is_set():
            return i
        camera.publish(image_msg(rgb, sec=first_sec + i))
        time.sleep(max(0.0, start + (i + 1) / RATE_HZ - time.monotonic()))
    return frames


def test_a_reliable_camera_started_after_the_node_delivers_from_its_first_frame(
    ros_domain, tmp_path, model_path
):
    from sensor_msgs.msg import Image

    node = started_node(ros_domain, tmp_path, model_path)
    try:
        node.probe.subscribe(Image, f'{NS}/depth/confidence')  # someone listens
        camera = node.camera(reliable=True)
        # As a driver does: stream as soon as the node's reader is matched (frames before
        # that no QoS can deliver: the camera's writer is volatile).
        assert wait_for(lambda: camera.get_subscription_count() >= 1, 10.0)
        frames = 100
        stream(camera, frames)
        _, _, values = node.last_status(
            lambda level, message, v: int(v['frames received']) >= frames, timeout_s=10.0
        )
        received = int(values['frames received'])
        print(f'delivered {received}/{frames} frames from the first')
        assert received >= 0.99 * frames, values
        assert values['frames lost in transport'] == '0', values
    finally:
        node.close()


def test_diagnostics_are_ok_within_5_s_of_transport_loss_ending(ros_domain, tmp_path, model_path):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from sensor_msgs.msg import Image

    # Forced best effort beside a reliable VGA camera: Fast DDS loses frames (the lossy
    # stretch); then reliable: the loss ends.
    node = started_node(
        ros_domain,
        tmp_path,
        model_path,
        'input_reliability:=best_effort',
        'publish_cloud:=false',  # no camera_info here: OK means no loss
    )
    stop = threading.Event()
    try:
        node.probe.subscribe(Image, f'{NS}/depth/confidence')
        camera = node.camera(reliable=True)
        assert wait_for(lambda: camera.get_subscription_count() >= 1, 10.0)
        streamer = threading.Thread(target=stream, args=(camera, 100_000, 1, stop), daemon=True)
        streamer.start()
        level, message, values = node.last_status(
            lambda level, message, v: 'lost before reaching the node' in message, timeout_s=20.0
        )
        print(f'lossy: {message}')
        client = AsyncParameterClient(node.probe, NODE)
        assert client.wait_for_services(10.0)
        future = client.set_parameters([Parameter('input_reliability', value='reliable')])
        assert wait_for(future.done, 10.0) and future.result().results[0].successful
        ended_s = time.monotonic()
        level, message, values = node.last_status(
            lambda level, message, v: level == 0,  # DiagnosticStatus.OK
            timeout_s=10.0,
        )
        recovered_s = time.monotonic() - ended_s
        print(f'/diagnostics OK {recovered_s:.1f} s after the loss ended: {message}')
        assert recovered_s <= 5.0
    finally:
        stop.set()
        node.close()


def _cpu_s(pid: int) -> float:
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_nobody_listening_costs_almost_no_cpu(ros_domain, tmp_path, model_path):
    node = started_node(ros_domain, tmp_path, model_path)
    stop = threading.Event()
    try:
        camera = node.camera(reliable=True)
        streamer = threading.Thread(target=stream, args=(camera, 100_000, 1, stop), daemon=True)
        streamer.start()
        node.last_status(lambda level, message, v: message.startswith('idle'), timeout_s=10.0)
        # As depth_image_proc: nobody listens, so the node does not even subscribe.
        assert camera.get_subscription_count() == 0
        pid = node.process.process.pid
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        time.sleep(10.0)
        share = (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
        _, message, values = node.last_status()
        print(f'idle node CPU: {100 * share:.2f} % of a core ({message})')
        assert camera.get_subscription_count() == 0 and values['frames received'] == '0'
        # Target < 2 % (README); the bound leaves room for a loaded CI machine.
        assert share < 0.05, share
    finally:
        stop.set()
        node.close()
