"""Stand-in of rclpy for tests without ROS 2: the API surface moa_depth_ros.node uses.

Signatures follow ros2/rclpy (Humble 3.3 and Jazzy 7.1 agree on everything used here):
init/shutdown/try_shutdown/ok/spin/create_node, rclpy.node.Node, rclpy.parameter.Parameter,
rclpy.qos, rclpy.executors, rclpy.logging. ``--ros-args -p name:=value`` given to ``init``
become global parameter overrides, as with the real rcl argument parser.
"""

import yaml

_state = {'ok': False, 'overrides': {}}


def _parse_ros_args(args):
    overrides = {}
    if not args or '--ros-args' not in args:
        return overrides
    rest = args[args.index('--ros-args') + 1 :]
    for flag, value in zip(rest, rest[1:]):
        if flag in ('-p', '--param'):
            name, _, text = value.partition(':=')
            overrides[name] = yaml.safe_load(text) if text else ''
    return overrides


def init(*, args=None, context=None, domain_id=None, signal_handler_options=None):
    if _state['ok']:
        raise RuntimeError('Context.init() must only be called once')
    _state['ok'] = True
    _state['overrides'] = _parse_ros_args(list(args or []))


def ok(*, context=None):
    return _state['ok']


def shutdown(*, context=None, uninstall_handlers=None):
    if not _state['ok']:
        raise RuntimeError('Context must be initialized before it can be shutdown')
    _state['ok'] = False


def try_shutdown(*, context=None, uninstall_handlers=None):
    _state['ok'] = False


def create_node(node_name, **kwargs):
    from rclpy.node import Node

    return Node(node_name, **kwargs)


def spin(node, executor=None):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor() if executor is None else executor
    executor.add_node(node)
    try:
        executor.spin()
    finally:
        executor.remove_node(node)


def spin_once(node, *, executor=None, timeout_sec=None):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor() if executor is None else executor
    executor.add_node(node)
    executor.spin_once(timeout_sec=timeout_sec)
