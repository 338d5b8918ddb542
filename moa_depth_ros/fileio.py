"""Atomic file writes shared by every layer (checkpoints, ONNX, engines, reports).

A write goes to a temporary file in the target's directory and is renamed over the target
only once complete, so a reader (or a crash) sees the old file or the new one, never half.
``tempfile.mkstemp`` creates 0600 files and ``os.replace`` keeps that mode, so the new file
takes the old file's permission bits, or what the umask allows: a model written by one user
stays readable by the user a ROS node or container runs as.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Iterator

PathLike = str | os.PathLike


def _umask() -> int:
    try:  # Linux >= 4.7 reports it without touching it
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # os.umask can only be read by setting it; restored at once
    os.umask(mask)
    return mask


def new_file_mode(path: PathLike) -> int:
    """Permission bits for a file about to replace ``path``: its current ones, else umask's."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that need a file name (safetensors, onnx, quantizers). If the block raises,
    the temporary file is removed and ``path`` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield tmp_name
        with open(tmp_name, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp_name, open(tmp_name, 'wb') as f:
        f.write(data)
    return pathlib.Path(path)


def atomic_write_text(path: PathLike, text: str) -> pathlib.Path:
    """Write UTF-8 text atomically (see ``atomic_write_bytes``)."""
    return atomic_write_bytes(path, text.encode('utf-8'))
