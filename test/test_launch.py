"""The launch file, the parameter file and the RViz config as a user meets them.

Here (no ROS): the YAML documents exactly the node's parameters with their defaults and
types, the RViz config shows image, depth and cloud in the camera frame, and the launch
file, loaded against a recording stand-in of ``launch``/``launch_ros``, starts the nodes a
user asked for with the right remappings. With ROS 2: the real ``launch`` loads the file.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from pathlib import Path
import py_compile
import sys
import types

import pytest
import yaml

from moa_depth_ros.runtime import params

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'moa_depth.launch.py'
CONFIG_FILE = ROOT / 'config' / 'moa_depth.yaml'
RVIZ_FILE = ROOT / 'config' / 'moa_depth.rviz'


def test_parameter_file_documents_exactly_the_declared_parameters():
    document = yaml.safe_load(CONFIG_FILE.read_text())
    assert list(document) == ['/**']
    values = document['/**']['ros__parameters']
    assert set(values) == set(params.SPEC_BY_NAME)
    for name, value in values.items():
        spec = params.SPEC_BY_NAME[name]
        # ROS 2 parameters are statically typed: 10 is an integer, 10.0 a double.
        assert type(value) is type(spec.default), name
        assert value == spec.default, name
    text = CONFIG_FILE.read_text()
    assert text == params.render_yaml(), 'config/moa_depth.yaml is stale: run `make config`'
    for name in values:
        before = text[: text.index(f'    {name}:')].rstrip().splitlines()[-1]
        assert before.strip().startswith('#'), f'{name} has no comment above it'


def test_rviz_config_shows_image_depth_and_cloud_in_the_camera_frame():
    config = yaml.safe_load(RVIZ_FILE.read_text())['Visualization Manager']
    displays = {d['Topic']['Value']: d['Class'] for d in config['Displays'] if 'Topic' in d}
    assert displays['/camera/image_raw'] == 'rviz_default_plugins/Image'
    assert displays['/camera/depth/image_rect'] == 'rviz_default_plugins/Image'
    assert displays['/camera/points'] == 'rviz_default_plugins/PointCloud2'
    # Full resolution in 3D: DepthCloud on the depth, paired with its sibling camera_info.
    (depth_cloud,) = [d for d in config['Displays'] if d['Class'].endswith('/DepthCloud')]
    assert depth_cloud['Depth Map Topic'] == '/camera/depth/image_rect'
    cloud = next(d for d in config['Displays'] if d['Class'].endswith('PointCloud2'))
    assert cloud['Color Transformer'] == 'RGB8'  # matches cloud_rgb's packed rgb field
    assert config['Global Options']['Fixed Frame'] == 'camera_optical_frame'


# -- the launch file against a recording stand-in of launch / launch_ros ----------------------


class _Recorded:
    """Any launch class: remembers its arguments."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _stand_in_modules():
    names = {
        'launch': {},
        'launch.actions': {
            'DeclareLaunchArgument': type('DeclareLaunchArgument', (_Recorded,), {}),
            'GroupAction': type('GroupAction', (_Recorded,), {}),
            'OpaqueFunction': type('OpaqueFunction', (_Recorded,), {}),
        },
        'launch.launch_description': {
            'LaunchDescription': type('LaunchDescription', (_Recorded,), {})
        },
        'launch.substitutions': {'LaunchConfiguration': _LaunchConfiguration},
        'launch_ros': {},
        'launch_ros.actions': {
            'Node': type('Node', (_Recorded,), {}),
            'PushRosNamespace': type('PushRosNamespace', (_Recorded,), {}),
        },
    }
    modules = {}
    for name, attrs in names.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        modules[name] = module
    return modules


def _load_launch_file(module_name='moa_depth_launch_under_test'):
    spec = importlib.util.spec_from_file_location(module_name, LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install(prefix, package, executable):
    """Lay out ``package`` under ``prefix`` as colcon installs it (ament index, lib, share)."""
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / package
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text('')
    program = prefix / 'lib' / package / executable
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text('#!/bin/sh\n')
    program.chmod(0o755)
    return prefix / 'share' / package


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    """Make an install prefix holding moa_depth_ros and its config, and no other package."""
    pytest.importorskip('ament_index_python', reason='ament_index_python is not installed')
    root = tmp_path / 'install'
    config = install(root, 'moa_depth_ros', 'depth_node') / 'config'
    config.mkdir(parents=True)
    (config / 'moa_depth.yaml').write_text(CONFIG_FILE.read_text())
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(root))
    return root


