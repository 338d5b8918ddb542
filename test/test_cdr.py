"""The serialized outputs: byte for byte what rosbags writes, and what rclpy reads back.

``moa_depth_ros.frame.cdr`` writes CDR itself (the node publishes the bytes, the bag tool writes
them), so it is held against two independent implementations: rosbags' serializer (equal
bytes, zero padding included) for every distribution the bag tool writes, and the
middleware's own deserializer through rclpy where ROS 2 is installed. Fields are chosen to
hit every alignment: frame ids and names of each length modulo 4, distortion vectors of each
length, padded point layouts.
"""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from moa_depth_ros.frame import cdr, geometry, msgs

STORES = [Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY, Stores.ROS2_KILTED]


def _rosbags_header(T, header):
    stamp = T['builtin_interfaces/msg/Time'](sec=header.sec, nanosec=header.nanosec)
    return T['std_msgs/msg/Header'](stamp=stamp, frame_id=header.frame_id)


def _image_cases():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 4.0, (3, 5)).astype(np.float32)
    depth[0, 0] = np.nan
    return [
        ('rgb8', msgs.encode_rgb(rgb)),
        ('32FC1', msgs.encode_depth(depth)),
        ('16UC1', msgs.encode_depth(depth, '16UC1')),
        ('bgr8 preview', msgs.encode_colored_depth(depth, 0.5, 4.0)),
    ]


@pytest.mark.parametrize('store', STORES, ids=lambda s: s.name)
@pytest.mark.parametrize('frame_id', ['', 'c', 'ca', 'cam', 'cam_', 'camera_optical_frame'])
def test_images_serialize_exactly_as_rosbags_does(store, frame_id):
    ts = get_typestore(store)
    T = ts.types
    header = cdr.Header(1_700_000_000, 123_456_789, frame_id)
    for name, fields in _image_cases():
        reference = T['sensor_msgs/msg/Image'](
            header=_rosbags_header(T, header),
            height=fields.height,
            width=fields.width,
            encoding=fields.encoding,
            is_bigendian=fields.is_bigendian,
            step=fields.step,
            data=np.asarray(fields.data),
        )
        ours = cdr.image(header, fields)
        assert ours == bytes(ts.serialize_cdr(reference, 'sensor_msgs/msg/Image')), name
        back = ts.deserialize_cdr(ours, 'sensor_msgs/msg/Image')
        np.testing.assert_array_equal(back.data, fields.data)


def _camera(distortion_model, d, width=64, height=48):
    return geometry.CameraModel(
        width=width,
        height=height,
        fx_px=50.5,
        fy_px=51.25,
        cx_px=31.5,
        cy_px=23.5,
        distortion_model=distortion_model,
        d=d,
    )


CAMERAS = [
    _camera('plumb_bob', (-0.2, 0.05, 0.001, -0.001, 0.0)),
    _camera('rational_polynomial', (-0.2, 0.05, 0.001, -0.001, 0.01, 0.1, 0.02, 0.003)),
    _camera('equidistant', (0.1, -0.01, 0.001, 0.0)),
    _camera('', ()),
    _camera('plumb_bob', (-0.2, 0.05, 0.001, -0.001, 0.0)).scaled(33, 25),
]


@pytest.mark.parametrize('store', STORES, ids=lambda s: s.name)
@pytest.mark.parametrize('camera', CAMERAS, ids=lambda c: c.distortion_model or 'none')
def test_camera_info_serializes_exactly_as_rosbags_does(store, camera):
    ts = get_typestore(store)
    T = ts.types
    fields = camera.to_camera_info_fields()
    header = cdr.Header(7, 8, 'cam')
    reference = T['sensor_msgs/msg/CameraInfo'](
        header=_rosbags_header(T, header),
        height=fields['height'],
        width=fields['width'],
        distortion_model=fields['distortion_model'],
        d=np.asarray(fields['d'], dtype=np.float64),
        k=np.asarray(fields['k'], dtype=np.float64),
        r=np.asarray(fields['r'], dtype=np.float64),
        p=np.asarray(fields['p'], dtype=np.float64),
        binning_x=fields['binning_x'],
        binning_y=fields['binning_y'],
        roi=T['sensor_msgs/msg/RegionOfInterest'](**fields['roi']),
    )
    ours = cdr.camera_info(header, fields)
    assert ours == bytes(ts.serialize_cdr(reference, 'sensor_msgs/msg/CameraInfo'))
    _assert_camera_info(ts.deserialize_cdr(ours, 'sensor_msgs/msg/CameraInfo'), fields)


