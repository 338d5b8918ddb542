"""The codec on rosidl-generated (rclpy) message classes: the real sensor_msgs of ROS 2.

The generated setters check types: an ``int`` field refuses numpy integers, ``uint8[]``
keeps an ``array.array('B')`` as is (anything else is checked element by element). Needs
the message packages (the ros-jazzy-* wheels or a ROS installation), not DDS.
"""

from __future__ import annotations

import array

import numpy as np
import pytest

from moa_depth_ros.frame import cdr, msgs
from moa_depth_ros.frame.geometry import CameraModel, make_cloud


@pytest.fixture
def sensor_msgs():
    return pytest.importorskip('sensor_msgs.msg', reason='ROS 2 message packages not installed')


def test_images_fill_through_the_array_fast_path_and_decode_back(sensor_msgs):
    depth = np.linspace(0.5, 4.0, 12, dtype=np.float32).reshape(3, 4)
    msg = msgs.fill_image_msg(sensor_msgs.Image(), msgs.encode_depth(depth, '16UC1'))
    assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
    assert (msg.height, msg.width, msg.step, msg.encoding) == (3, 4, 8, '16UC1')
    np.testing.assert_allclose(msgs.decode_depth(msg), depth, atol=5e-4)
    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    msg = msgs.fill_image_msg(sensor_msgs.Image(), msgs.encode_rgb(rgb))
    np.testing.assert_array_equal(msgs.decode_image(msg), rgb)


def test_the_published_cloud_bytes_are_a_point_cloud2_for_rclpy(sensor_msgs):
    serialization = pytest.importorskip('rclpy.serialization', reason='rclpy not installed')
    camera = CameraModel(width=4, height=3, fx_px=3.0, fy_px=3.0, cx_px=1.5, cy_px=1.0)
    rgb = np.full((3, 4, 3), 200, np.uint8)
    cloud = make_cloud(np.full((3, 4), 1.5, np.float32), camera, rgb=rgb)
    raw = cdr.point_cloud(cdr.Header(1, 2, 'cam'), msgs.encode_cloud(cloud))
    msg = serialization.deserialize_message(raw, sensor_msgs.PointCloud2)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.nanosec == 2
    assert all(isinstance(f, sensor_msgs.PointField) for f in msg.fields)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'rgb']
    assert isinstance(msg.data, array.array) and msg.is_dense is False
    points = msgs.decode_cloud(msg)
    assert points.shape == (3, 4)
    np.testing.assert_array_equal(points['z'], 1.5)
    np.testing.assert_array_equal(msgs.unpack_rgb(points['rgb']), rgb)


def test_camera_info_fields_fit_the_generated_setters(sensor_msgs):
    camera = CameraModel(
        width=64,
        height=48,
        fx_px=50.0,
        fy_px=51.0,
        cx_px=31.5,
        cy_px=23.5,
        distortion_model='plumb_bob',
        d=(-0.2, 0.05, 0.0, 0.0, 0.0),
    ).scaled(32, 24)
    msg = sensor_msgs.CameraInfo()
    for name, value in camera.to_camera_info_fields().items():
        setattr(msg, name, sensor_msgs.RegionOfInterest(**value) if name == 'roi' else value)
    assert CameraModel.from_camera_info(msg) == camera
