"""The launch file under ROS 2's real launch system, from a colcon-built install.

``ros2 launch moa_depth_ros moa_depth.launch.py`` is what a user runs; here the same file is
included into a ``launch.LaunchService`` (Jazzy's ``launch`` / ``launch_ros``: an installed
ROS 2, else the sources ``launch_sources`` finds) from a real ``colcon build`` of the package,
so ``get_package_share_directory`` and ``launch_ros.actions.Node``'s executable lookup find
what a robot's install has. A camera (this test's probe) publishes images and CameraInfo; the
depth must come back on ``depth/image_rect`` paired with its sibling ``depth/camera_info``
(image_transport's ``getCameraInfoTopic``), with ``points``; launch's shutdown then stops
depth_node with SIGINT and it must exit with status 0.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from ros_graph import RosGraph, camera_info_msg, grey_image_msg, wait_for
from tiny_model import expected_depth_m, write_tiny_onnx

from moa_depth_ros.frame import msgs

pytestmark = [pytest.mark.launch_ros, pytest.mark.ros2, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PKG = 'moa_depth_ros'
NAMESPACE = 'launch_test_camera'
W, H = 64, 48
FX = FY = 60.0
CX, CY = 31.5, 23.5
GREY = 100


@pytest.fixture(scope='module')
def install_prefix(tmp_path_factory):
    """``colcon build`` of the package in a workspace of its own; its install prefix."""
    colcon = Path(sys.executable).with_name('colcon')
    colcon = str(colcon) if colcon.exists() else shutil.which('colcon')
    if not colcon:
        pytest.skip('colcon is not installed (colcon-common-extensions: requirements-test.txt)')
    ws = tmp_path_factory.mktemp('ws')
    src = ws / 'src' / PKG
    src.mkdir(parents=True)
    for name in ('package.xml', 'setup.py', 'setup.cfg', 'README.md'):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    for name in ('resource', 'launch', 'config', PKG):
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc')
            )
    result = subprocess.run(
        [colcon, 'build', '--event-handlers', 'console_direct+'],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws / 'install' / PKG


def test_the_launch_file_starts_depth_node_whose_depth_pairs_with_its_camera_info(
    install_prefix, ros_domain, tmp_path, monkeypatch
):
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from launch import LaunchDescription, LaunchService

    # The launch process and depth_node meet this test's graph on its private domain.
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(install_prefix))
    monkeypatch.setenv('ROS_DOMAIN_ID', str(ros_domain))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory(PKG))
    assert share == install_prefix / 'share' / PKG
    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    exits: list[tuple[str, int]] = []
    description = LaunchDescription(
        [
            RegisterEventHandler(
                OnProcessExit(
                    on_exit=lambda event, context: exits.append(
                        (event.action.name, event.returncode)
                    )
                )
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(share / 'launch' / 'moa_depth.launch.py')),
                launch_arguments={
                    'model': model,
                    'namespace': NAMESPACE,
                    'image_topic': 'image',
                    'frame_id': 'launch_test_optical_frame',
                }.items(),
            ),
        ]
    )
    service = LaunchService(argv=[])
    service.include_launch_description(description)

    graph = RosGraph(ros_domain)
    probe = graph.probe('launch_test_camera_and_viewer')
    depth_topic = f'/{NAMESPACE}/depth/image_rect'
    sibling_info = depth_topic.rsplit('/', 1)[0] + '/camera_info'  # getCameraInfoTopic
    inboxes = {
        'depth': probe.subscribe(Image, depth_topic),
        'info': probe.subscribe(CameraInfo, sibling_info),
        'points': probe.subscribe(PointCloud2, f'/{NAMESPACE}/points'),
    }
    failure: list[BaseException] = []

    def camera_then_shutdown():
        # LaunchService runs in the main thread only: the camera runs beside it.
        try:
            image_pub = probe.publisher(Image, f'/{NAMESPACE}/image')
            assert wait_for(lambda: image_pub.get_subscription_count() >= 1, 90.0), (
                'depth_node did not subscribe to the image within 90 s'
            )
            for sec in range(1, 600):
                info = camera_info_msg(W, H, FX, FY, CX, CY, sec=sec, nanosec=0)
                info.header.frame_id = 'launch_test_optical_frame'
                probe.publisher(CameraInfo, f'/{NAMESPACE}/camera_info').publish(info)
                image_pub.publish(
                    grey_image_msg(
                        W, H, GREY, sec=sec, nanosec=0, frame_id='launch_test_optical_frame'
                    )
                )
                if wait_for(lambda: all(len(i) for i in inboxes.values()), 0.1):
                    break
        except BaseException as e:  # reported by the test thread
            failure.append(e)
        finally:
            service.shutdown()

    camera = threading.Thread(target=camera_then_shutdown, daemon=True)
    camera.start()
    try:
        assert service.run() == 0
        camera.join(30.0)
    finally:
        graph.close()
    if failure:
        raise failure[0]
    assert all(len(inbox) for inbox in inboxes.values()), {k: len(v) for k, v in inboxes.items()}
    depth = inboxes['depth'].messages[0]
    assert depth.encoding == '32FC1' and depth.header.frame_id == 'launch_test_optical_frame'
    np.testing.assert_allclose(msgs.decode_depth(depth), expected_depth_m(GREY), rtol=1e-4)
    info = next(m for m in inboxes['info'].messages if m.header.stamp == depth.header.stamp)
    assert list(info.k) == [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    assert (info.width, info.height) == (W, H)
    # launch stops depth_node with SIGINT: a clean Ctrl-C exits with status 0.
    assert wait_for(lambda: exits, 15.0), 'depth_node did not exit'
    assert [code for name, code in exits if 'depth_node' in name] == [0], exits
    assert os.environ['AMENT_PREFIX_PATH'] == str(install_prefix)