@pytest.fixture
def launch_file(monkeypatch, prefix):
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return _load_launch_file()


def _run(launch_file, environment=None, **arguments):
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    declared = {
        e.args[0]: e.kwargs['default_value'] for e in entities if type(e).__name__.startswith('D')
    }
    context = types.SimpleNamespace(
        launch_configurations={**declared, **arguments},
        environment=dict(os.environ) if environment is None else environment,
    )
    (opaque,) = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    (group,) = opaque.kwargs['function'](context)
    namespace, *nodes = group.args[0]
    return declared, namespace.args[0], {n.kwargs['package']: n.kwargs for n in nodes}


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH_FILE), doraise=True)


def test_launch_defaults_start_only_depth_node_with_the_installed_parameter_file(
    launch_file, prefix
):
    declared, namespace, nodes = _run(launch_file)
    assert {'model', 'camera', 'image_topic', 'camera_info_topic', 'namespace'} <= set(declared)
    assert {'use_rviz', 'params_file'} <= set(declared)
    assert namespace == 'camera'
    assert list(nodes) == ['moa_depth_ros']
    node = nodes['moa_depth_ros']
    assert node['executable'] == 'depth_node'
    assert node['parameters'] == [str(prefix / 'share/moa_depth_ros/config/moa_depth.yaml')]
    assert node['remappings'] == [
        ('image', 'image_raw'),
        ('image/compressed', 'image_raw/compressed'),
        ('camera_info', 'camera_info'),
    ]


def test_webcam_launch_starts_the_driver_rviz_and_passes_the_model(launch_file, prefix):
    install(prefix, 'v4l2_camera', 'v4l2_camera_node')
    install(prefix, 'rviz2', 'rviz2')
    _, namespace, nodes = _run(
        launch_file,
        camera='v4l2',
        model='/models/m.onnx',
        use_rviz='true',
        namespace='webcam',
        frame_id='webcam_optical',
    )
    assert namespace == 'webcam'
    assert list(nodes) == ['v4l2_camera', 'moa_depth_ros', 'rviz2']
    assert nodes['v4l2_camera']['executable'] == 'v4l2_camera_node'
    assert nodes['v4l2_camera']['parameters'][0]['camera_frame_id'] == 'webcam_optical'
    assert nodes['moa_depth_ros']['parameters'][1] == {'model_path': '/models/m.onnx'}
    rviz_args = nodes['rviz2']['arguments']
    assert rviz_args[:2] == ['-d', str(prefix / 'share/moa_depth_ros/config/moa_depth.rviz')]
    assert rviz_args[2:] == ['-f', 'webcam_optical']


