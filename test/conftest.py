"""Shared pytest set-up: skip tests whose platform dependency is absent, with one reason.

Markers (pytest.ini):

- ``ros2``: starts DDS participants with real rclpy. Needs rclpy (the PyPI ``ros-jazzy-*``
  or ``ros-kilted-*`` wheels, or a ROS installation) AND a private network namespace, so DDS
  traffic never leaves the machine: ``make test`` runs pytest through ``.ci/netns-run``.
  Outside such a namespace these tests skip rather than talk to the network.
- ``launch_ros``: needs ROS 2's launch / launch_ros (a ROS installation; not on PyPI).
- ``cv_bridge``: needs ROS 2's cv_bridge (not on PyPI).
- ``tensorrt``: needs the TensorRT Python libraries; ``gpu``: a CUDA device.
- ``registry``: needs the package registry (pip resolution); runs outside the namespace.

Every test that starts participants gets a ROS domain of its own (``ros_domain``), so a
node left over from one test can never answer another.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import itertools
import os
import random
import shutil
import tempfile

import pytest

# Keep the test run deterministic and light on a 2-core CI machine.
os.environ.setdefault('OMP_NUM_THREADS', '2')
# Second guard behind the namespace: ROS 2 discovery stays on this host (Jazzy and later).
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_LOCALHOST_ONLY'] = '1'  # Humble reads this one
os.environ.pop('ROS_STATIC_PEERS', None)
# Engine caches (TensorRT engines, OpenVINO compiled models, the auto backend choice) go to a
# directory of this run, never the user's ~/.cache: a verdict measured by one run must not
# decide the next, and tests must not leave files behind. Child processes inherit it.
_ENGINE_CACHE = tempfile.mkdtemp(prefix='moa-depth-test-cache-')
os.environ['MOA_DEPTH_ENGINE_CACHE'] = _ENGINE_CACHE
atexit.register(shutil.rmtree, _ENGINE_CACHE, ignore_errors=True)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def network_interfaces() -> list[str]:
    """Names of the network interfaces of this process's network namespace."""
    # /proc/self/net is per namespace; /sys/class/net shows the host's whatever the namespace.
    with open('/proc/self/net/dev', encoding='ascii') as f:
        return [line.split(':', 1)[0].strip() for line in f.readlines()[2:] if ':' in line]


@functools.lru_cache(maxsize=None)
def dds_isolation_problem() -> str | None:
    """Why DDS participants may not start here, or None when only loopback exists."""
    try:
        others = [name for name in network_interfaces() if name != 'lo']
    except OSError as e:
        return f'cannot list network interfaces ({e}); DDS must not reach the network'
    if not others:
        return None
    why = os.environ.get('MOA_DEPTH_NO_NETNS')
    return (
        f'not in a private network namespace (interfaces: {", ".join(others)}); DDS must '
        f'not reach the network: run through `make test` (.ci/netns-run)'
        + (f'; {why}' if why else '')
    )


@functools.lru_cache(maxsize=None)
def _ros2_problem() -> str | None:
    if not _importable('rclpy'):
        return 'ROS 2 is not installed (rclpy not importable)'
    return dds_isolation_problem()


@functools.lru_cache(maxsize=None)
def _tensorrt_usable() -> bool:
    """Tell whether ``import tensorrt`` gives the real library (PyPI ships stubs)."""
    if not _importable('tensorrt'):
        return False
    try:
        import tensorrt

        return hasattr(tensorrt, 'Builder')
    except Exception:  # the PyPI stub raises on import when it cannot fetch the libraries
        return False


@functools.lru_cache(maxsize=None)
def _cuda_available() -> bool:
    if not _importable('torch'):
        return False
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=None)
def _launch_ros_problem() -> str | None:
    # A ROS installation's launch_ros, else Jazzy's sources beside the repository (not on PyPI;
    # test/launch_sources.py says where and why).
    from launch_sources import use_launch_sources

    return use_launch_sources()


@functools.lru_cache(maxsize=None)
def _cv_bridge_problem() -> str | None:
    if not _importable('cv_bridge'):
        return 'cv_bridge is not installed (a ROS 2 installation; not on PyPI)'
    try:  # Humble's cv_bridge fails to import under NumPy 2 (ros-perception/vision_opencv#535)
        import cv_bridge  # noqa: F401
    except Exception as e:
        return f'cv_bridge does not import here: {type(e).__name__}: {e}'
    return None


def _registry_problem() -> str | None:
    if os.environ.get('MOA_DEPTH_NETNS') == '1':
        return "needs the package registry; runs in `make test`'s second, networked pass"
    return None


# marker -> () -> None when usable, else the reason to skip
_SKIPS = {
    'ros2': _ros2_problem,
    'launch_ros': _launch_ros_problem,
    'cv_bridge': _cv_bridge_problem,
    'tensorrt': lambda: (
        None if _tensorrt_usable() else 'TensorRT Python libraries are not installed'
    ),
    'gpu': lambda: None if _cuda_available() else 'no CUDA GPU on this machine',
    'openvino': lambda: (
        None
        if _importable('openvino')
        else 'OpenVINO is not installed (requirements-openvino.txt)'
    ),
    'registry': _registry_problem,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, problem in _SKIPS.items():
            if marker in item.keywords:
                reason = problem()
                if reason is not None:
                    item.add_marker(pytest.mark.skip(reason=reason))
                    break


# ROS domains 1..232 are valid for Fast DDS; inside the private namespace no other process
# shares them, and a fresh one per test keeps tests apart.
_FIRST_DOMAIN = random.Random(os.getpid()).randrange(232)
_DOMAINS = itertools.cycle([(_FIRST_DOMAIN + i) % 232 + 1 for i in range(232)])


def take_ros_domain() -> int:
    """Hand out a ROS domain id nobody else in this run uses; skip outside isolation."""
    problem = _ros2_problem()
    if problem is not None:
        pytest.skip(problem)
    return next(_DOMAINS)


@pytest.fixture
def ros_domain() -> int:
    """Give this test a ROS domain id of its own (skipped outside isolation)."""
    return take_ros_domain()


@pytest.fixture(scope='module')
def module_ros_domain() -> int:
    """Give one module's tests a shared ROS domain id (for a node process they share)."""
    return take_ros_domain()


@pytest.fixture
def graph(ros_domain):
    """Give this test a RosGraph: this process's rclpy context and executor, own domain."""
    from ros_graph import RosGraph

    graph = RosGraph(ros_domain)
    yield graph
    graph.close()


@pytest.fixture
def make_node(graph, model_path):
    """Build DepthNode on the graph (the test module's model_path) with parameter overrides."""
    from rclpy.parameter import Parameter

    from moa_depth_ros.runtime.node import DepthNode

    def make(**overrides):
        # ONNX Runtime unless a test asks: backend auto may measure OpenVINO faster and run
        # the CPU's bf16, and the node tests compare depth to 1e-5.
        values = {'model_path': model_path, 'backend': 'onnxruntime', **overrides}
        node = DepthNode(
            context=graph.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        return graph.add(node)

    return make
