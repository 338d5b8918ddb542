"""depth_node against the rclpy stand-in (test/fake_rclpy): every line of node.py runs here.

What a user of the node would notice: which topics and parameters exist, that a frame
comes out as depth + camera_info + confidence + cloud with the image's stamp and frame,
that a missing camera_info or a bad frame costs the cloud or that frame only, that
parameter changes apply or are refused with a reason, and that Ctrl-C exits cleanly.
"""

from __future__ import annotations

import threading
import time

import cv2
import fake_rclpy
from fake_rclpy.tiny_model import expected_depth_m, write_tiny_onnx
import numpy as np
import pytest

from moa_depth_ros import msgs, params
from moa_depth_ros.errors import ConfigError

W, H = 40, 30
FX, FY, CX, CY = 50.0, 52.0, 19.5, 14.5
OUTPUTS = ('/depth', '/depth/camera_info', '/depth/confidence', '/points', '/depth/colored')


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


@pytest.fixture
def ros(monkeypatch):
    """Install and initialise the rclpy stand-in; forget it after the test."""
    rclpy = fake_rclpy.install(monkeypatch)
    rclpy.logging.RECORDS.clear()
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()
    fake_rclpy.uninstall()


@pytest.fixture
def make_node(ros, model_path):
    """Build DepthNode with parameter overrides; destroy every node at teardown."""
    from rclpy.parameter import Parameter

    from moa_depth_ros import node as node_module

    nodes = []

    def make(**overrides):
        values = {'model_path': model_path, **overrides}
        node = node_module.DepthNode(
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if not node.fake_destroyed:
            node.destroy_node()


def logs(severity=None):
    import rclpy.logging

    return [m for s, _, m in rclpy.logging.RECORDS if severity is None or s == severity]


def publishers(node):
    return {p.topic_name: p for p in node.publishers}


def subscriptions(node):
    return {s.topic_name: s for s in node.subscriptions}


def published(node, topic):
    return publishers(node)[topic].fake_published


def wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def header(sec=12, nanosec=345, frame_id='camera_optical_frame'):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_msg(grey=128, encoding='rgb8', **header_kwargs):
    from sensor_msgs.msg import Image

    rgb = np.full((H, W, 3), grey, dtype=np.uint8)
    msg = Image(header=header(**header_kwargs))
    return msgs.fill_image_msg(msg, msgs.encode_rgb(rgb)) if encoding == 'rgb8' else msg


def camera_info_msg(width=W, height=H, fx=FX, d=(0.0, 0.0, 0.0, 0.0, 0.0)):
    from sensor_msgs.msg import CameraInfo

    k = [fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    return CameraInfo(
        header=header(),
        width=width,
        height=height,
        distortion_model='plumb_bob',
        d=list(d),
        k=k,
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def send(node, topic, msg):
    subscriptions(node)[topic].callback(msg)


def set_param(node, name, value):
    from rclpy.parameter import Parameter

    (result,) = node.set_parameters([Parameter(name, value=value)])
    return result


def test_startup_declares_typed_documented_parameters_and_topics(make_node):
    from rclpy.qos import ReliabilityPolicy

    node = make_node()
    for spec in params.SPECS:
        descriptor = node.describe_parameter(spec.name)
        assert descriptor.description, spec.name
        assert descriptor.read_only == spec.read_only, spec.name
        assert type(node.get_parameter(spec.name).value) is type(spec.default), spec.name
    assert node.describe_parameter('cloud_decimation').integer_range[0].to_value == 16

    subs = subscriptions(node)
    assert set(subs) == {'/image', '/camera_info'}
    assert all(s.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for s in subs.values())
    pubs = publishers(node)
    assert set(pubs) == set(OUTPUTS) | {'/diagnostics'}
    assert all(pubs[t].qos_profile.reliability == ReliabilityPolicy.RELIABLE for t in OUTPUTS)
    assert any('tiny_test_model via onnxruntime' in m for m in logs('INFO'))


def test_frame_gives_depth_info_confidence_and_cloud_on_the_image_rays(make_node):
    node = make_node(publish_colored=True)
    send(node, '/camera_info', camera_info_msg())
    send(node, '/image', image_msg(grey=128, sec=1700000000, nanosec=123456789))
    assert wait_for(lambda: published(node, '/depth/colored'))

    (depth,) = published(node, '/depth')
    assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == (1700000000, 123456789)
    assert depth.header.frame_id == 'camera_optical_frame'
    assert (depth.encoding, depth.height, depth.width) == ('32FC1', H, W)
    depth_m = msgs.decode_depth(depth)
    np.testing.assert_allclose(depth_m, expected_depth_m(128), rtol=1e-5)

    (info,) = published(node, '/depth/camera_info')
    assert (info.width, info.height, info.header) == (W, H, depth.header)
    np.testing.assert_allclose(info.k, [FX, 0, CX, 0, FY, CY, 0, 0, 1])

    (confidence,) = published(node, '/depth/confidence')
    assert confidence.encoding == '32FC1' and confidence.header == depth.header
    np.testing.assert_allclose(msgs.decode_depth(confidence), 128 / 255, rtol=1e-5)

    (cloud,) = published(node, '/points')
    assert cloud.header == depth.header
    assert (cloud.height, cloud.width) == (H, W)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
    points = msgs.decode_cloud(cloud)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(points['z'], depth_m, rtol=1e-5)
    np.testing.assert_allclose(points['x'], (u - CX) / FX * depth_m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(points['y'], (v - CY) / FY * depth_m, rtol=1e-4, atol=1e-5)
    assert (msgs.unpack_rgb(points['rgb']) == 128).all()

    (colored,) = published(node, '/depth/colored')
    assert (colored.encoding, colored.header) == ('bgr8', depth.header)


def test_without_camera_info_depth_still_flows_and_the_reason_is_logged_once(make_node):
    node = make_node()
    for i in range(3):
        send(node, '/image', image_msg(sec=i))
        assert wait_for(lambda i=i: len(published(node, '/depth')) == i + 1)
    assert published(node, '/points') == [] and published(node, '/depth/camera_info') == []
    warnings = [m for m in logs('WARN') if 'no CameraInfo received on /camera_info' in m]
    assert len(warnings) == 1

    # Once camera_info arrives the cloud follows; a repeated identical info changes nothing.
    send(node, '/camera_info', camera_info_msg())
    send(node, '/image', image_msg())
    assert wait_for(lambda: len(published(node, '/points')) == 1)
    send(node, '/camera_info', camera_info_msg())
    send(node, '/image', image_msg())
    assert wait_for(lambda: len(published(node, '/points')) == 2)


def test_bad_frames_are_logged_with_the_reason_and_skipped(make_node):
    from sensor_msgs.msg import Image

    node = make_node()
    bad = Image(header=header(), height=H, width=W, encoding='weird9', step=W, data=b'\0' * W * H)
    send(node, '/image', bad)
    assert wait_for(lambda: any('weird9' in m for m in logs('WARN')))
    warning = next(m for m in logs('WARN') if 'weird9' in m)
    assert 'skipped a frame: InvalidImageError' in warning

    # A camera_info for another size: that frame is skipped too, with the sizes named.
    send(node, '/camera_info', camera_info_msg(width=64, height=48))
    send(node, '/image', image_msg())
    assert wait_for(lambda: any('CameraInfoError' in m for m in logs('WARN')))

    send(node, '/camera_info', camera_info_msg())
    send(node, '/image', image_msg())
    assert wait_for(lambda: published(node, '/points'))
    assert len(published(node, '/depth')) == 1  # the two bad frames published nothing


def test_unusable_camera_info_costs_the_cloud_not_the_depth(make_node):
    node = make_node()
    send(node, '/camera_info', camera_info_msg(fx=0.0))
    send(node, '/image', image_msg(frame_id=''))
    assert wait_for(lambda: published(node, '/depth'))
    assert published(node, '/points') == []
    assert any('unusable camera_info' in m for m in logs('WARN'))
    assert any('empty header.frame_id' in m for m in logs('WARN'))


def test_parameter_changes_apply_at_run_time(make_node):
    from rclpy.qos import ReliabilityPolicy

    node = make_node()
    send(node, '/camera_info', camera_info_msg())
    for name, value in [
        ('depth_encoding', '16UC1'),
        ('publish_confidence', False),
        ('cloud_decimation', 2),
        ('cloud_rgb', False),
        ('min_depth_m', 2.0),
        ('max_rate_hz', 100.0),
        ('use_sim_time', True),  # not ours: accepted untouched
    ]:
        result = set_param(node, name, value)
        assert result.successful, (name, result.reason)
    assert any('parameters changed: depth_encoding' in m for m in logs('INFO'))
    send(node, '/image', image_msg(grey=0))  # tiny model: 1.0 m, below min_depth_m
    assert wait_for(lambda: published(node, '/points'))
    (depth,) = published(node, '/depth')
    assert depth.encoding == '16UC1'
    assert (msgs.decode_depth(depth) != msgs.decode_depth(depth)).all()  # all NaN: < 2 m
    assert published(node, '/depth/confidence') == []
    (cloud,) = published(node, '/points')
    assert (cloud.height, cloud.width) == (H // 2, W // 2)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z']

    assert set_param(node, 'output_reliability', 'best_effort').successful
    pubs = publishers(node)
    assert all(pubs[t].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for t in OUTPUTS)

    assert set_param(node, 'diagnostics_period_s', 2.5).successful
    assert [t.timer_period_ns for t in node.timers] == [2_500_000_000]

    assert set_param(node, 'subscribe_compressed', True).successful
    from sensor_msgs.msg import CompressedImage

    _, jpeg = cv2.imencode('.jpg', np.full((H, W, 3), 200, np.uint8))
    send(
        node,
        '/image/compressed',
        CompressedImage(header=header(), format='jpeg', data=jpeg.tobytes()),
    )
    assert wait_for(lambda: len(published(node, '/depth')) == 1)
    assert set_param(node, 'subscribe_compressed', False).successful
    assert '/image/compressed' not in subscriptions(node)


@pytest.mark.parametrize(
    ('name', 'value', 'reason'),
    [
        ('model_path', '/other.onnx', 'read-only'),
        ('backend', 'torch', 'read-only'),
        ('depth_encoding', 'mono8', 'depth_encoding must be one of 32FC1, 16UC1'),
        ('max_depth_m', 0.8, 'min_depth_m'),  # with min_depth_m 1.0 below
        ('min_depth_m', 20.0, 'depth range'),  # beyond the model's 10 m
        ('max_rate_hz', -1.0, 'max_rate_hz must be >= 0'),
        ('cloud_decimation', 0, 'out of range'),
        ('publish_cloud', 'yes', 'Wrong parameter type'),
    ],
)
def test_invalid_parameters_are_refused_with_a_reason(make_node, name, value, reason):
    node = make_node(min_depth_m=1.0)
    before = node.get_parameter(name).value
    result = set_param(node, name, value)
    assert not result.successful
    assert reason in result.reason
    assert node.get_parameter(name).value == before


def test_diagnostics_report_rates_latency_drops_and_backend(make_node):
    from diagnostic_msgs.msg import DiagnosticStatus

    node = make_node(publish_cloud=False)
    (timer,) = node.timers
    timer.callback()
    (first,) = published(node, '/diagnostics')
    assert first.status[0].level == DiagnosticStatus.STALE  # no image yet

    for i in range(6):
        send(node, '/image', image_msg(sec=i))
    assert wait_for(lambda: node._worker.wait_idle(0.1))
    timer.callback()
    status = published(node, '/diagnostics')[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK, status.message
    assert status.hardware_id == values['backend'] == 'onnxruntime'
    received = int(values['frames received'])
    done = int(values['frames published']) + int(values['frames dropped (busy)'])
    assert received == 6 and done == received
    assert 'latency network (ms)' in values and 'latency total (ms)' in values
    assert float(values['input rate (Hz)']) > 0


def test_startup_errors_name_the_parameter(ros, make_node, tmp_path):
    with pytest.raises(ConfigError, match='model_path is empty'):
        make_node(model_path='')
    with pytest.raises(ConfigError, match='relative'):
        make_node(model_path='tiny.onnx')
    with pytest.raises(ConfigError, match='max_depth_m'):
        make_node(min_depth_m=3.0, max_depth_m=2.0)


def test_relative_model_path_resolves_in_the_package_share(make_node, model_path, tmp_path):
    prefix = tmp_path / 'install'
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'moa_depth_ros'
    marker.parent.mkdir(parents=True)
    marker.write_text('')
    models = prefix / 'share' / 'moa_depth_ros' / 'models'
    models.mkdir(parents=True)
    (models / 'tiny.onnx').write_bytes(open(model_path, 'rb').read())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('AMENT_PREFIX_PATH', str(prefix))
        mp.chdir(tmp_path)  # the working directory is never consulted
        make_node(model_path='tiny.onnx')
    assert any(str(models / 'tiny.onnx') in m for m in logs('INFO'))


def _inference_threads():
    return [t for t in threading.enumerate() if t.name == 'moa_depth_inference']


@pytest.mark.parametrize('how', ['KeyboardInterrupt', 'ExternalShutdownException'])
def test_main_runs_a_frame_and_shuts_down_cleanly_on_ctrl_c(ros, model_path, monkeypatch, how):
    import rclpy.executors

    from moa_depth_ros import node as node_module

    ros.try_shutdown()  # main() initialises rclpy itself
    seen = {}

    def spin(nodes):
        (node,) = nodes
        seen['node'] = node
        send(node, '/camera_info', camera_info_msg())
        send(node, '/image', image_msg())
        assert wait_for(lambda: published(node, '/points'))
        assert _inference_threads()
        ros.shutdown()  # what rclpy's signal handler does before spin gives up
        raise getattr(rclpy.executors, how, KeyboardInterrupt)()

    monkeypatch.setattr(rclpy.executors, 'SPIN_HOOK', spin)
    args = ['depth_node', '--ros-args', '-p', f'model_path:={model_path}']
    assert node_module.main(args) == 0
    assert seen['node'].fake_destroyed
    assert not ros.ok()
    assert not _inference_threads()
    assert logs('ERROR') == []
    # The allocator choice is said once, at start (applied on glibc, a debug line elsewhere).
    assert len([m for m in logs() if m.startswith('allocator') or 'freed frame' in m]) == 1


@pytest.mark.parametrize('how', ['KeyboardInterrupt', 'ExternalShutdownException'])
def test_ctrl_c_while_a_frame_is_in_the_network_ends_without_a_traceback(
    ros, model_path, monkeypatch, how
):
    import rclpy.executors

    from moa_depth_ros import node as node_module

    ros.try_shutdown()

    def spin(nodes):
        (node,) = nodes
        started, release = threading.Event(), threading.Event()
        infer = node._pipeline.estimator.infer

        def slow_infer(image):
            started.set()
            release.wait(5.0)
            return infer(image)

        monkeypatch.setattr(node._pipeline.estimator, 'infer', slow_infer)
        send(node, '/image', image_msg())
        assert started.wait(5.0)
        # rclpy's signal thread shuts the context down; the frame then reaches its publishers
        # before the main thread gets to destroy_node.
        ros.shutdown()
        release.set()
        assert node._worker.wait_idle(5.0)
        raise getattr(rclpy.executors, how, KeyboardInterrupt)()

    monkeypatch.setattr(rclpy.executors, 'SPIN_HOOK', spin)
    args = ['depth_node', '--ros-args', '-p', f'model_path:={model_path}']
    assert node_module.main(args) == 0
    assert logs('ERROR') == [] and not any('skipped a frame' in m for m in logs('WARN'))


@pytest.mark.parametrize(
    ('override', 'reason'),
    [
        ('model_path:=/no/such.onnx', '/no/such.onnx'),
        ('max_rate_hz:=10', "expecting type 'DOUBLE'"),  # YAML 10 is an integer
        ('max_depth_m:=8', 'write a decimal point, e.g. 10.0'),
    ],
)
def test_main_reports_a_start_failure_in_one_line_and_exits_1(ros, override, reason):
    from moa_depth_ros import node as node_module

    ros.try_shutdown()
    assert node_module.main(['depth_node', '--ros-args', '-p', override]) == 1
    assert any('cannot start' in m and reason in m for m in logs('FATAL'))
    assert not ros.ok()


def test_shutdown_does_not_hang_on_a_slow_frame(make_node, monkeypatch):
    from moa_depth_ros import node as node_module

    node = make_node()
    started, release = threading.Event(), threading.Event()
    infer = node._pipeline.estimator.infer

    def slow_infer(image):
        started.set()
        release.wait(5.0)
        return infer(image)

    monkeypatch.setattr(node._pipeline.estimator, 'infer', slow_infer)
    monkeypatch.setattr(node_module, '_STOP_TIMEOUT_S', 0.05)
    send(node, '/image', image_msg())
    assert started.wait(5.0)
    begin = time.monotonic()
    node.destroy_node()
    assert time.monotonic() - begin < 2.0
    assert any('did not finish within 0.05 s' in m for m in logs('WARN'))
    release.set()


def test_the_bag_tool_writes_the_topics_the_node_publishes(ros):
    from moa_depth_ros import bag
    from moa_depth_ros import node as node_module

    node_topics = {
        'depth': node_module.DEPTH_TOPIC,
        'depth_info': node_module.DEPTH_INFO_TOPIC,
        'confidence': node_module.CONFIDENCE_TOPIC,
        'points': node_module.POINTS_TOPIC,
        'colored': node_module.COLORED_TOPIC,
    }
    assert node_topics == {key: name for key, (name, _) in bag.OUTPUTS.items()}