def test_fastdds_profile_reaches_depth_node_and_the_camera_driver(launch_file, prefix):
    install(prefix, 'v4l2_camera', 'v4l2_camera_node')
    profile = str(prefix / 'share/moa_depth_ros/config/fastdds_large_frames.xml')
    pathlib.Path(profile).write_text((ROOT / 'config' / 'fastdds_large_frames.xml').read_text())
    _, _, nodes = _run(launch_file, camera='v4l2', environment={})
    assert nodes['moa_depth_ros']['additional_env'] == {}  # opt-in
    _, _, nodes = _run(launch_file, camera='v4l2', fastdds_profile='true', environment={})
    for package in ('v4l2_camera', 'moa_depth_ros'):  # both publish camera-sized messages
        # Both names: Fast DDS 2 (Humble, Jazzy) reads the first, Fast DDS 3 prefers the second.
        assert nodes[package]['additional_env'] == {
            'FASTRTPS_DEFAULT_PROFILES_FILE': profile,
            'FASTDDS_DEFAULT_PROFILES_FILE': profile,
        }
    # A profile the user set (either name, also by an including launch file's
    # SetEnvironmentVariable: the launch context's environment), or another middleware, is
    # left as it is.
    for environment in (
        {'FASTRTPS_DEFAULT_PROFILES_FILE': '/etc/mine.xml'},
        {'FASTDDS_DEFAULT_PROFILES_FILE': '/etc/mine.xml'},
        {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'},
    ):
        _, _, nodes = _run(launch_file, fastdds_profile='true', environment=environment)
        assert nodes['moa_depth_ros']['additional_env'] == {}, environment


def test_the_fastdds_profile_is_valid_fast_dds_xml():
    import xml.etree.ElementTree as ET

    ns = {'f': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}
    root = ET.parse(ROOT / 'config' / 'fastdds_large_frames.xml').getroot()
    descriptors = {
        d.find('f:transport_id', ns).text: d for d in root.findall('.//f:transport_descriptor', ns)
    }
    shm = [d for d in descriptors.values() if d.find('f:type', ns).text == 'SHM']
    assert len(shm) == 1 and int(shm[0].find('f:segment_size', ns).text) >= 8 * 1024 * 1024
    participant = root.find('f:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    used = [t.text for t in participant.findall('f:rtps/f:userTransports/f:transport_id', ns)]
    assert sorted(used) == sorted(descriptors)  # shared memory, and UDPv4 beside it
    assert participant.find('f:rtps/f:useBuiltinTransports', ns).text == 'false'


@pytest.mark.parametrize(
    ('namespace', 'image_topic'),
    [('camera', 'image_raw'), ('webcam', 'image_raw'), ('front', 'color/image_raw'), ('', 'img')],
)
def test_rviz_shows_the_topics_of_the_chosen_namespace_and_image(
    launch_file, prefix, namespace, image_topic
):
    install(prefix, 'rviz2', 'rviz2')
    _, _, nodes = _run(launch_file, use_rviz='true', namespace=namespace, image_topic=image_topic)
    remap = dict(nodes['rviz2'].get('remappings') or [])
    config = yaml.safe_load(RVIZ_FILE.read_text())['Visualization Manager']
    saved = [d['Topic']['Value'] for d in config['Displays'] if 'Topic' in d]
    saved += [d['Depth Map Topic'] for d in config['Displays'] if 'Depth Map Topic' in d]
    # RViz's DepthCloud takes the camera_info beside its depth topic (image_transport).
    saved += [t.rsplit('/', 1)[0] + '/camera_info' for t in saved if t.endswith('/image_rect')]
    shown = {remap.get(topic, topic) for topic in saved}
    ns = f'/{namespace}' if namespace else ''
    expected = {f'{ns}/{image_topic}'} | {
        f'{ns}/{t}' for t in ('depth/image_rect', 'depth/camera_info', 'depth/colored', 'points')
    }
    assert shown == expected


def test_usb_cam_and_remapped_topics(launch_file, prefix, tmp_path):
    install(prefix, 'usb_cam', 'usb_cam_node_exe')
    my_params = tmp_path / 'my.yaml'
    my_params.write_text(CONFIG_FILE.read_text())
    _, _, nodes = _run(
        launch_file,
        camera='usb_cam',
        image_topic='color/image_raw',
        camera_info_topic='color/camera_info',
        params_file=str(my_params),
    )
    assert nodes['usb_cam']['executable'] == 'usb_cam_node_exe'
    node = nodes['moa_depth_ros']
    assert node['parameters'] == [str(my_params)]
    assert ('image/compressed', 'color/image_raw/compressed') in node['remappings']
    assert ('camera_info', 'color/camera_info') in node['remappings']


@pytest.mark.parametrize(
    ('arguments', 'says'),
    [
        ({'use_rviz': 'true'}, "package 'rviz2' is not installed (use_rviz:=true)"),
        ({'camera': 'v4l2'}, "package 'v4l2_camera' is not installed (camera:=v4l2)"),
        ({'camera': 'usb_cam'}, "package 'usb_cam' is not installed (camera:=usb_cam)"),
        ({'params_file': '/no/such/params.yaml'}, "params_file '/no/such/params.yaml' does not"),
        (
            {'laserscan': 'true'},
            "package 'depthimage_to_laserscan' is not installed (laserscan:=true)",
        ),
    ],
)
def test_what_is_missing_stops_the_launch_before_any_node_starts(launch_file, arguments, says):
    # Launch starts the returned nodes one by one: had depth_node been returned before a
    # missing RViz was found, it would keep running after `ros2 launch` gave up.
    with pytest.raises(RuntimeError) as raised:
        _run(launch_file, **arguments)
    assert says in str(raised.value) and 'Nothing was started' in str(raised.value)


def test_laserscan_reads_the_depth_and_its_sibling_camera_info(launch_file, prefix):
    install(prefix, 'depthimage_to_laserscan', 'depthimage_to_laserscan_node')
    _, namespace, nodes = _run(launch_file, laserscan='true', laserscan_frame='base_scan')
    scan = nodes['depthimage_to_laserscan']
    assert scan['executable'] == 'depthimage_to_laserscan_node'
    # Its inputs are `depth` and `depth_camera_info` (depthimage_to_laserscan's README).
    assert dict(scan['remappings']) == {
        'depth': 'depth/image_rect',
        'depth_camera_info': 'depth/camera_info',
    }
    assert scan['parameters'] == [{'output_frame': 'base_scan'}]
    assert list(nodes) == ['moa_depth_ros', 'depthimage_to_laserscan'] and namespace == 'camera'


def test_a_package_without_its_executable_is_refused(launch_file, prefix):
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'rviz2'
    marker.write_text('')  # indexed, but lib/rviz2/rviz2 is missing (a broken install)
    with pytest.raises(RuntimeError, match="no executable 'rviz2'"):
        _run(launch_file, use_rviz='true')


def test_unknown_camera_is_refused_with_the_choices(launch_file):
    with pytest.raises(ValueError, match='camera must be one of none, v4l2, usb_cam'):
        _run(launch_file, camera='webcam')


@pytest.mark.launch_ros
def test_real_launch_loads_the_file_and_declares_its_arguments():
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    source = PythonLaunchDescriptionSource(str(LAUNCH_FILE))
    description = source.try_get_launch_description_without_context()
    names = {arg.name for arg in description.get_launch_arguments()}
    assert {'model', 'camera', 'namespace', 'use_rviz', 'params_file'} <= names


def _managed_stand_ins(monkeypatch):
    """Add the launch / launch_ros classes a managed launch uses (lifecycle_msgs: real)."""
    stand_ins = {
        'launch.actions': ['EmitEvent', 'RegisterEventHandler'],
        'launch_ros.actions': ['LifecycleNode'],
        'launch_ros.event_handlers': ['OnStateTransition'],
        'launch_ros.events.lifecycle': ['ChangeState'],
    }
    for module_name, classes in stand_ins.items():
        module = sys.modules.get(module_name) or types.ModuleType(module_name)
        for name in classes:
            setattr(module, name, type(name, (_Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    events = types.ModuleType('launch.events')
    events.matches_action = lambda action: ('matches', action)
    monkeypatch.setitem(sys.modules, 'launch.events', events)
    monkeypatch.setitem(sys.modules, 'launch_ros.events', types.ModuleType('launch_ros.events'))


@pytest.mark.parametrize('autostart', ['true', 'false'])
def test_managed_launch_starts_the_lifecycle_node_and_autostart_drives_it(
    launch_file, prefix, monkeypatch, autostart
):
    # As launch_ros's examples/lifecycle_pub_sub_launch.py: configure once started, activate
    # on reaching 'inactive'; without autostart a lifecycle manager drives it.
    pytest.importorskip('lifecycle_msgs', reason='lifecycle_msgs is not installed')
    from lifecycle_msgs.msg import Transition

    _managed_stand_ins(monkeypatch)
    install(prefix, 'moa_depth_ros', 'managed_depth_node')
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    declared = {
        e.args[0]: e.kwargs['default_value'] for e in entities if type(e).__name__.startswith('D')
    }
    assert declared['managed'] == 'false' and declared['autostart'] == 'true'
    context = types.SimpleNamespace(
        launch_configurations={**declared, 'managed': 'true', 'autostart': autostart}
    )
    (opaque,) = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    (group,) = opaque.kwargs['function'](context)
    _, *actions = group.args[0]
    kinds = [type(a).__name__ for a in actions]
    (node,) = [a for a in actions if type(a).__name__ == 'LifecycleNode']
    assert node.kwargs['executable'] == 'managed_depth_node'
    assert node.kwargs['name'] == 'moa_depth_node' and node.kwargs['namespace'] == ''
    assert ('image', 'image_raw') in node.kwargs['remappings']
    if autostart == 'false':
        assert kinds == ['LifecycleNode']
        return
    assert kinds == ['RegisterEventHandler', 'LifecycleNode', 'EmitEvent']
    (handler,) = actions[0].args
    assert handler.kwargs['target_lifecycle_node'] is node
    assert handler.kwargs['goal_state'] == 'inactive'
    (activate,) = handler.kwargs['entities']
    event = activate.kwargs['event']
    assert event.kwargs['transition_id'] == Transition.TRANSITION_ACTIVATE
    assert event.kwargs['lifecycle_node_matcher'] == ('matches', node)
    configure = actions[2].kwargs['event']
    assert configure.kwargs['transition_id'] == Transition.TRANSITION_CONFIGURE
