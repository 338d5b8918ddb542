"""Where the tests find ROS 2's launch and launch_ros when no ROS installation provides them.

They are pure Python but not on PyPI. ``../shared/ros-src/jazzy`` (or the folder in
``MOA_DEPTH_ROS_LAUNCH_SRC``) holds unmodified source trees of Jazzy's ros2/launch and
ros2/launch_ros; they are not part of the project and are never copied into it. Their PyPI
dependencies (osrf-pycommon, lark, PyYAML, ament_index_python, lifecycle_msgs) are test
requirements; composition_interfaces, which has no wheel, gets the import-only stand-in in
``test/stand_ins``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = 'MOA_DEPTH_ROS_LAUNCH_SRC'
DEFAULT_SRC = ROOT.parent / 'shared' / 'ros-src' / 'jazzy'
# The parent folder of each Python package, as the source trees lay them out.
PACKAGE_PARENTS = (
    'launch/launch',
    'launch/launch_xml',
    'launch/launch_yaml',
    'launch/launch_testing',
    'launch_ros/launch_ros',
    'launch_ros/ros2launch',
    'launch_ros/launch_testing_ros',
)
PYPI_DEPENDENCIES = {
    'osrf_pycommon': 'osrf-pycommon',
    'lark': 'lark-parser',
    'yaml': 'PyYAML',
    'ament_index_python': 'ros-jazzy-ament-index-python',
    'lifecycle_msgs': 'ros-jazzy-lifecycle-msgs',
    'rclpy': 'ros-jazzy-rclpy',
}
STAND_INS = Path(__file__).resolve().parent / 'stand_ins'


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def use_launch_sources() -> str | None:
    """Make ``launch`` and ``launch_ros`` importable; return why they cannot be, or None.

    An installed ROS 2 (``launch_ros`` importable) is used as it is. Otherwise the source
    trees are appended to sys.path: after everything else, so that an installed package
    always wins, and a regular package beats the repository's own ``launch/`` folder (which
    Python would otherwise take for a namespace package called ``launch``).
    """
    if _importable('launch_ros'):
        return None
    src = Path(os.environ.get(ENV_VAR) or DEFAULT_SRC)
    parents = [src / parent for parent in PACKAGE_PARENTS]
    if not all(parent.is_dir() for parent in parents):
        return (
            f'ROS 2 launch_ros is not installed and its Jazzy sources are not at {src} '
            f'(set {ENV_VAR} to a folder holding ros2/launch and ros2/launch_ros)'
        )
    missing = [dist for module, dist in PYPI_DEPENDENCIES.items() if not _importable(module)]
    if missing:
        return f'the launch sources need {", ".join(missing)} (requirements-test.txt)'
    for parent in parents:
        if str(parent) not in sys.path:
            sys.path.append(str(parent))
    if not _importable('composition_interfaces') and str(STAND_INS) not in sys.path:
        sys.path.append(str(STAND_INS))
    importlib.invalidate_caches()
    return None if _importable('launch_ros') else f'launch_ros does not import from {src}'
