"""The linters ROS packages run as tests (ament_flake8 / ament_pep257 style) via ruff."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ruff() -> str:
    exe = pathlib.Path(sys.executable).with_name('ruff')
    assert exe.exists(), 'ruff is a test requirement (requirements-test.txt)'
    return str(exe)


def test_ruff_lint_ament_style():
    """pycodestyle, pyflakes, import order, single quotes and pep257 docstrings."""
    result = subprocess.run(
        [_ruff(), 'check', '--no-cache', '--output-format', 'concise', '.'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = subprocess.run(
        [_ruff(), 'format', '--no-cache', '--check', '.'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, 'run `make format`:\n' + result.stdout + result.stderr
