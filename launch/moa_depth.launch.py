"""Launch depth_node beside a camera, optionally with a webcam driver and RViz.

Everything runs in one namespace (default ``camera``), the way camera drivers lay out their
topics, so the outputs land next to the image::

    /camera/image_raw, /camera/camera_info          (the camera driver)
    /camera/depth/image_rect, /camera/depth/camera_info,     (depth_node: one rectified
    /camera/depth/confidence, /camera/points, /camera/depth/colored    camera)
    /camera/scan                                    (laserscan:=true)

``laserscan:=true`` also starts depthimage_to_laserscan on depth/image_rect and its sibling
depth/camera_info (a LaserScan for slam_toolbox or Nav2's obstacle layer, +Inf depth clearing
free space); it is refused in one line where that package is not installed.

A laptop webcam through v4l2_camera, with RViz::

    ros2 launch moa_depth_ros moa_depth.launch.py model:=/m.onnx camera:=v4l2 use_rviz:=true

A running camera that publishes /front/color/image_raw and /front/color/camera_info::

    ros2 launch moa_depth_ros moa_depth.launch.py model:=/m.onnx namespace:=front
        image_topic:=color/image_raw camera_info_topic:=color/camera_info

RViz's saved topics (``/camera/...``) are remapped to the chosen namespace and image topic.

Without calibration a webcam driver publishes a CameraInfo with zero focal length: depth
still comes out, the point cloud needs a calibration (``camera_calibration``).

Every package, executable and file the chosen arguments need is looked up before any node
starts: a missing RViz or camera driver, or a params_file that does not exist, stops the
launch with one message instead of leaving depth_node running alone (ros2/launch#747).
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace

PACKAGE = 'moa_depth_ros'
CAMERAS = ('none', 'v4l2', 'usb_cam')

ARGUMENTS = (
    (
        'model',
        '',
        'Model file (.onnx, .engine, .safetensors); absolute, or relative to '
        'share/moa_depth_ros/models. Empty keeps model_path from params_file.',
    ),
    (
        'camera',
        'none',
        'Camera driver to start: none (use a running camera), v4l2 (v4l2_camera) or usb_cam.',
    ),
    ('video_device', '/dev/video0', 'Video device for camera:=v4l2 or camera:=usb_cam.'),
    (
        'frame_id',
        'camera_optical_frame',
        "Optical frame of the started camera driver; also RViz's fixed frame.",
    ),
    ('namespace', 'camera', 'Namespace of the camera topics and of depth_node.'),
    (
        'image_topic',
        'image_raw',
        'Image topic depth_node subscribes to (relative to the '
        'namespace; image_topic/compressed for image_transport compressed).',
    ),
    ('camera_info_topic', 'camera_info', 'CameraInfo topic (relative to the namespace).'),
    (
        'params_file',
        '',
        'Parameter file of depth_node (default: share/moa_depth_ros/config/moa_depth.yaml).',
    ),
    ('use_rviz', 'false', 'Start RViz showing the image, depth and point cloud.'),
    (
        'laserscan',
        'false',
        'Also start depthimage_to_laserscan on depth/image_rect (publishes scan in the '
        'namespace, frame laserscan_frame).',
    ),
    (
        'laserscan_frame',
        'camera_depth_frame',
        "LaserScan frame (depthimage_to_laserscan's output_frame: x forward, z up, at the "
        'camera; publish its transform to the optical frame).',
    ),
    ('log_level', 'info', 'Log level of depth_node.'),
    (
        'fastdds_profile',
        'false',
        'Give depth_node and the camera driver started here config/fastdds_large_frames.xml '
        '(FASTRTPS_/FASTDDS_DEFAULT_PROFILES_FILE, for rmw_fastrtps_cpp): a 16 MiB '
        'shared-memory segment, so camera-sized images and depth go through shared memory '
        'instead of fragments (README, QoS and Fast DDS shared memory). Left alone where a '
        'profile is set already or another RMW is chosen.',
    ),
    (
        'managed',
        'false',
        'Start managed_depth_node, the lifecycle variant: unconfigured until a lifecycle '
        "manager (Nav2's lifecycle_manager, `ros2 lifecycle set`) or autostart drives it.",
    ),
    (
        'autostart',
        'true',
        'With managed:=true, configure and activate the node from this launch file; false '
        'leaves that to a lifecycle manager.',
    ),
)


class _Driver:
    """A camera driver node and where it comes from."""

    def __init__(self, package, executable, parameters, env):
        self.package = package
        self.executable = executable
        self.node = Node(
            package=package,
            executable=executable,
            name=package,
            parameters=[parameters],
            additional_env=env,
            output='screen',
        )


def _camera_driver(camera, video_device, frame_id, env):
    """Return the driver for ``camera`` (both publish image_raw and camera_info), or None."""
    if camera == 'v4l2':
        parameters = {'video_device': video_device, 'camera_frame_id': frame_id}
        return _Driver('v4l2_camera', 'v4l2_camera_node', parameters, env)
    if camera == 'usb_cam':
        return _Driver(
            'usb_cam',
            'usb_cam_node_exe',
            {'video_device': video_device, 'frame_id': frame_id},
            env,
        )
    return None


# Where Fast DDS reads a default XML profile: Fast DDS 2 (Humble, Jazzy) the first only;
# Fast DDS 3 (Kilted on) both, the first with a deprecation warning unless the second is set.
_PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


def _fastdds_env(wanted, share, environment):
    """Return the environment that gives a node the large-frames Fast DDS profile, or {}.

    ``environment``: what launched processes get (the launch context's, with any
    SetEnvironmentVariable of an including launch file).
    """
    if not wanted or any(environment.get(name) for name in _PROFILE_VARIABLES):
        return {}  # not asked for, or the user's own profile stays
    if environment.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') != 'rmw_fastrtps_cpp':
        return {}
    profile = os.path.join(share, 'config', 'fastdds_large_frames.xml')
    if not os.path.isfile(profile):
        raise RuntimeError(f'fastdds_profile:=true, but {profile} is not installed')
    return dict.fromkeys(_PROFILE_VARIABLES, profile)


# Topics config/moa_depth.rviz displays, as named for the default namespace and image topic.
RVIZ_NAMESPACE = '/camera'
RVIZ_IMAGE_TOPIC = 'image_raw'
# depth/camera_info too: RViz's DepthCloud pairs the depth with the camera_info beside the
# topic it was configured with, before the remapping.
RVIZ_OUTPUT_TOPICS = ('depth/image_rect', 'depth/camera_info', 'depth/colored', 'points')


def _rviz_remappings(namespace, image_topic):
    """Point RViz's saved /camera/... topics at this launch's namespace and image topic."""
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    image = image_topic if image_topic.startswith('/') else f'{ns}/{image_topic}'
    pairs = [(f'{RVIZ_NAMESPACE}/{RVIZ_IMAGE_TOPIC}', image)]
    pairs += [(f'{RVIZ_NAMESPACE}/{topic}', f'{ns}/{topic}') for topic in RVIZ_OUTPUT_TOPICS]
    return [(saved, actual) for saved, actual in pairs if saved != actual]


def _installed_share(package, executable, why):
    """Return ``package``'s share directory, or raise naming what is missing and why."""
    try:
        prefix = get_package_prefix(package)
    except PackageNotFoundError:
        raise RuntimeError(
            f"package '{package}' is not installed ({why}); install it (e.g. sudo apt install "
            f'ros-$ROS_DISTRO-{package.replace("_", "-")}) or choose otherwise. Nothing was '
            f'started.'
        ) from None
    path = os.path.join(prefix, 'lib', package, executable)
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"package '{package}' has no executable '{executable}' at {path} ({why}); is it "
            f'built and installed? Nothing was started.'
        )
    return os.path.join(prefix, 'share', package)


