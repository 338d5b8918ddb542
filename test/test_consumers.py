"""The node's outputs read the way the ROS packages that consume them read them.

What those packages do, from their sources (read, not copied):

- image_transport (ros-perception/image_common, ``image_transport/src/camera_common.cpp``,
  ``getCameraInfoTopic``): a CameraSubscriber, RViz's DepthCloud display and depth_image_proc
  take the CameraInfo *beside* an image topic, ``dirname(topic) + '/camera_info'``.
- depth_image_proc (ros-perception/image_pipeline 5.0.1, ``depth_image_proc/src/
  point_cloud_xyz.cpp`` and ``depth_image_proc/include/depth_image_proc/conversions.hpp``,
  ``convertDepth``): an image_geometry PinholeCameraModel of that CameraInfo gives
  ``float center_x = model.cx()`` and ``float constant_x = unit_scaling / model.fx()``, i.e.
  P(0,2) and 1/P(0,0), D unused; each pixel becomes ``x = (u - center_x) * depth *
  constant_x``, ``y`` likewise with v, ``z = depth`` in float; a depth that is not
  ``DepthTraits<T>::valid`` (``depth_traits.hpp``: not finite in 32FC1, 0 in 16UC1) is a
  NaN point. point_cloud_xyz subscribes ``image_rect`` and publishes ``points`` with
  SensorDataQoS.

``consumer_cloud`` is that arithmetic in numpy float32. The tests compare it with the node's
own ``points`` for distorted cameras (plumb_bob, equidistant), through ``moa-depth bag`` here
and through the node on real rclpy (netns) below, and check the REP 117 values.
"""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_typestore
from tiny_model import write_tiny_onnx

from moa_depth_ros.bag import process as bag
from moa_depth_ros.frame import msgs, rectify
from moa_depth_ros.frame.geometry import CameraModel
from moa_depth_ros.runtime import params