def _assert_camera_info(msg, fields):
    assert (msg.height, msg.width, msg.distortion_model) == (
        fields['height'],
        fields['width'],
        fields['distortion_model'],
    )
    for name in ('d', 'k', 'r', 'p'):
        np.testing.assert_array_equal(np.asarray(getattr(msg, name)), fields[name])
    assert (msg.binning_x, msg.binning_y) == (fields['binning_x'], fields['binning_y'])
    assert msg.roi.width == fields['roi']['width'] and msg.roi.height == fields['roi']['height']


def _clouds():
    camera = _camera('plumb_bob', (-0.2, 0.05, 0.001, -0.001, 0.0), width=6, height=4)
    depth = np.full((4, 6), 1.5, np.float32)
    depth[1, 2] = np.nan
    rgb = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    return [
        msgs.encode_cloud(geometry.make_cloud(depth, camera, rgb=rgb)),
        msgs.encode_cloud(geometry.make_cloud(depth, camera, rgb=None, organized=False)),
        msgs.CloudFields(  # a padded foreign layout, with names of every length modulo 4
            height=1,
            width=2,
            fields=[('x', 0, 7, 1), ('yy', 4, 7, 1), ('zzz', 8, 7, 1), ('ring', 12, 4, 1)],
            is_bigendian=False,
            point_step=20,
            row_step=40,
            data=np.arange(40, dtype=np.uint8),
            is_dense=True,
        ),
    ]


@pytest.mark.parametrize('store', STORES, ids=lambda s: s.name)
def test_point_clouds_serialize_exactly_as_rosbags_does(store):
    ts = get_typestore(store)
    T = ts.types
    header = cdr.Header(9, 10, 'cam_optical')
    for fields in _clouds():
        reference = T['sensor_msgs/msg/PointCloud2'](
            header=_rosbags_header(T, header),
            height=fields.height,
            width=fields.width,
            fields=[
                T['sensor_msgs/msg/PointField'](name=n, offset=o, datatype=d, count=c)
                for n, o, d, c in fields.fields
            ],
            is_bigendian=fields.is_bigendian,
            point_step=fields.point_step,
            row_step=fields.row_step,
            data=np.asarray(fields.data),
            is_dense=fields.is_dense,
        )
        ours = cdr.point_cloud(header, fields)
        assert ours == bytes(ts.serialize_cdr(reference, 'sensor_msgs/msg/PointCloud2'))


def test_the_middleware_reads_every_output_back():
    serialization = pytest.importorskip(
        'rclpy.serialization', reason='rclpy (ROS 2 or the ros-jazzy-* wheels) is not installed'
    )
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    header = cdr.Header(11, 12, 'abc')
    for name, fields in _image_cases():
        msg = serialization.deserialize_message(cdr.image(header, fields), Image)
        assert (msg.header.stamp.sec, msg.header.frame_id, msg.encoding) == (
            11,
            'abc',
            fields.encoding,
        )
        assert bytes(msg.data) == fields.data.tobytes(), name
    for camera in CAMERAS:
        fields = camera.to_camera_info_fields()
        msg = serialization.deserialize_message(cdr.camera_info(header, fields), CameraInfo)
        _assert_camera_info(msg, fields)
    for fields in _clouds():
        msg = serialization.deserialize_message(cdr.point_cloud(header, fields), PointCloud2)
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == fields.fields
        assert bytes(msg.data) == fields.data.tobytes() and msg.is_dense == fields.is_dense


def test_a_camera_info_with_a_short_matrix_is_refused():
    fields = CAMERAS[0].to_camera_info_fields()
    fields['k'] = fields['k'][:8]
    with pytest.raises(ValueError, match='CameraInfo.k needs 9 values, got 8'):
        cdr.camera_info(cdr.Header(0, 0, ''), fields)
