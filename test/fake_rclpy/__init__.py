"""A stand-in of the rclpy API surface moa_depth_ros.node uses, for tests without ROS 2.

The packages under ``site/`` (rclpy, sensor_msgs, std_msgs, builtin_interfaces,
diagnostic_msgs, rcl_interfaces) follow the real signatures of ros2/rclpy and the field
types of rosidl-generated messages (see ``site/_fake_rosidl.py``). ``install(monkeypatch)``
puts them first on sys.path for one test and removes every module it loaded afterwards, so
a real ROS installation is never shadowed outside the tests that ask for the stand-in.
"""

from __future__ import annotations

import importlib
from pathlib import Path
import sys

import pytest

SITE = Path(__file__).resolve().parent / 'site'
TOP_LEVEL = (
    'rclpy',
    'rcl_interfaces',
    'sensor_msgs',
    'std_msgs',
    'builtin_interfaces',
    'diagnostic_msgs',
    '_fake_rosidl',
)
# Modules that bind rclpy at import and must be re-imported against the stand-in.
DEPENDENTS = ('moa_depth_ros.node',)


def _owned(name: str) -> bool:
    return name.split('.')[0] in TOP_LEVEL or name in DEPENDENTS


def install(monkeypatch: pytest.MonkeyPatch):
    """Make ``import rclpy`` (and the message packages) load the stand-in for this test.

    Returns the stand-in ``rclpy`` module. Real modules of the same names that were already
    imported are set aside and restored by ``monkeypatch`` at teardown; call ``uninstall``
    before that (a fixture's teardown) to forget the stand-in modules.
    """
    for name in list(sys.modules):
        if _owned(name):
            monkeypatch.delitem(sys.modules, name)
    for name in DEPENDENTS:
        parent, _, child = name.rpartition('.')
        if parent in sys.modules:
            # `from package import child` would find the old submodule on the package.
            monkeypatch.delattr(sys.modules[parent], child, raising=False)
    monkeypatch.syspath_prepend(str(SITE))
    rclpy = importlib.import_module('rclpy')
    for sub in ('node', 'executors', 'logging', 'parameter', 'qos'):
        importlib.import_module(f'rclpy.{sub}')
    return rclpy


def uninstall() -> None:
    """Drop every stand-in module (and its dependents) from sys.modules."""
    for name in list(sys.modules):
        if _owned(name):
            module = sys.modules[name]
            origin = getattr(module, '__file__', None) or ''
            if name in DEPENDENTS or origin.startswith(str(SITE)):
                del sys.modules[name]
    for name in DEPENDENTS:
        parent, _, child = name.rpartition('.')
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)
