"""The ``moa-depth`` command line: help, version, and error reporting."""

from __future__ import annotations

import subprocess
import sys

from moa_depth_ros import __version__, cli


def test_version_flag(capsys):
    try:
        cli.main(['--version'])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert 'usage: moa-depth' in capsys.readouterr().out


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, '-m', 'moa_depth_ros', '--help'], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert 'moa-depth' in out.stdout