def _launch_setup(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    camera = value['camera']
    if camera not in CAMERAS:
        raise ValueError(f'camera must be one of {", ".join(CAMERAS)}, got {camera!r}')
    use_rviz = value['use_rviz'].lower() in ('true', '1', 'yes')
    laserscan = value['laserscan'].lower() in ('true', '1', 'yes')
    # Everything is resolved before any action is returned: launch starts the nodes one by
    # one and would leave the first running when a later one turns out to be missing.
    managed = value['managed'].lower() in ('true', '1', 'yes')
    executable = 'managed_depth_node' if managed else 'depth_node'
    share = _installed_share(PACKAGE, executable, 'the depth node')
    fastdds_env = _fastdds_env(
        value['fastdds_profile'].lower() in ('true', '1', 'yes'),
        share,
        getattr(context, 'environment', os.environ),
    )
    driver = _camera_driver(camera, value['video_device'], value['frame_id'], fastdds_env)
    if driver is not None:
        _installed_share(driver.package, driver.executable, f'camera:={camera}')
    if use_rviz:
        _installed_share('rviz2', 'rviz2', 'use_rviz:=true')
    if laserscan:
        _installed_share(
            'depthimage_to_laserscan', 'depthimage_to_laserscan_node', 'laserscan:=true'
        )
    params_file = value['params_file'] or os.path.join(share, 'config', 'moa_depth.yaml')
    if not os.path.isfile(params_file):
        raise RuntimeError(
            f'params_file {params_file!r} does not exist; depth_node would run on built-in '
            f'defaults. Nothing was started.'
        )
    parameters = [params_file]
    if value['model']:
        parameters.append({'model_path': value['model']})
    image_topic = value['image_topic']
    actions = []
    if driver is not None:
        actions.append(driver.node)
    depth_node = {
        'package': PACKAGE,
        'executable': executable,
        'name': 'moa_depth_node',
        'parameters': parameters,
        'remappings': [
            ('image', image_topic),
            ('image/compressed', f'{image_topic}/compressed'),
            ('camera_info', value['camera_info_topic']),
        ],
        'arguments': ['--ros-args', '--log-level', value['log_level']],
        'additional_env': fastdds_env,
        'output': 'screen',
        'emulate_tty': True,
    }
    if managed:
        autostart = value['autostart'].lower() in ('true', '1', 'yes')
        actions += _managed(depth_node, autostart)
    else:
        actions.append(Node(**depth_node))
    if laserscan:
        actions.append(
            Node(
                package='depthimage_to_laserscan',
                executable='depthimage_to_laserscan_node',
                name='depthimage_to_laserscan',
                parameters=[{'output_frame': value['laserscan_frame']}],
                remappings=[
                    ('depth', 'depth/image_rect'),
                    ('depth_camera_info', 'depth/camera_info'),
                ],
                output='screen',
            )
        )
    if use_rviz:
        actions.append(
            Node(
                package='rviz2',
                executable='rviz2',
                name='rviz2',
                arguments=[
                    '-d',
                    os.path.join(share, 'config', 'moa_depth.rviz'),
                    '-f',
                    value['frame_id'],
                ],
                remappings=_rviz_remappings(value['namespace'], image_topic),
                output='screen',
            )
        )
    return actions


def _managed(depth_node, autostart):
    """Return the lifecycle node and, with autostart, the events that configure and activate it.

    As launch_ros's examples/lifecycle_pub_sub_launch.py: ChangeState(configure) once the
    process runs, ChangeState(activate) when the node reaches 'inactive'. A failed configure
    leaves it unconfigured (its log says why) and nothing activates it.
    """
    # Imported here: only a managed launch needs them (and lifecycle_msgs).
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    node = LifecycleNode(namespace='', **depth_node)
    if not autostart:
        return [node]

    def transition(transition_id):
        return EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(node), transition_id=transition_id
            )
        )

    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            goal_state='inactive',
            entities=[transition(Transition.TRANSITION_ACTIVATE)],
        )
    )
    return [activate, node, transition(Transition.TRANSITION_CONFIGURE)]


def _in_namespace(context, *args, **kwargs):
    # The driver and depth_node go into the camera namespace, where relative topics meet.
    namespace = LaunchConfiguration('namespace').perform(context)
    return [GroupAction([PushRosNamespace(namespace), *_launch_setup(context)])]


def generate_launch_description():
    """Declare the arguments; the nodes are built once their values are known."""
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=description)
            for name, default, description in ARGUMENTS
        ]
        + [OpaqueFunction(function=_in_namespace)]
    )
