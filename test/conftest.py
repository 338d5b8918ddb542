"""Shared pytest set-up: skip tests whose platform dependency is absent, with one reason.

Markers (pytest.ini): ``ros2`` needs rclpy, ``tensorrt`` needs the TensorRT Python
libraries, ``gpu`` needs a CUDA device. They run wherever those exist (a ROS workstation,
a Jetson) and skip here with a one-line reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest

# Keep the test run deterministic and light on a 2-core CI machine.
os.environ.setdefault('OMP_NUM_THREADS', '2')


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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


_SKIPS = {
    'ros2': (lambda: _importable('rclpy'), 'ROS 2 is not installed (rclpy not importable)'),
    'tensorrt': (_tensorrt_usable, 'TensorRT Python libraries are not installed'),
    'gpu': (_cuda_available, 'no CUDA GPU on this machine'),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, (available, reason) in _SKIPS.items():
            if marker in item.keywords and not available():
                item.add_marker(pytest.mark.skip(reason=reason))
                break