W, H = 64, 48  # non-square
CAMERAS = {
    # Pincushion (k1 > 0) plumb_bob: the rectified corners look past the raw image (NaN).
    'plumb_bob': {
        'k': (60.0, 0.0, 31.5, 0.0, 61.0, 23.5, 0.0, 0.0, 1.0),
        'd': (0.08, -0.12, 0.001, -0.0005, 0.0),
        'p': (58.0, 0.0, 32.0, 0.0, 0.0, 59.0, 23.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    },
    'equidistant': {
        'k': (40.0, 0.0, 31.8, 0.0, 40.5, 23.9, 0.0, 0.0, 1.0),
        'd': (0.04, -0.012, 0.003, -0.0006),
        'p': (34.0, 0.0, 31.5, 0.0, 0.0, 34.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0),
    },
}
# The tiny model maps grey g to 1 + 4 g / 255 m: a left-to-right ramp 20..235 gives 1.3-4.7 m,
# so with these limits the left columns are too near (-Inf) and the right ones too far (+Inf).
MIN_DEPTH_M, MAX_DEPTH_M = 1.9, 4.0
MAX_ERROR_M = 1e-3


def ramp_rgb(width=W, height=H):
    grey = np.linspace(20, 235, width).round().astype(np.uint8)
    return np.repeat(np.repeat(grey[None, :, None], height, axis=0), 3, axis=2)


def sibling_camera_info(image_topic: str) -> str:
    """image_transport's getCameraInfoTopic: the camera_info beside an image topic."""
    return image_topic.rstrip('/').rsplit('/', 1)[0] + '/camera_info'


def consumer_cloud(depth_msg, info_msg) -> np.ndarray:
    """depth_image_proc's convertDepth on a decoded depth image: [H, W, 3] float32."""
    p = np.asarray(info_msg.p, dtype=np.float64)
    center_x, center_y = np.float32(p[2]), np.float32(p[6])  # model.cx(), model.cy(): P
    constant_x, constant_y = np.float32(1.0 / p[0]), np.float32(1.0 / p[5])  # 1 / P(0,0), P(1,1)
    if depth_msg.encoding == '16UC1':
        raw = np.frombuffer(bytes(depth_msg.data), '<u2').reshape(depth_msg.height, -1)
        depth = raw[:, : depth_msg.width].astype(np.float32) * np.float32(0.001)
        valid = raw[:, : depth_msg.width] != 0
    else:
        raw = np.frombuffer(bytes(depth_msg.data), '<f4').reshape(depth_msg.height, -1)
        depth = raw[:, : depth_msg.width].astype(np.float32)
        valid = np.isfinite(depth)
    v, u = np.mgrid[0 : depth_msg.height, 0 : depth_msg.width].astype(np.float32)
    with np.errstate(invalid='ignore'):
        xyz = np.stack(
            [(u - center_x) * depth * constant_x, (v - center_y) * depth * constant_y, depth], -1
        ).astype(np.float32)
    xyz[~valid] = np.nan
    return xyz


def node_cloud(cloud_msg) -> np.ndarray:
    points = msgs.decode_cloud(cloud_msg)
    return np.stack([points['x'], points['y'], points['z']], -1).astype(np.float32)


def assert_same_cloud(consumer: np.ndarray, node: np.ndarray) -> float:
    """Check: same NaN points, finite ones within 1 mm; return the largest difference (m)."""
    assert consumer.shape == node.shape
    np.testing.assert_array_equal(np.isnan(consumer[..., 2]), np.isnan(node[..., 2]))
    finite = np.isfinite(node[..., 2])
    assert finite.mean() > 0.3
    error = float(np.abs(consumer[finite] - node[finite]).max())
    assert error <= MAX_ERROR_M, error
    return error


def camera_model(kind: str) -> CameraModel:
    cam = CAMERAS[kind]
    k = cam['k']
    return CameraModel(W, H, k[0], k[4], k[2], k[5], kind, cam['d'], p=cam['p'])


def check_rep117(depth_m: np.ndarray, kind: str) -> dict[str, int]:
    """-Inf on the near side, +Inf on the far side, NaN exactly where nothing is seen."""
    unseen = rectify.Rectifier(camera_model(kind)).invalid
    unseen = np.zeros((H, W), bool) if unseen is None else unseen
    counts = {
        'nan': int(np.isnan(depth_m).sum()),
        '+inf': int((depth_m == np.inf).sum()),
        '-inf': int((depth_m == -np.inf).sum()),
    }
    np.testing.assert_array_equal(np.isnan(depth_m), unseen)  # no estimate: only there
    half = W // 2
    assert not (depth_m[:, :half] == np.inf).any() and not (depth_m[:, half:] == -np.inf).any()
    # On the middle row the ramp is 1.5-1.7 m in columns 4-8 and 4.1-4.4 m in 53-57.
    assert (depth_m[H // 2, 4:9] == -np.inf).all()  # too near
    assert (depth_m[H // 2, 53:58] == np.inf).all()  # nothing within range
    return counts


# -- through moa-depth bag (no ROS) -----------------------------------------------------------


def write_camera_bag(path, kind: str, frames: int = 2) -> None:
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    cam = CAMERAS[kind]
    data = ramp_rgb()
    with Writer(path, version=8) as writer:
        c_img = writer.add_connection('/cam/image_raw', bag.IMAGE, typestore=ts)
        c_info = writer.add_connection('/cam/camera_info', bag.CAMERA_INFO, typestore=ts)
        for i in range(frames):
            header = T['std_msgs/msg/Header'](
                stamp=T['builtin_interfaces/msg/Time'](sec=10 + i, nanosec=0), frame_id='cam'
            )
            info = T[bag.CAMERA_INFO](
                header=header,
                height=H,
                width=W,
                distortion_model=kind,
                d=np.array(cam['d']),
                k=np.array(cam['k']),
                r=np.eye(3).reshape(-1),
                p=np.array(cam['p']),
                binning_x=0,
                binning_y=0,
                roi=T['sensor_msgs/msg/RegionOfInterest'](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                ),
            )
            image = T[bag.IMAGE](
                header=header,
                height=H,
                width=W,
                encoding='rgb8',
                is_bigendian=0,
                step=3 * W,
                data=data.reshape(-1),
            )
            writer.write(c_info, (i + 1) * 10**8 - 1, ts.serialize_cdr(info, bag.CAMERA_INFO))
            writer.write(c_img, (i + 1) * 10**8, ts.serialize_cdr(image, bag.IMAGE))


@pytest.mark.parametrize('kind', list(CAMERAS))
def test_depth_image_proc_rebuilds_the_bag_cloud_from_the_depth_and_its_sibling(tmp_path, kind):
    model = write_tiny_onnx(tmp_path / 'tiny.onnx', range_m=(0.5, 10.0))
    write_camera_bag(tmp_path / 'in', kind)
    settings = params.NodeSettings.from_values(
        {
            'model_path': model,
            'backend': 'onnxruntime',
            'min_depth_m': MIN_DEPTH_M,
            'max_depth_m': MAX_DEPTH_M,
        }
    )
    bag.process_bag(tmp_path / 'in', tmp_path / 'out', settings=settings, progress=False)
    ts = get_typestore(Stores.ROS2_HUMBLE)
    out: dict[str, list] = {}
    with Reader(tmp_path / 'out') as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(ts.deserialize_cdr(raw, conn.msgtype))
    depth_topic = '/cam/depth/image_rect'
    assert sibling_camera_info(depth_topic) == '/cam/depth/camera_info'
    for depth, info, cloud in zip(
        out[depth_topic], out['/cam/depth/camera_info'], out['/cam/points']
    ):
        assert list(info.d) == [0.0] * 5 and list(info.k) == [*info.p[0:3], *info.p[4:7], 0, 0, 1]
        assert_same_cloud(consumer_cloud(depth, info), node_cloud(cloud))
        check_rep117(msgs.decode_depth(depth), kind)


# -- through the node on real rclpy -----------------------------------------------------------


def _camera_info(kind: str, sec: int):
    from ros_graph import header
    from sensor_msgs.msg import CameraInfo

    cam = CAMERAS[kind]
    return CameraInfo(
        header=header(sec=sec, nanosec=0, frame_id='cam_optical'),
        width=W,
        height=H,
        distortion_model=kind,
        d=list(cam['d']),
        k=list(cam['k']),
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=list(cam['p']),
    )


class _NodeUnderTest:
    """depth_node as its own process, a camera, and consumers of depth/image_rect + points."""

    def __init__(self, domain_id, tmp_path, model, *node_params):
        from ros_graph import NodeProcess, RosGraph
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        self.graph = RosGraph(domain_id)
        self.probe = self.graph.probe('consumer')
        depth_topic = '/cam/depth/image_rect'
        self.depth = self.probe.subscribe(Image, depth_topic)
        # The CameraInfo a CameraSubscriber / RViz DepthCloud pairs with the depth.
        self.info = self.probe.subscribe(CameraInfo, sibling_camera_info(depth_topic))
        self.points = self.probe.subscribe(PointCloud2, '/cam/points')
        args = ['--ros-args', '-r', '__ns:=/cam', '-r', 'image:=image_raw']
        for value in (f'model_path:={model}', 'backend:=onnxruntime', *node_params):
            args += ['-p', value]
        self.process = NodeProcess(args, domain_id, tmp_path / f'node-{domain_id}.log')
        assert self.probe.wait_log('depth from /cam/image_raw', timeout_s=60.0), (
            self.process.output()
        )

    def frame(self, kind: str, sec: int, rgb=None, *, warm_up: bool = False):
        """Send a frame; return (depth, its sibling CameraInfo, points) of that stamp.

        A warm-up frame must give depth, but on a fresh connection its CameraInfo may reach
        the node after the node's wait for it, and the frame then goes without its
        camera_info and cloud (the node's documented behaviour, not what these tests check).
        """
        from ros_graph import image_msg

        self.probe.send('/cam/camera_info', _camera_info(kind, sec))
        self.probe.send(
            '/cam/image_raw', image_msg(ramp_rgb() if rgb is None else rgb, sec=sec, nanosec=0)
        )
        got = [
            inbox.wait_match(lambda m: m.header.stamp.sec == sec, 20.0)
            for inbox in ((self.depth,) if warm_up else (self.depth, self.info, self.points))
        ]
        assert all(m is not None for m in got), (
            [m is not None for m in got],
            self.process.output(),
        )
        return got

    def close(self):
        self.process.stop()
        self.graph.close()


@pytest.mark.ros2
@pytest.mark.parametrize('kind', list(CAMERAS))
def test_depth_image_proc_rebuilds_the_node_cloud_from_the_depth_and_its_sibling(
    ros_domain, tmp_path, kind
):
    model = write_tiny_onnx(tmp_path / 'tiny.onnx', range_m=(0.5, 10.0))
    node = _NodeUnderTest(
        ros_domain,
        tmp_path,
        model,
        f'min_depth_m:={MIN_DEPTH_M}',
        f'max_depth_m:={MAX_DEPTH_M}',
    )
    try:
        node.frame(kind, sec=1, warm_up=True)
        depth, info, cloud = node.frame(kind, sec=2)
    finally:
        node.close()
    assert depth.encoding == '32FC1' and (depth.width, depth.height) == (W, H)
    # The rectified camera: K = P[:3, :3], D = 0, R = I (what the consumers assume).
    assert list(info.p) == list(CAMERAS[kind]['p']) and list(info.d) == [0.0] * 5
    assert list(info.k) == [*info.p[0:3], *info.p[4:7], 0.0, 0.0, 1.0]
    error_m = assert_same_cloud(consumer_cloud(depth, info), node_cloud(cloud))
    counts = check_rep117(msgs.decode_depth(depth), kind)
    print(f'{kind}: consumer vs node cloud max error {error_m * 1e3:.4f} mm; depth {counts}')


@pytest.mark.ros2
def test_rectified_input_is_not_undistorted_again_and_scales_with_p(ros_domain, tmp_path):
    # image_proc's image_rect with its camera's camera_info: D is still the lens' (non-zero).
    model = write_tiny_onnx(tmp_path / 'tiny.onnx', range_m=(0.5, 20.0), canonical_focal_px=20.0)
    node = _NodeUnderTest(ros_domain, tmp_path, model, 'input_rectified:=true')
    try:
        node.frame('plumb_bob', sec=1, warm_up=True)
        depth, info, cloud = node.frame('plumb_bob', sec=2)
    finally:
        node.close()
    cam = CAMERAS['plumb_bob']
    assert list(info.p) == list(cam['p']) and list(info.d) == [0.0] * 5
    depth_m = msgs.decode_depth(depth)
    # Not resampled: every pixel has a depth (no unseen rectified corners), and each column
    # has the depth of its own grey (the ramp goes through the 32x24 network unshifted).
    assert np.isfinite(depth_m).all()
    # Metric scale from P's focal length (58, 59 px at 64x48), not K's (60, 61).
    scale_p = np.sqrt(cam['p'][0] * 32 / W * cam['p'][5] * 24 / H) / 20.0
    grey = ramp_rgb()[0, :, 0].astype(np.float64)
    expected = (1.0 + 4.0 * grey / 255.0) * scale_p
    np.testing.assert_allclose(depth_m[H // 2, 8:-8], expected[8:-8], rtol=0.01)
    scale_k = np.sqrt(60.0 * 32 / W * 61.0 * 24 / H) / 20.0
    assert abs(scale_k / scale_p - 1) > 0.03  # the two are told apart at this tolerance
    assert_same_cloud(consumer_cloud(depth, info), node_cloud(cloud))


@pytest.mark.ros2
@pytest.mark.slow
@pytest.mark.parametrize(('width', 'height'), [(640, 480), (1280, 720)])
def test_a_nav2_subscriber_gets_the_clouds_a_reliable_one_gets(
    tmp_path, ros_domain, width, height
):
    # Nav2's costmap layers subscribe to PointCloud2 with SensorDataQoS (best effort, keep
    # last 5), as depth_image_proc's point_cloud_xyz publishes it. With default parameters
    # and Fast DDS defaults (512 KiB shared-memory segments) such a subscriber, as its own
    # process, must get >= 95 % of what a reliable one gets from a reliable 15 Hz camera.
    from moa_depth_ros.bench import live

    model = write_tiny_onnx(tmp_path / 'tiny.onnx', range_m=(0.5, 10.0))
    result = live.measure_live(
        model,
        backend='onnxruntime',
        frames=90,
        warmup_frames=15,
        width=width,
        height=height,
        idle_s=0.5,
        domain_id=ros_domain,
    )
    nav = result['navigation']
    print(f'{width}x{height}: {nav}')
    assert nav['clouds_reliable'] >= 60, result
    assert nav['clouds_sensor_data_qos'] >= 0.95 * nav['clouds_reliable'], nav
    assert nav['cloud_kib'] <= 320, nav
