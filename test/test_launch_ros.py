"""depth_node in a real ROS 2 graph (launch_testing): image + camera_info in, depth + cloud out.

Runs where ROS 2 is installed (``colcon test`` or ``pytest`` with the launch_testing plugin);
skipped elsewhere. The node runs as its own process with a tiny ONNX model written here, a
test node publishes images and camera_info and checks what comes back, and after the test
launch stops the node with SIGINT: it must exit with status 0 (clean Ctrl-C).
"""

from __future__ import annotations

import os
from pathlib import Path
import sys
import tempfile
import time
import unittest

import pytest

pytest.importorskip('launch_testing', reason='ROS 2 launch_testing is not installed (not on PyPI)')

import launch.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import launch_testing.markers  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tiny_model import expected_depth_m, write_tiny_onnx  # noqa: E402

import launch  # noqa: E402
from moa_depth_ros.frame import msgs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = '/launch_test_camera'
W, H = 64, 48
FX = FY = 60.0
CX, CY = 31.5, 23.5
GREY = 100
MODEL = write_tiny_onnx(Path(tempfile.mkdtemp(prefix='moa_depth_launch_test_')) / 'tiny.onnx')


@pytest.mark.launch_test
@launch_testing.markers.keep_alive
def generate_test_description():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    depth_node = launch.actions.ExecuteProcess(
        cmd=[
            sys.executable,
            '-c',
            'import sys; from moa_depth_ros.runtime.node import main; sys.exit(main(sys.argv))',
            '--ros-args',
            '-r',
            f'__ns:={NAMESPACE}',
            '-p',
            f'model_path:={MODEL}',
        ],
        env=env,
        output='screen',
    )
    return (
        launch.LaunchDescription([depth_node, launch_testing.actions.ReadyToTest()]),
        {'depth_node': depth_node},
    )


def _header(stamp_sec):
    from std_msgs.msg import Header

    header = Header(frame_id='launch_test_optical_frame')
    header.stamp.sec = stamp_sec
    return header


class TestDepthNodeInAGraph(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('moa_depth_launch_test')

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_images_come_back_as_depth_and_a_cloud_on_the_camera_rays(self):
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        received = {}
        for topic, msg_type in (('depth', Image), ('points', PointCloud2)):
            self.node.create_subscription(
                msg_type, f'{NAMESPACE}/{topic}', lambda m, t=topic: received.setdefault(t, m), qos
            )
        image_pub = self.node.create_publisher(Image, f'{NAMESPACE}/image', qos)
        info_pub = self.node.create_publisher(CameraInfo, f'{NAMESPACE}/camera_info', qos)

        info = CameraInfo(width=W, height=H, distortion_model='plumb_bob')
        info.header = _header(0)
        info.d = [0.0] * 5
        info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
        image = Image(header=_header(42))
        msgs.fill_image_msg(image, msgs.encode_rgb(np.full((H, W, 3), GREY, np.uint8)))

        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and len(received) < 2:
            info_pub.publish(info)
            image_pub.publish(image)
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertEqual(set(received), {'depth', 'points'}, 'no depth/points within 60 s')

        depth = received['depth']
        self.assertEqual(depth.encoding, '32FC1')
        self.assertEqual(depth.header.stamp.sec, 42)
        self.assertEqual(depth.header.frame_id, 'launch_test_optical_frame')
        depth_m = msgs.decode_depth(depth)
        np.testing.assert_allclose(depth_m, expected_depth_m(GREY), rtol=1e-4)

        cloud = received['points']
        self.assertEqual((cloud.height, cloud.width), (H, W))
        self.assertEqual(cloud.header.frame_id, 'launch_test_optical_frame')
        points = msgs.decode_cloud(cloud)
        u = np.arange(W)[None, :]
        np.testing.assert_allclose(points['z'], depth_m, rtol=1e-4)
        np.testing.assert_allclose(points['x'], (u - CX) / FX * depth_m, rtol=1e-3, atol=1e-4)


@launch_testing.post_shutdown_test()
class TestDepthNodeShutdown(unittest.TestCase):
    def test_ctrl_c_exits_cleanly(self, proc_info, depth_node):
        launch_testing.asserts.assertExitCodes(
            proc_info, allowable_exit_codes=[0], process=depth_node
        )
