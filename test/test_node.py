"""depth_node in this process on real rclpy over real Fast DDS (a private domain per test).

What a user of the node would notice: which topics and parameters exist, that a frame comes
out as depth + camera_info + confidence + cloud with the image's stamp and frame, that a
missing or unfitting camera_info costs the cloud and a bad frame costs that frame only, that
parameter changes apply or are refused with a reason, that the input subscription follows the
camera's reliability, and that the inference thread survives what it meets (and says so on
/diagnostics when it cannot). The node as its own process: test_node_live.py.
"""

from __future__ import annotations

import threading
import time
import warnings

import cv2
import numpy as np
import pytest
from ros_graph import (
    ERROR,
    WARN,
    camera_info_msg,
    diagnostic_values,
    grey_image_msg,
    header,
    image_msg,
    wait_for,
)
from tiny_model import expected_depth_m, write_tiny_onnx

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame import msgs
from moa_depth_ros.runtime import params

pytestmark = pytest.mark.ros2

W, H = 40, 30
FX, FY, CX, CY = 50.0, 52.0, 19.5, 14.5
NODE = 'moa_depth_node'


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


@pytest.fixture
def probe(graph):
    """Play the camera and the consumers: subscribers of every output."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    probe = graph.probe()
    probe.out = {
        'depth': probe.subscribe(Image, '/depth/image_rect'),
        'info': probe.subscribe(CameraInfo, '/depth/camera_info'),
        'confidence': probe.subscribe(Image, '/depth/confidence'),
        'points': probe.subscribe(PointCloud2, '/points'),
        'colored': probe.subscribe(Image, '/depth/colored'),
        'diagnostics': probe.subscribe(DiagnosticArray, '/diagnostics'),
    }
    return probe


def connected(probe, node):
    """Wait until the node's inputs have settled on the (reliable) camera's reliability."""
    from sensor_msgs.msg import CameraInfo, Image

    # A reliable camera: input_reliability 'auto' follows it within a second.
    probe.publisher(Image, '/image')
    probe.publisher(CameraInfo, '/camera_info')
    for topic in ('image', 'camera_info'):
        assert wait_for(lambda t=topic: node.input_reliability(t) == 'reliable', 10.0), topic
    # ... and the best-effort subscriptions they replaced are gone (they deliver a frame
    # twice until then, which the node takes once by its stamp: test frames share stamps).
    assert wait_for(lambda: not node._replacing, 5.0)


def info():
    return camera_info_msg(W, H, FX, FY, CX, CY)


def image(grey=128, **kwargs):
    return grey_image_msg(W, H, grey, **kwargs)


def set_param(node, name, value):
    from rclpy.parameter import Parameter

    (result,) = node.set_parameters([Parameter(name, value=value)])
    return result


def test_startup_declares_typed_documented_parameters_and_topics(make_node, probe):
    from rclpy.qos import ReliabilityPolicy

    node = make_node(backend='auto')
    for spec in params.SPECS:
        descriptor = node.describe_parameter(spec.name)
        assert descriptor.description, spec.name
        assert descriptor.read_only == spec.read_only, spec.name
        assert type(node.get_parameter(spec.name).value) is type(spec.default), spec.name
    assert node.describe_parameter('cloud_decimation').integer_range[0].to_value == 16

    names = dict(node.get_topic_names_and_types())
    for topic in ('/depth/image_rect', '/depth/camera_info', '/depth/confidence', '/points'):
        (info_,) = [i for i in probe.get_publishers_info_by_topic(topic) if i.node_name == NODE]
        assert info_.qos_profile.reliability == ReliabilityPolicy.RELIABLE, topic
        assert topic in names
    # No camera yet: the image is read both ways, so a camera of either kind is heard from
    # its first frame (a reliable reader loses nothing of a reliable camera).
    assert probe.subscriber_reliabilities('/image', NODE) == ['best_effort', 'reliable']
    assert probe.subscriber_reliabilities('/image/compressed', NODE) == []
    # backend auto: ONNX Runtime or OpenVINO, whichever measured faster on this machine.
    assert probe.wait_log('tiny_test_model via ')


def test_frame_gives_depth_info_confidence_and_cloud_on_the_image_rays(make_node, probe):
    node = make_node(publish_colored=True)
    connected(probe, node)
    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
    probe.send('/image', image(grey=128, sec=1700000000, nanosec=123456789))
    (colored,) = probe.out['colored'].wait(1)

    (depth,) = probe.out['depth'].wait(1)
    assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == (1700000000, 123456789)
    assert depth.header.frame_id == 'camera_optical_frame'
    assert (depth.encoding, depth.height, depth.width) == ('32FC1', H, W)
    depth_m = msgs.decode_depth(depth)
    np.testing.assert_allclose(depth_m, expected_depth_m(128), rtol=1e-5)

    (info_,) = probe.out['info'].wait(1)
    assert (info_.width, info_.height, info_.header) == (W, H, depth.header)
    np.testing.assert_allclose(info_.k, [FX, 0, CX, 0, FY, CY, 0, 0, 1])

    (confidence,) = probe.out['confidence'].wait(1)
    assert confidence.encoding == '32FC1' and confidence.header == depth.header
    np.testing.assert_allclose(msgs.decode_depth(confidence), 128 / 255, rtol=1e-5)

    (cloud,) = probe.out['points'].wait(1)
    assert cloud.header == depth.header
    assert (cloud.height, cloud.width) == (H, W)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
    points = msgs.decode_cloud(cloud)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(points['z'], depth_m, rtol=1e-5)
    np.testing.assert_allclose(points['x'], (u - CX) / FX * depth_m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(points['y'], (v - CY) / FY * depth_m, rtol=1e-4, atol=1e-5)
    assert (msgs.unpack_rgb(points['rgb']) == 128).all()
    assert (colored.encoding, colored.header) == ('bgr8', depth.header)


@pytest.mark.openvino
def test_openvino_backend_gives_the_depth_onnx_runtime_gives(make_node, probe):
    # fp32: the same arithmetic as ONNX Runtime (auto may take the CPU's bf16).
    node = make_node(
        backend='openvino', precision='fp32', publish_cloud=False, diagnostics_period_s=0.2
    )
    assert probe.wait_log('tiny_test_model via openvino')
    connected(probe, node)
    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
    for count, grey in enumerate((128, 200), start=1):
        probe.send('/image', image(grey=grey, sec=grey))
        depth = probe.out['depth'].wait(count)[-1]
        assert depth.header.stamp.sec == grey
        np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(grey), rtol=1e-5)
        confidence = probe.out['confidence'].wait(count)[-1]
        np.testing.assert_allclose(msgs.decode_depth(confidence), grey / 255, rtol=1e-5)
    status = probe.out['diagnostics'].wait_match(
        lambda a: diagnostic_values(a)[2]['frames published'] == '2', timeout_s=5.0
    )
    assert status.status[0].hardware_id == 'openvino'


@pytest.mark.openvino
def test_an_int8_model_runs_with_precision_int8_and_the_fp32_depth_contract(
    make_node, probe, model_path, tmp_path
):
    pytest.importorskip('nncf')
    from test_engine_support import random_image

    from training.quantize import quantize_openvino_int8, split_frames

    frames = split_frames([random_image((24, 32), seed=s) for s in range(10)], 'random')
    int8 = quantize_openvino_int8(model_path, frames, tmp_path / 'tiny.int8.xml').path
    node = make_node(model_path=str(int8), backend='openvino', precision='int8')
    assert probe.wait_log('tiny_test_model via openvino')
    connected(probe, node)
    probe.send('/image', image(grey=128, sec=7))
    depth = probe.out['depth'].wait(1)[-1]
    assert depth.header.stamp.sec == 7 and depth.encoding == '32FC1'
    np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(128), rtol=1e-2)


def test_without_camera_info_depth_still_flows_and_the_reason_is_logged_once(make_node, probe):
    node = make_node()
    connected(probe, node)
    for i in range(3):
        probe.send('/image', image(sec=i))
        assert len(probe.out['depth'].wait(i + 1)) == i + 1
    assert len(probe.out['points']) == 0 and len(probe.out['info']) == 0
    assert probe.wait_log('no CameraInfo received on /camera_info', WARN)
    time.sleep(0.2)
    assert len([m for m in probe.log_lines(WARN) if 'no CameraInfo received' in m]) == 1

    # Once camera_info arrives the cloud follows; a repeated identical info changes nothing.
    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
    probe.send('/image', image())
    assert len(probe.out['points'].wait(1)) == 1
    probe.send('/camera_info', info())
    probe.send('/image', image())
    assert len(probe.out['points'].wait(2)) == 2


def test_a_bad_frame_costs_that_frame_and_says_why(make_node, probe):
    from sensor_msgs.msg import Image

    node = make_node()
    connected(probe, node)
    bad = Image(
        header=header(sec=1), height=H, width=W, encoding='weird9', step=W, data=b'\0' * W * H
    )
    probe.send('/image', bad)
    warning = probe.wait_log('weird9', WARN)
    assert warning and 'skipped a frame: InvalidImageError' in warning
    short = Image(header=header(sec=2), height=H, width=W, encoding='rgb8', step=3 * W, data=b'\0')
    probe.send('/image', short)
    # Same call site and kind (InvalidImageError) within the log throttle period: counted
    # and named on /diagnostics, not logged again (the log throttle is keyed by kind, so
    # per-frame byte counts in messages cannot grow it).
    assert wait_for(lambda: node._worker.stats.failed == 2)
    assert 'fewer than step*height' in node._worker.stats.last_error
    probe.send('/image', image(sec=7))
    (depth,) = probe.out['depth'].wait(1)
    assert depth.header.stamp.sec == 7  # the two bad frames published nothing


@pytest.mark.parametrize(
    ('camera_info', 'problem'),
    [
        (camera_info_msg(64, 48, FX, FY, CX, CY), '64x48 image but the image is 40x30'),
        (camera_info_msg(W, H, 0.0, 0.0, CX, CY), 'focal'),  # uncalibrated: K all zeros
    ],
    ids=['wrong size', 'K all zeros'],
)
def test_unusable_camera_info_costs_the_cloud_not_the_depth(
    make_node, probe, camera_info, problem
):
    node = make_node()
    connected(probe, node)
    probe.send('/camera_info', camera_info)
    assert wait_for(lambda: node._camera_info_msg is not None)
    for sec in range(3):  # one at a time: the node keeps only the newest waiting frame
        probe.send('/image', image(sec=sec, frame_id=''))
        assert len(probe.out['depth'].wait(sec + 1)) == sec + 1
    assert len(probe.out['points']) == 0 and len(probe.out['info']) == 0
    assert probe.wait_log('without a point cloud', WARN)
    assert problem in ' '.join(probe.log_lines(WARN))
    assert probe.wait_log('empty header.frame_id', WARN)
    status = probe.out['diagnostics'].wait_match(
        lambda a: 'camera_info problem' in diagnostic_values(a)[2], timeout_s=5.0
    )
    level, _, values = diagnostic_values(status)
    assert problem in values['camera_info problem']
    assert level != ERROR  # depth flows: a warning at most


def test_a_frame_waits_for_the_camera_info_stamped_like_it(make_node, probe, monkeypatch):
    # The executor can hand over an image before the CameraInfo sent with it, and a small
    # network finishes before that CameraInfo is taken: the frame must not get the previous
    # calibration. A generous wait here keeps the test independent of this machine's speed.
    from moa_depth_ros.runtime import node as node_module

    monkeypatch.setattr(node_module, '_CAMERA_INFO_WAIT_S', 5.0)
    node = make_node()
    connected(probe, node)
    probe.send('/camera_info', camera_info_msg(W, H, FX, FY, CX, CY, sec=1))
    assert wait_for(lambda: node._camera_info_msg is not None)  # the first waits for none
    probe.send('/image', image(sec=1))
    assert probe.out['points'].wait(1)  # paired by stamp: this camera stamps both alike
    probe.send('/image', image(sec=2))
    time.sleep(0.3)  # its CameraInfo comes late, and it does not fit
    probe.send('/camera_info', camera_info_msg(64, 48, FX, FY, CX, CY, sec=2))
    (_, depth) = probe.out['depth'].wait(2)
    assert depth.header.stamp.sec == 2
    assert probe.wait_log('64x48 image but the image is 40x30', WARN)
    assert [m.header.stamp.sec for m in probe.out['points'].messages] == [1]
    # A good calibration again (on time): the cloud is back.
    probe.send('/camera_info', camera_info_msg(W, H, FX, FY, CX, CY, sec=3))
    probe.send('/image', image(sec=3))
    assert wait_for(lambda: [m.header.stamp.sec for m in probe.out['points'].messages] == [1, 3])


def test_a_camera_whose_calibration_stays_the_same_costs_no_wait(make_node, probe, monkeypatch):
    # After _STATIC_CAMERA_INFOS CameraInfos with one calibration, a frame whose own CameraInfo
    # is late takes the newest at once (the same calibration) instead of waiting for it.
    from moa_depth_ros.runtime import node as node_module

    monkeypatch.setattr(node_module, '_CAMERA_INFO_WAIT_S', 5.0)
    node = make_node()
    connected(probe, node)
    last = node_module._STATIC_CAMERA_INFOS
    for sec in range(1, last + 1):  # one at a time: the input history keeps a few
        probe.send('/camera_info', camera_info_msg(W, H, FX, FY, CX, CY, sec=sec))
        assert wait_for(
            lambda sec=sec: (
                getattr(node._camera_info_msg, 'header', None)
                and (node._camera_info_msg.header.stamp.sec == sec)
            )
        )
    assert node._camera_infos_unchanged == last
    probe.send('/image', image(sec=last))  # finds its own: the next frame would wait
    assert probe.out['points'].wait(1)
    started = time.monotonic()
    probe.send('/image', image(sec=last + 1))  # its CameraInfo never comes
    (_, cloud) = probe.out['points'].wait(2, timeout_s=4.0)
    assert time.monotonic() - started < 2.5  # not the 5 s wait
    assert cloud.header.stamp.sec == last + 1  # with the calibration every CameraInfo had


@pytest.mark.parametrize('frames_in_flight', [1, 2])
def test_one_or_two_frames_in_flight_publish_every_frame_in_order(
    make_node, probe, frames_in_flight
):
    node = make_node(frames_in_flight=frames_in_flight)
    connected(probe, node)
    assert node._worker.frames_in_flight == frames_in_flight
    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
    for sec in (1, 2, 3):  # one at a time: each is published, in order
        probe.send('/camera_info', camera_info_msg(W, H, FX, FY, CX, CY, sec=sec))
        probe.send('/image', image(sec=sec, grey=40 * sec))
        probe.out['points'].wait(sec)
    depths = probe.out['depth'].wait(3)
    assert [m.header.stamp.sec for m in depths] == [1, 2, 3]
    assert [m.header.stamp.sec for m in probe.out['points'].messages] == [1, 2, 3]
    assert [m.header.stamp.sec for m in probe.out['info'].wait(3)] == [1, 2, 3]
    stats = node._worker.stats
    assert (stats.processed, stats.failed) == (3, 0)


def test_parameter_changes_apply_at_run_time(make_node, probe):
    from sensor_msgs.msg import CompressedImage

    node = make_node()
    connected(probe, node)
    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
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
    assert probe.wait_log('parameters changed: depth_encoding')
    probe.send('/image', image(grey=0))  # tiny model: 1.0 m, below min_depth_m
    (cloud,) = probe.out['points'].wait(1)
    (depth,) = probe.out['depth'].wait(1)
    assert depth.encoding == '16UC1'
    assert np.isnan(msgs.decode_depth(depth)).all()  # all below 2 m
    assert len(probe.out['confidence']) == 0
    assert (cloud.height, cloud.width) == (H // 2, W // 2)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z']

    assert set_param(node, 'diagnostics_period_s', 2.5).successful
    assert node._diagnostics_timer.timer_period_ns == 2_500_000_000

    depth_best_effort = probe.subscribe(type(depth), '/depth/image_rect', reliable=False)
    assert set_param(node, 'image_transport', 'compressed').successful
    # One transport, as image_transport: the raw subscription is gone.
    assert wait_for(lambda: probe.subscriber_reliabilities('/image', NODE) == [])
    _, jpeg = cv2.imencode('.jpg', np.full((H, W, 3), 200, np.uint8))
    compressed = CompressedImage(header=header(sec=5), format='jpeg', data=jpeg.tobytes())
    probe.send('/image/compressed', compressed)
    assert depth_best_effort.wait_match(lambda m: m.header.stamp.sec == 5)
    assert set_param(node, 'image_transport', 'raw').successful
    assert wait_for(lambda: probe.subscriber_reliabilities('/image/compressed', NODE) == [])


@pytest.mark.parametrize(
    ('name', 'value', 'reason'),
    [
        ('model_path', '/other.onnx', 'read-only'),
        ('backend', 'torch', 'read-only'),
        ('cpu_threads', 3, 'read-only'),
        ('depth_encoding', 'mono8', 'depth_encoding must be one of 32FC1, 16UC1'),
        ('input_reliability', 'sometimes', 'input_reliability must be one of auto'),
        ('max_depth_m', 0.8, 'min_depth_m'),  # with min_depth_m 1.0 below
        ('min_depth_m', 20.0, 'depth range'),  # beyond the model's 10 m
        ('max_rate_hz', -1.0, 'max_rate_hz must be >= 0'),
        ('cloud_decimation', -1, 'out of range'),
        ('publish_cloud', 'yes', 'Wrong parameter type'),
    ],
)
def test_invalid_parameters_are_refused_with_a_reason(make_node, name, value, reason):
    from rclpy.exceptions import InvalidParameterTypeException

    node = make_node(min_depth_m=1.0)
    before = node.get_parameter(name).value
    try:
        result = set_param(node, name, value)
    except InvalidParameterTypeException as e:  # rclpy checks the type before asking us
        assert reason in str(e) or 'type' in str(e)
    else:
        assert not result.successful
        assert reason in result.reason
    assert node.get_parameter(name).value == before


def test_input_reliability_follows_the_camera_and_can_be_forced(make_node, probe):
    from sensor_msgs.msg import Image

    node = make_node()
    assert node.input_reliability() == 'reliable+best_effort'  # nobody publishes yet
    reliable_camera = probe.publisher(Image, '/image', reliable=True)
    assert wait_for(lambda: probe.subscriber_reliabilities('/image', NODE) == ['reliable'], 10.0)
    assert probe.wait_log('/image: now subscribed reliable (input_reliability auto)')
    # A second, best-effort publisher: a reliable reader would not hear it.
    probe.publisher(Image, '/image', reliable=False)
    assert wait_for(lambda: node.input_reliability() == 'best_effort', 10.0)
    assert wait_for(lambda: not node._replacing, 5.0)
    assert wait_for(lambda: reliable_camera.get_subscription_count() == 1)  # best effort: both
    assert set_param(node, 'input_reliability', 'reliable').successful
    assert node.input_reliability() == 'reliable'
    time.sleep(1.5)  # the graph poll does not overrule a forced choice
    assert probe.subscriber_reliabilities('/image', NODE) == ['reliable']
    assert set_param(node, 'input_reliability', 'best_effort').successful
    assert wait_for(lambda: probe.subscriber_reliabilities('/image', NODE) == ['best_effort'])


def test_diagnostics_report_rates_latency_drops_and_backend(make_node, probe):
    from diagnostic_msgs.msg import DiagnosticStatus

    node = make_node(publish_cloud=False, diagnostics_period_s=0.2, backend='onnxruntime')
    first = probe.out['diagnostics'].wait(1)[0]
    assert diagnostic_values(first)[0] == ord(DiagnosticStatus.STALE)  # no image yet

    connected(probe, node)
    # As fast as they go: frames arriving while the network runs are dropped, not queued.
    # (Five: the input history holds five, so none is lost before the node sees it.)
    for i in range(5):
        probe.send('/image', image(sec=i))
    assert wait_for(lambda: node._worker.stats.submitted == 5 and node._worker.wait_idle(0.1))
    status = probe.out['diagnostics'].wait_match(
        lambda a: diagnostic_values(a)[2]['frames received'] == '5', timeout_s=5.0
    )
    level, message, values = diagnostic_values(status)
    assert level == ord(DiagnosticStatus.OK), message
    assert status.status[0].hardware_id == values['backend'] == 'onnxruntime'
    done = int(values['frames published']) + int(values['frames dropped (busy)'])
    assert done == 5
    assert values['frames lost in transport'] == '0'  # Fast DDS reports losses
    assert 'latency network (ms)' in values and 'latency total (ms)' in values
    assert float(values['input rate (Hz)']) > 0


def test_an_unexpected_error_after_a_skipped_frame_does_not_stop_depth(make_node, probe):
    # The first live run's defect: one call site logged a warning (skipped frame) and then an
    # error (bug), which real rclpy refuses with ValueError, killing the inference thread.
    from sensor_msgs.msg import Image

    node = make_node()
    connected(probe, node)
    bad = Image(header=header(), height=H, width=W, encoding='weird9', step=W, data=b'\0' * W * H)
    probe.send('/image', bad)
    assert probe.wait_log('skipped a frame', WARN)
    finish = node._pipeline.finish  # the outputs' half: its own thread (frames_in_flight 2)
    calls = []

    def buggy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError('a bug in frame processing')
        return finish(*args, **kwargs)

    node._pipeline.finish = buggy
    probe.send('/image', image(sec=1))
    assert probe.wait_log('unexpected error while processing a frame', ERROR)
    assert node._worker.is_alive
    probe.send('/image', image(sec=2))
    assert probe.out['depth'].wait_match(lambda m: m.header.stamp.sec == 2)


def test_a_stopped_inference_thread_is_an_error_on_diagnostics(make_node, probe):
    from diagnostic_msgs.msg import DiagnosticStatus

    class Fatal(BaseException):
        """Something no frame handler may swallow (what a dying interpreter raises)."""

    node = make_node(diagnostics_period_s=0.2)
    connected(probe, node)

    def fatal(*args, **kwargs):
        raise Fatal('interpreter is going away')

    node._pipeline.infer_msg = fatal  # the network's half
    probe.send('/image', image())
    assert wait_for(lambda: not node._worker.is_alive)
    status = probe.out['diagnostics'].wait_match(
        lambda a: diagnostic_values(a)[0] == ord(DiagnosticStatus.ERROR), timeout_s=5.0
    )
    level, message, values = diagnostic_values(status)
    assert message == 'inference thread stopped: Fatal: interpreter is going away'
    assert values['inference thread'].startswith('stopped')
    assert probe.wait_log('the inference thread stopped: Fatal', ERROR)


def test_depth_takes_the_cameras_focal_length_and_says_how(graph, probe, tmp_path):
    from rclpy.parameter import Parameter

    from moa_depth_ros.runtime.node import DepthNode

    # A model whose depth is for a canonical camera of focal 25 px at its 32x24 input; the
    # test camera (fx 50, fy 52 px at 40x30) has sqrt(40 * 41.6) = 40.8 px there.
    model = write_tiny_onnx(tmp_path / 'canonical.onnx', canonical_focal_px=25.0)
    node = graph.add(
        DepthNode(
            context=graph.context,
            parameter_overrides=[
                Parameter('model_path', value=model),
                Parameter('backend', value='onnxruntime'),
                Parameter('diagnostics_period_s', value=0.2),
            ],
        )
    )
    connected(probe, node)
    probe.send('/image', image(grey=128, sec=1))
    (depth,) = probe.out['depth'].wait(1)
    np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(128), rtol=1e-5)
    assert probe.wait_log("assumes the model's canonical camera", WARN)
    note = probe.out['diagnostics'].wait_match(
        lambda a: 'canonical camera' in diagnostic_values(a)[2].get('metric scale', '')
    )
    assert note is not None

    probe.send('/camera_info', info())
    assert wait_for(lambda: node._camera_info_msg is not None)
    probe.send('/image', image(grey=128, sec=2))
    depth = probe.out['depth'].wait_match(lambda m: m.header.stamp.sec == 2)
    scale = np.sqrt(FX * 32 / W * FY * 24 / H) / 25.0
    np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(128) * scale, rtol=1e-5)
    status = probe.out['diagnostics'].wait_match(
        lambda a: diagnostic_values(a)[2].get('metric scale', '').startswith(f'x{scale:.3f}')
    )
    assert status is not None
    from rclpy.parameter import Parameter as P

    # A limit the model cannot reach on this camera: its 0.5 m minimum is 0.82 m here.
    refused = node.set_parameters([P('max_depth_m', value=0.7)])[0]
    assert not refused.successful and 'on this camera' in refused.reason, refused.reason
    assert node.set_parameters([P('focal_length_correction', value=False)])[0].successful
    probe.send('/image', image(grey=128, sec=3))
    depth = probe.out['depth'].wait_match(lambda m: m.header.stamp.sec == 3)
    np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(128), rtol=1e-5)
    assert len([m for m in probe.log_lines(WARN) if 'canonical camera' in m]) == 1  # once
    assert node.set_parameters([P('max_depth_m', value=0.7)])[0].successful  # no conversion


def test_startup_errors_name_the_parameter(make_node):
    with pytest.raises(ConfigError, match='model_path is empty'):
        make_node(model_path='')
    with pytest.raises(ConfigError, match='relative'):
        make_node(model_path='tiny.onnx')
    with pytest.raises(ConfigError, match='max_depth_m'):
        make_node(min_depth_m=3.0, max_depth_m=2.0)


def test_relative_model_path_resolves_in_the_package_share(make_node, model_path, probe, tmp_path):
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
    assert probe.wait_log(str(models / 'tiny.onnx'))


def test_shutdown_does_not_hang_on_a_slow_frame(make_node, probe, monkeypatch, graph):
    from moa_depth_ros.runtime import node as node_module

    node = make_node()
    connected(probe, node)
    started, release = threading.Event(), threading.Event()
    infer = node._pipeline.estimator.infer

    def slow_infer(image):
        started.set()
        release.wait(5.0)
        return infer(image)

    monkeypatch.setattr(node._pipeline.estimator, 'infer', slow_infer)
    monkeypatch.setattr(node_module, '_STOP_TIMEOUT_S', 0.05)
    probe.send('/image', image())
    assert started.wait(5.0)
    begin = time.monotonic()
    graph.destroy(node)
    assert time.monotonic() - begin < 2.0
    release.set()


def test_space_clip_on_siglip_runs_in_the_node_and_flip_averages_at_run_time(
    make_node, probe, tmp_path
):
    # Issue 16's end to end: the space_clip_siglip preset (a tiny SigLIP tower) exported and
    # served by the node, whose flip_average switch gives the pipeline's flip-averaged depth.
    pytest.importorskip('open_clip', reason='building the model needs the training stack')
    from model_fixtures import perturb_batchnorm, tiny_siglip_space_clip
    import torch

    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig
    from training.onnx_export import export_onnx

    model = tiny_siglip_space_clip(seed=3).eval()
    perturb_batchnorm(model)
    with torch.no_grad():  # depth inside the range, where it follows the image (not clamped)
        for head in [model.depth_prediction_head, *model.aux_depth_heads]:
            head[3].bias.fill_(2.0)
    with warnings.catch_warnings():  # timm's input-size checks, fixed at this size
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        path = export_onnx(model, tmp_path / 'siglip.onnx').path
    rgb = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    reference = load_engine(path, backend='onnxruntime')
    want = {
        flip: DepthPipeline(
            reference, PipelineConfig(cloud=False, focal_correction=False, flip_average=flip)
        )
        .process_rgb(rgb)
        .depth_m
        for flip in (False, True)
    }
    reference.close()
    assert np.abs(want[True] - want[False]).max() > 1e-3  # the mirror pass changes the depth

    node = make_node(model_path=str(path), backend='onnxruntime', focal_length_correction=False)
    assert probe.wait_log('space_clip via onnxruntime')
    connected(probe, node)
    probe.send('/image', image_msg(rgb, sec=1))
    depth = probe.out['depth'].wait_match(lambda m: m.header.stamp.sec == 1)
    np.testing.assert_allclose(msgs.decode_depth(depth), want[False], rtol=1e-5, atol=1e-6)
    assert set_param(node, 'flip_average', True).successful
    probe.send('/image', image_msg(rgb, sec=2))
    depth = probe.out['depth'].wait_match(lambda m: m.header.stamp.sec == 2)
    np.testing.assert_allclose(msgs.decode_depth(depth), want[True], rtol=1e-5, atol=1e-6)
