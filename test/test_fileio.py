"""Atomic writes: a reader or a crash sees the old file or the new one, never half."""

from __future__ import annotations

import os
import stat

import pytest

from moa_depth_ros import fileio


def test_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / 'sub' / 'model.onnx'
    fileio.atomic_write_bytes(target, b'old')
    fileio.atomic_write_text(target, 'new contents')
    assert target.read_text() == 'new contents'
    assert sorted(p.name for p in target.parent.iterdir()) == ['model.onnx']


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / 'model.safetensors'
    target.write_bytes(b'good')
    with pytest.raises(RuntimeError, match='disk full'):
        with fileio.atomic_output(target) as tmp_name:
            with open(tmp_name, 'wb') as f:
                f.write(b'half')
            raise RuntimeError('disk full')
    assert target.read_bytes() == b'good'
    assert [p.name for p in tmp_path.iterdir()] == ['model.safetensors']


def test_new_files_follow_the_umask_and_replacements_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = fileio.atomic_write_bytes(tmp_path / 'a.engine', b'x')
    finally:
        os.umask(old)
    # mkstemp alone would give 0600: unreadable to a node running as another user.
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    os.chmod(fresh, 0o640)
    fileio.atomic_write_bytes(fresh, b'y')
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
