"""``moa-depth bag`` end to end on bags written here with rosbags.

The input bag has one camera: images in several encodings (plus a frame with an unknown
encoding and one whose size does not match camera_info), a distorted camera_info, a
compressed copy of the stream and an unrelated topic. The output is read back with rosbags
and, for MCAP, with the independent ``mcap`` + ``mcap-ros2-support`` decoder.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tiny_model import expected_depth_m, write_tiny_onnx

from moa_depth_ros import cli
from moa_depth_ros.bag import process as bag
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame import msgs, rectify
from moa_depth_ros.frame.geometry import CameraModel
from moa_depth_ros.runtime import params

W, H = 40, 30
K = np.array([[45.0, 0.0, 19.5], [0.0, 47.0, 14.5], [0.0, 0.0, 1.0]])
D = np.array([-0.05, 0.01, 0.001, -0.001, 0.0])
# The rectified camera (camera_calibration's P): what every output describes.
P = np.array([47.0, 0.0, 19.8, 0.0, 0.0, 49.0, 14.6, 0.0, 0.0, 0.0, 1.0, 0.0])
K_RECT = P.reshape(3, 4)[:, :3]
RAW_CAMERA = CameraModel(W, H, 45.0, 47.0, 19.5, 14.5, 'plumb_bob', tuple(D), p=tuple(P))
DARK, BRIGHT = 20, 200  # tiny model: 1.31 m and 4.14 m
MIN_DEPTH_M = 1.5  # the dark half is below it: -Inf depth (REP 117), NaN points
FRAME = 'cam_optical_frame'
GOOD_ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'yuv422_yuy2', 'mono16')
T0 = 1_700_000_000


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


def _grey_halves(width=W, height=H):
    grey = np.full((height, width), BRIGHT, np.uint8)
    grey[:, : width // 2] = DARK
    return grey


def _encode(grey, encoding):
    """Image fields (height, width, encoding, step, data bytes) of a grey image."""
    if encoding in ('rgb8', 'bgr8'):
        data = np.repeat(grey[..., None], 3, axis=2)
    elif encoding == 'mono8':
        data = grey
    elif encoding == 'mono16':
        data = grey.astype('<u2') * 257
    elif encoding == 'yuv422_yuy2':  # Y U Y V, neutral chroma, video-range luma (BT.601)
        data = np.full((grey.shape[0], grey.shape[1] * 2), 128, np.uint8)
        data[:, 0::2] = np.round(16 + grey * (219 / 255))
    else:
        data = grey
    data = np.ascontiguousarray(data)
    return grey.shape[0], grey.shape[1], encoding, data.strides[0], data.reshape(-1).view(np.uint8)


def write_input_bag(path, storage='sqlite3', distro=Stores.ROS2_HUMBLE):
    """Write the test camera bag; return (image log times, image stamps) of each frame."""
    ts = get_typestore(distro)
    T = ts.types
    Header, Time = T['std_msgs/msg/Header'], T['builtin_interfaces/msg/Time']
    frames = [*GOOD_ENCODINGS, 'weird9', 'small']
    log_times, stamps = [], []
    with Writer(path, version=8, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        c_img = writer.add_connection('/camera/image_raw', bag.IMAGE, typestore=ts)
        c_info = writer.add_connection('/camera/camera_info', bag.CAMERA_INFO, typestore=ts)
        c_png = writer.add_connection('/camera/image_raw/compressed', bag.COMPRESSED, typestore=ts)
        c_note = writer.add_connection('/note', 'std_msgs/msg/String', typestore=ts)
        writer.write(
            c_note, 1, ts.serialize_cdr(T['std_msgs/msg/String'](data='hello'), c_note.msgtype)
        )
        for i, kind in enumerate(frames):
            t_ns = (i + 1) * 100_000_000
            header = Header(stamp=Time(sec=T0 + i, nanosec=1000 * i), frame_id=FRAME)
            info = T[bag.CAMERA_INFO](
                header=header,
                height=H,
                width=W,
                distortion_model='plumb_bob',
                d=D.copy(),
                k=K.reshape(-1).copy(),
                r=np.eye(3).reshape(-1),
                p=P.copy(),
                binning_x=0,
                binning_y=0,
                roi=T['sensor_msgs/msg/RegionOfInterest'](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                ),
            )
            writer.write(c_info, t_ns - 1000, ts.serialize_cdr(info, bag.CAMERA_INFO))
            grey = _grey_halves(20, 16) if kind == 'small' else _grey_halves()
            height, width, encoding, step, data = _encode(
                grey, 'mono8' if kind == 'small' else kind
            )
            image = T[bag.IMAGE](
                header=header,
                height=height,
                width=width,
                encoding=encoding,
                is_bigendian=0,
                step=step,
                data=data,
            )
            writer.write(c_img, t_ns, ts.serialize_cdr(image, bag.IMAGE))
            _, png = cv2.imencode('.png', cv2.cvtColor(_grey_halves(), cv2.COLOR_GRAY2BGR))
            compressed = T[bag.COMPRESSED](header=header, format='png', data=png.reshape(-1))
            writer.write(c_png, t_ns + 1, ts.serialize_cdr(compressed, bag.COMPRESSED))
            log_times.append(t_ns)
            stamps.append((T0 + i, 1000 * i))
    return log_times, stamps


def _settings(model_path, **values):
    return params.NodeSettings.from_values(
        {'model_path': model_path, 'min_depth_m': MIN_DEPTH_M, 'backend': 'onnxruntime', **values}
    )


def _read_rosbags(path, distro=Stores.ROS2_HUMBLE):
    """Topic -> [(log time, message)]; a message that does not deserialize stays raw bytes."""
    from rosbags.serde import SerdeError

    ts = get_typestore(distro)
    out = {}
    with Reader(path) as reader:
        for conn, t_ns, raw in reader.messages():
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except SerdeError:
                msg = bytes(raw)
            out.setdefault(conn.topic, []).append((t_ns, msg))
    return out


def _check_depth_and_cloud(depth, cloud, confidence):
    """Check what a user of the outputs cares about, on decoded message objects."""
    assert (depth.encoding, depth.height, depth.width) == ('32FC1', H, W)
    depth_m = msgs.decode_depth(depth)
    dark, bright = depth_m[:, : W // 2 - 3], depth_m[:, W // 2 + 3 :]
    assert (dark == -np.inf).all()  # 1.31 m is below min_depth_m: REP 117's too close
    np.testing.assert_allclose(bright, expected_depth_m(BRIGHT), rtol=0.02)
    np.testing.assert_allclose(
        msgs.decode_depth(confidence)[:, W // 2 + 3 :], BRIGHT / 255, rtol=0.02
    )
    assert (msgs.decode_depth(confidence)[:, : W // 2 - 3] == 0).all()

    assert (cloud.height, cloud.width, cloud.is_dense) == (H, W, False)
    points = msgs.decode_cloud(cloud)
    xyz = np.stack([points['x'], points['y'], points['z']], axis=-1).astype(np.float64)
    valid = np.isfinite(depth_m)
    assert (np.isnan(xyz[~valid]).all()) and np.isfinite(xyz[valid]).all()
    np.testing.assert_allclose(xyz[..., 2][valid], depth_m[valid], rtol=1e-5)
    # Each point lies on its pixel's ray of the rectified camera: projected with P[:3, :3] and
    # no distortion (as depth_image_proc reads depth/camera_info) it is back on its pixel.
    v, u = np.mgrid[0:H, 0:W]
    projected, _ = cv2.projectPoints(
        xyz[valid].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K_RECT, None
    )
    np.testing.assert_allclose(projected.reshape(-1, 2), np.stack([u, v], -1)[valid], atol=1e-3)
    # Each point has the colour of its pixel in the rectified image.
    rectified_grey = rectify.Rectifier(RAW_CAMERA).rectify_image(_grey_halves()).astype(int)
    colour = msgs.unpack_rgb(points['rgb']).astype(int)
    assert (abs(colour - rectified_grey[..., None])[valid] <= 2).all()


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_bag_gets_the_node_outputs_with_image_stamps_frames_and_rays(
    tmp_path, model_path, storage
):
    log_times, stamps = write_input_bag(tmp_path / 'in', storage)
    summary = bag.process_bag(
        tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path), progress=False
    )
    assert summary['storage'] == storage and summary['distro'] == 'humble'
    assert summary['image_topic'] == '/camera/image_raw'
    assert summary['info_topic'] == '/camera/camera_info'
    assert (summary['frames'], summary['processed'], summary['skipped']) == (7, 6, 1)
    (reason,) = summary['skipped_reasons']
    assert "InvalidImageError: Image.encoding 'weird9'" in reason
    # A CameraInfo for another image size costs that frame's cloud, not its depth.
    assert summary['frames_without_cloud'] == 1
    (problem,) = summary['camera_info_problems']
    assert '40x30 image but the image is 20x16' in problem
    assert set(summary['ms_per_frame']) >= {'decode', 'network', 'cloud', 'encode', 'total'}
    assert not (tmp_path / 'out.partial').exists()

    out = _read_rosbags(tmp_path / 'out')
    counts = {topic: len(v) for topic, v in out.items()}
    assert counts == summary['topics_written']
    assert counts['/camera/image_raw'] == 7 and counts['/note'] == 1  # inputs copied
    assert counts['/camera/image_raw/compressed'] == 7 and counts['/camera/camera_info'] == 7
    assert counts['/camera/depth/image_rect'] == counts['/camera/depth/confidence'] == 6
    assert counts['/camera/depth/camera_info'] == counts['/camera/points'] == 5
    assert '/camera/depth/colored' not in counts

    processed = [i for i, kind in enumerate(GOOD_ENCODINGS)]
    assert [t for t, _ in out['/camera/depth/image_rect']][-1] == log_times[
        -1
    ]  # the 'small' frame
    for name in ('/camera/points', '/camera/depth/camera_info'):
        assert [t for t, _ in out[name]] == [log_times[i] for i in processed], name
        for (_, msg), i in zip(out[name], processed):
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == stamps[i]
            assert msg.header.frame_id == FRAME
    info = out['/camera/depth/camera_info'][0][1]
    assert (info.width, info.height, info.distortion_model) == (W, H, 'plumb_bob')
    np.testing.assert_allclose(info.k, K_RECT.reshape(-1))  # the rectified camera: K = P
    np.testing.assert_allclose(info.p, P)
    np.testing.assert_array_equal(info.d, [0.0] * 5)
    np.testing.assert_array_equal(info.r, np.eye(3).reshape(-1))
    for (_, depth), (_, cloud), (_, confidence) in zip(
        out['/camera/depth/image_rect'], out['/camera/points'], out['/camera/depth/confidence']
    ):
        _check_depth_and_cloud(depth, cloud, confidence)

    if storage == 'mcap':
        _check_with_the_mcap_reader(tmp_path / 'out', stamps)


@pytest.mark.openvino
def test_openvino_backend_writes_what_onnx_runtime_writes(tmp_path, model_path):
    write_input_bag(tmp_path / 'in', 'mcap')
    outputs = {}
    for backend in ('onnxruntime', 'openvino'):
        summary = bag.process_bag(
            tmp_path / 'in',
            tmp_path / backend,
            settings=_settings(model_path, backend=backend, precision='fp32'),
            progress=False,
        )
        assert f'via {backend}' in summary['model']
        assert (summary['processed'], summary['skipped']) == (6, 1)
        outputs[backend] = _read_rosbags(tmp_path / backend)
    ort, ov = outputs['onnxruntime'], outputs['openvino']
    assert {t: len(v) for t, v in ort.items()} == {t: len(v) for t, v in ov.items()}
    for topic in ('/camera/depth/image_rect', '/camera/depth/confidence'):
        for (t_a, a), (t_b, b) in zip(ort[topic], ov[topic]):
            assert t_a == t_b and a.header == b.header
            np.testing.assert_allclose(
                msgs.decode_depth(b), msgs.decode_depth(a), rtol=1e-5, equal_nan=True
            )
    for (_, a), (_, b) in zip(ort['/camera/points'], ov['/camera/points']):
        for field in ('x', 'y', 'z'):
            np.testing.assert_allclose(
                msgs.decode_cloud(b)[field],
                msgs.decode_cloud(a)[field],
                rtol=1e-5,
                atol=1e-6,
                equal_nan=True,
            )
    for (_, depth), (_, cloud), (_, confidence) in zip(
        ov['/camera/depth/image_rect'], ov['/camera/points'], ov['/camera/depth/confidence']
    ):
        _check_depth_and_cloud(depth, cloud, confidence)


def _check_with_the_mcap_reader(bag_dir, stamps):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = bag_dir.glob('*.mcap')
    decoded = {}
    with open(mcap_file, 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            decoded.setdefault(channel.topic, []).append((schema.name, message.log_time, msg))
    assert {schema for schema, _, _ in decoded['/camera/depth/image_rect']} == {
        'sensor_msgs/msg/Image'
    }
    assert {schema for schema, _, _ in decoded['/camera/points']} == {
        'sensor_msgs/msg/PointCloud2'
    }
    for (_, _, depth), (_, _, cloud), (_, _, confidence), stamp in zip(
        decoded['/camera/depth/image_rect'],
        decoded['/camera/points'],
        decoded['/camera/depth/confidence'],
        stamps,
    ):
        assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == stamp
        assert cloud.header.frame_id == FRAME
        _check_depth_and_cloud(depth, cloud, confidence)
    assert len(decoded['/note']) == 1 and decoded['/note'][0][2].data == 'hello'


def test_compressed_topic_16uc1_unorganized_and_colored_into_another_storage(tmp_path, model_path):
    write_input_bag(tmp_path / 'in', 'sqlite3')
    settings = _settings(
        model_path,
        depth_encoding='16UC1',
        cloud_organized=False,
        cloud_rgb=False,
        publish_confidence=False,
        publish_colored=True,
    )
    summary = bag.process_bag(
        tmp_path / 'in',
        tmp_path / 'out',
        settings=settings,
        image_topic='/camera/image_raw/compressed',
        output_namespace='/estimated',
        storage='mcap',
        distro='jazzy',
        progress=False,
    )
    assert (summary['frames'], summary['processed'], summary['skipped']) == (7, 7, 0)
    assert summary['info_topic'] == '/camera/camera_info'  # beside image_raw, not compressed
    out = _read_rosbags(tmp_path / 'out', Stores.ROS2_JAZZY)
    assert (
        len(out['/estimated/depth/image_rect']) == 7 and '/estimated/depth/confidence' not in out
    )
    depth = out['/estimated/depth/image_rect'][0][1]
    assert depth.encoding == '16UC1'
    depth_mm = np.frombuffer(depth.data, '<u2').reshape(H, W)
    assert (depth_mm[:, : W // 2 - 3] == 0).all()  # invalid is 0 mm
    np.testing.assert_allclose(
        depth_mm[:, W // 2 + 3 :], 1000 * expected_depth_m(BRIGHT), rtol=0.02
    )
    cloud = out['/estimated/points'][0][1]
    assert cloud.height == 1 and cloud.is_dense
    points = msgs.decode_cloud(cloud)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z']
    assert np.isfinite(points['z']).all() and points['z'].min() >= MIN_DEPTH_M
    assert out['/estimated/depth/colored'][0][1].encoding == 'bgr8'
    with Reader(tmp_path / 'out') as reader:
        assert reader.storage.__class__.__name__ == 'DirectoryReader'
    assert list((tmp_path / 'out').glob('*.mcap'))


def test_without_camera_info_depth_is_written_and_the_cloud_is_not(tmp_path, model_path):
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    with Writer(tmp_path / 'in', version=8) as writer:
        conn = writer.add_connection('/image', bag.IMAGE, typestore=ts)
        height, width, encoding, step, data = _encode(_grey_halves(), 'mono8')
        header = T['std_msgs/msg/Header'](
            stamp=T['builtin_interfaces/msg/Time'](sec=5, nanosec=6), frame_id=FRAME
        )
        msg = T[bag.IMAGE](
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=data,
        )
        writer.write(conn, 10, ts.serialize_cdr(msg, bag.IMAGE))
        writer.write(conn, 20, b'\x00\x01\x00\x00garbage')  # a truncated image message
    summary = bag.process_bag(
        tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path), progress=False
    )
    assert summary['info_topic'] is None
    assert (summary['processed'], summary['frames_without_cloud'], summary['skipped']) == (1, 1, 1)
    assert 'cannot deserialize' in next(iter(summary['skipped_reasons']))
    out = _read_rosbags(tmp_path / 'out')
    assert set(out) == {'/image', '/depth/image_rect', '/depth/confidence'}  # at the top level
    assert out['/image'][1][1] == b'\x00\x01\x00\x00garbage'  # copied as it was
    assert out['/depth/image_rect'][0][1].header.stamp.sec == 5


def test_an_interrupted_run_never_leaves_a_complete_looking_output(
    tmp_path, model_path, monkeypatch
):
    from moa_depth_ros.frame.pipeline import DepthPipeline

    write_input_bag(tmp_path / 'in', 'mcap')
    calls = []
    original = DepthPipeline.process_msg

    def crash_on_third(self, msg, camera=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, msg, camera)

    monkeypatch.setattr(DepthPipeline, 'process_msg', crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        bag.process_bag(
            tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path), progress=False
        )
    assert not (tmp_path / 'out').exists()
    assert (tmp_path / 'out.partial').is_dir()
    assert not list((tmp_path / 'out.partial').rglob('metadata.yaml'))

    monkeypatch.setattr(DepthPipeline, 'process_msg', original)
    bag.process_bag(
        tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path), progress=False
    )
    assert (tmp_path / 'out' / 'metadata.yaml').is_file()
    assert not (tmp_path / 'out.partial').exists()  # the leftover was cleared

    with pytest.raises(ConfigError, match='exists; pass --overwrite'):
        bag.process_bag(tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path))
    summary = bag.process_bag(
        tmp_path / 'in',
        tmp_path / 'out',
        settings=_settings(model_path, publish_cloud=False),
        overwrite=True,
        progress=False,
    )
    assert '/camera/points' not in summary['topics_written']
    assert '/camera/points' not in _read_rosbags(tmp_path / 'out')


def test_unusable_arguments_are_refused_before_anything_is_written(tmp_path, model_path):
    write_input_bag(tmp_path / 'in')
    settings = _settings(model_path)
    cases = [
        ({'image_topic': '/note'}, 'not an Image or CompressedImage topic'),
        ({'info_topic': '/note'}, 'not a CameraInfo topic'),
        ({'distro': 'rolling'}, 'distro must be one of'),
        ({'storage': 'zip'}, 'storage must be one of'),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            bag.process_bag(tmp_path / 'in', tmp_path / 'out', settings=settings, **kwargs)
    with pytest.raises(ConfigError, match='does not exist'):
        bag.process_bag(tmp_path / 'nothing', tmp_path / 'out', settings=settings)
    (tmp_path / 'not_a_bag').mkdir()
    with pytest.raises(ConfigError, match='not a rosbag2 directory'):
        bag.process_bag(tmp_path / 'not_a_bag', tmp_path / 'out', settings=settings)
    with pytest.raises(ConfigError, match='must differ'):
        bag.process_bag(tmp_path / 'in', tmp_path / 'in', settings=settings, overwrite=True)
    with pytest.raises(ConfigError, match='no such file'):
        bag.process_bag(tmp_path / 'in', tmp_path / 'out', settings=_settings('/no/model.onnx'))
    with pytest.raises(ConfigError, match='depth range'):
        bag.process_bag(
            tmp_path / 'in', tmp_path / 'out', settings=_settings(model_path, min_depth_m=20.0)
        )
    assert not (tmp_path / 'out').exists()


def test_topic_selection_and_output_names():
    topics = {
        '/a/image_raw': bag.IMAGE,
        '/b/image_raw': bag.IMAGE,
        '/a/camera_info': bag.CAMERA_INFO,
    }
    with pytest.raises(ConfigError, match='several sensor_msgs/msg/Image topics'):
        bag._choose_image_topic(topics, None)
    rgbd = {'/cam/color/image_raw': bag.IMAGE, '/cam/aligned_depth/image_raw': bag.IMAGE}
    assert bag._choose_image_topic(rgbd, None) == '/cam/color/image_raw'
    with pytest.raises(ConfigError, match='no sensor_msgs/msg/Image'):
        bag._choose_image_topic({'/x': 'std_msgs/msg/String'}, None)
    only_compressed = {'/c/image_raw/compressed': bag.COMPRESSED}
    assert bag._choose_image_topic(only_compressed, None) == '/c/image_raw/compressed'
    assert bag._choose_info_topic(topics, '/b/image_raw', None) == '/a/camera_info'  # the only one
    assert bag.output_topics('/cam/front/image_raw', bag.IMAGE)['points'] == '/cam/front/points'
    assert bag.output_topics('/image', bag.IMAGE)['depth_info'] == '/depth/camera_info'
    assert (
        bag.output_topics('/x/y', bag.IMAGE, namespace='out/')['depth'] == '/out/depth/image_rect'
    )


def test_clashing_outputs_need_another_namespace(tmp_path, model_path):
    ts = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(tmp_path / 'in', version=8) as writer:
        writer.add_connection('/camera/image_raw', bag.IMAGE, typestore=ts)
        writer.add_connection('/camera/depth/image_rect', bag.IMAGE, typestore=ts)  # RGB-D
    with pytest.raises(ConfigError, match='already has /camera/depth/image_rect.*--output-names'):
        bag.process_bag(
            tmp_path / 'in',
            tmp_path / 'out',
            settings=_settings(model_path),
            image_topic='/camera/image_raw',
        )


def test_command_line_prints_the_summary_and_reports_errors(tmp_path, model_path, capsys):
    write_input_bag(tmp_path / 'in', 'mcap')
    argv = ['bag', str(tmp_path / 'in'), str(tmp_path / 'out'), '--model-path', model_path]
    assert (
        cli.main([*argv, '--min-depth-m', '1.5', '--cloud-decimation', '2', '--no-progress']) == 0
    )
    printed = capsys.readouterr().out
    assert 'frames: 7 on /camera/image_raw, processed 6, skipped 1, dropped 0' in printed
    assert "skipped 1x: InvalidImageError: Image.encoding 'weird9'" in printed
    assert 'unusable camera_info: camera info is for a 40x30 image' in printed
    assert '/camera/points: 5' in printed and 'ms per frame:' in printed
    cloud = _read_rosbags(tmp_path / 'out')['/camera/points'][0][1]
    assert (cloud.height, cloud.width) == (H // 2, W // 2)

    assert cli.main(argv) == 2  # the output exists now
    assert 'exists; pass --overwrite' in capsys.readouterr().err
    assert cli.main([*argv, '--overwrite', '--cloud-decimation', '-1']) == 2
    assert 'cloud_decimation must be >= 0' in capsys.readouterr().err


def test_single_mcap_file_input_with_an_uncalibrated_camera(tmp_path, model_path, monkeypatch):
    """A webcam bag: camera_info with zero focal length, then a corrupt one; no tqdm."""
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    with Writer(tmp_path / 'in', version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        c_img = writer.add_connection('/cam/image', bag.IMAGE, typestore=ts)
        c_info = writer.add_connection('/cam/info', bag.CAMERA_INFO, typestore=ts)
        header = T['std_msgs/msg/Header'](
            stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=0), frame_id=FRAME
        )
        info = T[bag.CAMERA_INFO](
            header=header,
            height=H,
            width=W,
            distortion_model='plumb_bob',
            d=np.zeros(5),
            k=np.zeros(9),
            r=np.eye(3).reshape(-1),
            p=np.zeros(12),
            binning_x=0,
            binning_y=0,
            roi=T['sensor_msgs/msg/RegionOfInterest'](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        height, width, encoding, step, data = _encode(_grey_halves(), 'rgb8')
        image = T[bag.IMAGE](
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=data,
        )
        writer.write(c_info, 1, ts.serialize_cdr(info, bag.CAMERA_INFO))
        writer.write(c_img, 2, ts.serialize_cdr(image, bag.IMAGE))
        writer.write(c_info, 3, b'\x00\x01\x00\x00bad')
        writer.write(c_img, 4, ts.serialize_cdr(image, bag.IMAGE))
    monkeypatch.setitem(sys.modules, 'tqdm', None)  # import tqdm fails
    (mcap_file,) = (tmp_path / 'in').glob('*.mcap')
    summary = bag.process_bag(
        mcap_file, tmp_path / 'out', settings=_settings(model_path), info_topic='/cam/info'
    )
    assert summary['storage'] == 'mcap'
    assert (summary['processed'], summary['frames_without_cloud']) == (2, 2)
    problems = ' | '.join(summary['camera_info_problems'])
    assert 'cannot deserialize a sensor_msgs/msg/CameraInfo' in problems
    assert len(summary['camera_info_problems']) == 2
    text = bag.format_summary(summary)
    assert 'unusable camera_info: ' in text and 'without cloud 2' in text
    assert set(_read_rosbags(tmp_path / 'out')) == {
        '/cam/image',
        '/cam/info',
        '/cam/depth/image_rect',
        '/cam/depth/confidence',
    }


@pytest.mark.slow
def test_the_synthetic_room_bag_from_training_goes_through(tmp_path, model_path):
    """The bag `python -m training` writes for demos (with a ground-truth depth topic)."""
    pytest.importorskip('torch', reason='the training package (synthetic bag writer) needs torch')
    from training.data.synthetic_bag import write_synthetic_bag

    info = write_synthetic_bag(
        tmp_path / 'room',
        n_frames=3,
        width=64,
        height=48,
        encodings=('rgb8', 'yuv422_yuy2'),
        compressed=True,
        write_depth=True,
    )
    summary = bag.process_bag(
        tmp_path / 'room', tmp_path / 'out', settings=_settings(model_path), progress=False
    )
    assert summary['image_topic'] == '/camera/image_raw'  # not the depth_gt Image topic
    assert (summary['frames'], summary['processed']) == (3, 3)
    out = _read_rosbags(tmp_path / 'out')
    stamps = [
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        for _, m in out['/camera/depth/image_rect']
    ]
    assert stamps == info.stamps_ns
    assert len(out['/camera/depth_gt']) == 3


def test_depth_is_converted_with_the_bags_camera_info_as_the_node_does(tmp_path):
    # P of the test bag (the rectified camera the network sees): fx 47, fy 49 px at 40x30
    # (K's 45 and 47 are the raw lens'); the tiny model's input is 32x24.
    model = write_tiny_onnx(tmp_path / 'canonical.onnx', canonical_focal_px=30.0)
    write_input_bag(tmp_path / 'in', 'mcap')
    summary = bag.process_bag(
        tmp_path / 'in', tmp_path / 'out', settings=_settings(model), progress=False
    )
    scale = np.sqrt(47.0 * 32 / W * 49.0 * 24 / H) / 30.0
    frames, mean = summary['depth_scale']['camera']
    assert frames == 5 and mean == pytest.approx(scale)  # the 20x16 frame: canonical assumed
    assert summary['depth_scale']['assumed canonical'][0] == 1
    assert f'x{scale:.3f} on average' in bag.format_summary(summary)
    depth = _read_rosbags(tmp_path / 'out')['/camera/depth/image_rect'][0][1]
    bright = msgs.decode_depth(depth)[:, -1]
    np.testing.assert_allclose(bright, expected_depth_m(BRIGHT) * scale, rtol=1e-4)

    settings = _settings(model, focal_length_correction=False)
    off = bag.process_bag(tmp_path / 'in', tmp_path / 'off', settings=settings, progress=False)
    assert set(off['depth_scale']) == {'off'}
