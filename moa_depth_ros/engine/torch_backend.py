"""The PyTorch backend: a training checkpoint (or a model object) behind ``DepthEngine``.

It runs the very ``forward()`` that export turns into ONNX, so it is the reference the other
backends are checked against. torch and the model package are imported only when this
backend is constructed, never by importing ``moa_depth_ros.engine``.

``precision='bf16'`` runs under ``torch.autocast`` with bfloat16 (CPU with AVX-512 BF16 /
AMX, or a GPU); ``'fp16'`` autocasts on CUDA only. FP32 stays the default: see
``tools.bench.engines`` for the measured speed and accuracy of each.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any

import numpy as np

from moa_depth_ros import __version__
from moa_depth_ros.engine.base import DepthEngine, metadata_from_description
from moa_depth_ros.errors import CheckpointError, ConfigError, EngineError

TORCH_PRECISIONS = ('fp32', 'bf16', 'fp16')


def resolve_torch_device(device: str) -> Any:
    """Map 'auto' / 'cpu' / 'cuda' / 'cuda:N' to a torch.device ('auto' prefers CUDA)."""
    import torch

    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f'device must be auto, cpu, cuda or cuda:N, got {device!r}') from e
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise EngineError(f'device {device!r} asked for CUDA, but torch sees no CUDA GPU')
    if resolved.type not in ('cpu', 'cuda'):
        raise ConfigError(f'device must be auto, cpu, cuda or cuda:N, got {device!r}')
    return resolved


class TorchEngine(DepthEngine):
    """A ``DepthModel`` run with ``torch.inference_mode`` on CPU or CUDA."""

    backend = 'torch'

    def __init__(
        self,
        model_or_path: Any,
        *,
        device: str = 'auto',
        precision: str = 'fp32',
    ) -> None:
        import torch

        if precision not in TORCH_PRECISIONS:
            raise ConfigError(
                f'torch precision must be one of {list(TORCH_PRECISIONS)}, got {precision!r}'
            )
        self._torch = torch
        self.device = resolve_torch_device(device)
        if precision == 'fp16' and self.device.type != 'cuda':
            raise ConfigError('torch precision fp16 needs a CUDA device; use bf16 on a CPU')
        self.precision = precision
        package_version = __version__
        if isinstance(model_or_path, (str, os.PathLike)):
            self.path: pathlib.Path | None = pathlib.Path(model_or_path)
            model, package_version = _load_checkpoint(self.path)
        else:
            self.path = None
            model = model_or_path
        source = os.fspath(self.path) if self.path else type(model).__name__
        super().__init__(
            metadata_from_description(
                model.describe(), package_version=package_version, source=source
            )
        )
        self.model = model.to(self.device).eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == 'fp32':
            return contextlib.nullcontext()
        dtype = self._torch.bfloat16 if self.precision == 'bf16' else self._torch.float16
        return self._torch.autocast(self.device.type, dtype=dtype)

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run ``model.forward`` and return numpy float32 (depth_m, confidence)."""
        if self.model is None:
            raise EngineError('torch engine is closed')
        x = self._torch.from_numpy(self.check_input(image)).to(self.device)
        with self._torch.inference_mode(), self._autocast():
            depth, confidence = self.model(x)
        return (
            depth.float().cpu().numpy(),
            confidence.float().cpu().numpy(),
        )

    def close(self) -> None:
        """Drop the model (frees GPU memory once unreferenced). Idempotent."""
        self.model = None

    def describe(self) -> str:
        """One line for logs: model, device and precision."""
        return f'{super().describe()} [{self.device}, {self.precision}]'


def _load_checkpoint(path: pathlib.Path) -> tuple[Any, str]:
    """Load a ``.safetensors`` checkpoint with the model package; errors become EngineError."""
    if not path.is_file():
        raise EngineError(f'checkpoint {os.fspath(path)!r} does not exist')
    from moa_depth_ros.model import load_model, read_checkpoint_metadata

    try:
        model = load_model(path, map_location='cpu')
        version = read_checkpoint_metadata(path).get('package_version') or __version__
    except CheckpointError as e:
        raise EngineError(f'{path}: cannot load the checkpoint: {e}') from e
    return model, version
