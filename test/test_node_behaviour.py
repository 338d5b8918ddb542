"""depth_node in this process (real rclpy, real Fast DDS): behaving like the nodes around it.

- lazy: with no subscriber on any output a frame is not processed and /diagnostics says so;
  the first output follows a subscriber within a frame period plus one inference;
- standard QoS overrides (``qos_overrides.<topic>.subscription.depth``) reach the inputs;
- steady-clock timers: /diagnostics keeps coming with use_sim_time and no /clock;
- bounded memory: 2000 distinct corrupt frames leave the node's Python memory flat.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from ros_graph import diagnostic_values, grey_image_msg, header, wait_for
from tiny_model import write_tiny_onnx

from moa_depth_ros.frame.outputs import OUTPUT_BY_KEY

pytestmark = pytest.mark.ros2

W, H = 40, 30
DEPTH_TOPIC = '/' + OUTPUT_BY_KEY['depth'].topic


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


@pytest.fixture
def probe(graph):
    """Play the camera and read /diagnostics; no output subscriber unless a test makes one."""
    from diagnostic_msgs.msg import DiagnosticArray

    probe = graph.probe()
    probe.diagnostics = probe.subscribe(DiagnosticArray, '/diagnostics')
    return probe


def reliable_camera(probe, node):
    from sensor_msgs.msg import Image

    camera = probe.publisher(Image, '/image')
    assert wait_for(lambda: node.input_reliability() == 'reliable', 10.0)
    assert wait_for(lambda: not node._replacing, 5.0)
    return camera


def test_no_subscriber_no_image_subscription_and_diagnostics_say_so(make_node, probe):
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import Image

    node = make_node(diagnostics_period_s=0.2, publish_cloud=False)
    camera = probe.publisher(Image, '/image')
    period_s = 1 / 15
    for sec in range(10):  # a camera streams; nobody wants depth
        camera.publish(grey_image_msg(W, H, 128, sec=sec))
        time.sleep(period_s)
    assert camera.get_subscription_count() == 0  # as depth_image_proc: not even subscribed
    assert probe.subscriber_reliabilities('/image', 'moa_depth_node') == []
    status = probe.diagnostics.wait(1, 5.0)[-1]
    level, message, values = diagnostic_values(status)
    assert level == ord(DiagnosticStatus.OK) and message.startswith('idle: no subscriber'), message
    assert node._worker.stats.submitted == 0  # the network never ran

    # A subscriber appears while the camera streams: the first depth within a frame period
    # plus one inference (plus the time the node's publisher takes to match the reader).
    depth = probe.subscribe(Image, DEPTH_TOPIC)
    subscribed_s = time.monotonic()
    first_s = None
    sec = 100
    while first_s is None and time.monotonic() - subscribed_s < 5.0:
        camera.publish(grey_image_msg(W, H, 128, sec=sec))
        sec += 1
        if depth.wait(1, period_s):
            first_s = time.monotonic()
    assert first_s is not None
    latency_s = first_s - subscribed_s
    values = dict(node._stats.snapshot(dropped=0, failed=0).values)
    inference_ms = float(values['latency total (ms)'].split('max ')[1])
    # Matching the new reader takes a few ms on loopback; 100 ms covers a loaded machine.
    assert latency_s < period_s + inference_ms / 1e3 + 0.1, (latency_s, inference_ms)
    print(f'first depth {latency_s * 1e3:.0f} ms after the subscriber appeared')


def test_qos_overrides_reach_the_input_subscriptions(make_node, probe):
    from sensor_msgs.msg import Image

    # ROS 2's standard override parameters, as a launch file or an override file sets them.
    node = make_node(**{'qos_overrides./image.subscription.depth': 2})
    probe.subscribe(Image, DEPTH_TOPIC)  # the image is subscribed while someone listens
    reliable_camera(probe, node)
    (subscription,) = node._inputs['image'].subscriptions.values()
    assert subscription.qos_profile.depth == 2
    for info in node._inputs['camera_info'].subscriptions.values():
        assert info.qos_profile.depth == 5  # not overridden
    # Declared (read-only, as rclpy declares them) and listed like any parameter.
    assert node.get_parameter('qos_overrides./image.subscription.depth').value == 2
    assert node.has_parameter('qos_overrides./diagnostics.publisher.reliability')


def test_timers_run_on_the_steady_clock_when_ros_time_stalls(make_node, probe):
    # use_sim_time without a /clock publisher: ROS time stands at 0. The diagnostics and the
    # graph poll (input_reliability auto) must keep running.
    from sensor_msgs.msg import Image

    node = make_node(use_sim_time=True, diagnostics_period_s=0.2)
    assert len(probe.diagnostics.wait(2, 5.0)) >= 2, 'no /diagnostics with ROS time stalled'
    probe.subscribe(Image, DEPTH_TOPIC)
    probe.publisher(Image, '/image', reliable=True)
    assert wait_for(lambda: node.input_reliability() == 'reliable', 10.0)
    assert node._graph_timer.clock.clock_type == node._diagnostics_timer.clock.clock_type
    assert node.get_clock().now().nanoseconds == 0  # ROS time did stall


def test_2000_distinct_corrupt_frames_leave_memory_flat(make_node, probe):
    from sensor_msgs.msg import Image

    node = make_node(publish_cloud=False)
    probe.subscribe(Image, DEPTH_TOPIC)  # someone listens: frames are processed
    camera = reliable_camera(probe, node)

    def corrupt(i: int) -> Image:
        # rgb8 with fewer bytes than step*height: each message names its own byte count.
        msg = Image(header=header(sec=i), height=H, width=W, encoding='rgb8', step=3 * W)
        msg.data = bytes(10 + i)
        return msg

    def stream(first: int, count: int) -> None:
        failed = node._worker.stats.failed
        for i in range(first, first + count):
            camera.publish(corrupt(i))
            # Paced at what the worker takes, so each frame is processed (and logged).
            wait_for(lambda n=i - first + 1: node._worker.stats.failed >= failed + n, 1.0, 0.001)

    stream(0, 200)  # warm-up: rclpy's and the logger's own first allocations
    tracemalloc.start(5)
    try:
        before = tracemalloc.take_snapshot()
        stream(200, 1800)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert node._worker.stats.failed >= 1900, node._worker.stats
    ours = [tracemalloc.Filter(True, '*/moa_depth_ros/*')]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), 'filename')
    )
    # The old throttle kept one entry per distinct message: ~250 kB for 1800 frames.
    assert grown < 32_000, after.filter_traces(ours).compare_to(
        before.filter_traces(ours), 'lineno'
    )[:5]


def test_the_qos_overrides_example_file_applies_to_the_node(graph, probe, model_path):
    # config/qos_overrides.yaml as a --params-file gives: its nested keys are the dotted
    # parameter names rclpy declares for the node's publishers and subscriptions.
    from pathlib import Path

    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy
    import yaml

    from moa_depth_ros.runtime.node import DepthNode

    path = Path(__file__).resolve().parents[1] / 'config' / 'qos_overrides.yaml'
    document = yaml.safe_load(path.read_text())['/**']['ros__parameters']

    def flatten(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from flatten(f'{prefix}.{key}' if prefix else key, inner)
        else:
            yield prefix, value

    overrides = dict(flatten('', document))
    assert overrides['qos_overrides./camera/points.publisher.reliability'] == 'best_effort'
    node = graph.add(
        DepthNode(
            context=graph.context,
            namespace='/camera',
            cli_args=['--ros-args', '-r', 'image:=image_raw'],  # as the launch file remaps
            parameter_overrides=[
                Parameter('model_path', value=model_path),
                Parameter('backend', value='onnxruntime'),
                *[Parameter(name, value=value) for name, value in overrides.items()],
            ],
        )
    )
    from sensor_msgs.msg import Image

    probe.subscribe(Image, '/camera/depth/image_rect')  # the image is subscribed once wanted
    assert wait_for(lambda: node._inputs.get('image') and node._inputs['image'].subscriptions)
    for name, value in overrides.items():
        assert node.get_parameter(name).value == value, name  # declared: the names are right
    for subscription in node._inputs['image'].subscriptions.values():
        assert subscription.qos_profile.depth == 2
    points = node._publishers_by_topic['points'].qos_profile
    assert (points.reliability, points.depth) == (ReliabilityPolicy.BEST_EFFORT, 1)
    assert node._publishers_by_topic['depth'].qos_profile.depth == 2
    info = node._publishers_by_topic['depth_info'].qos_profile
    assert (info.reliability, info.depth) == (ReliabilityPolicy.RELIABLE, 5)  # the defaults
