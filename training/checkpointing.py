"""Resumable training state: one safetensors file, no pickle.

``runs/<name>/train_state.safetensors`` holds everything a killed run needs to continue
exactly where it stopped: model weights, AdamW moments, the scheduler and GradScaler state,
the EMA weights, epoch/step counters, the best validation metric, the recipe, and the RNG
states of python, numpy and torch. Tensors go into the safetensors body under prefixed
keys (``model/``, ``ema/``, ``optim/``, ``rng/``); everything else is one JSON document in
the header metadata under ``train_state``. The optimizer state dict is flattened: each
per-parameter tensor becomes ``optim/<param index>/<key>`` and the parameter groups (plain
numbers and flags) go into the JSON, so loading never executes code from the file.

Writes are atomic (temporary file in the same directory, then ``os.replace``): a kill at
any moment leaves either the previous state or the new one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
import torch

from moa_depth_ros.errors import CheckpointError

FORMAT = 'moa_depth_ros.train_state'
FORMAT_VERSION = '1'
STATE_FILE = 'train_state.safetensors'


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared storage and views: give every entry its own memory.
    return tensor.detach().to('cpu', copy=True).contiguous()


def _flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict['state'].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f'optim/{index}/{key}'] = _cpu(value)
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {'param_groups': state_dict['param_groups'], 'scalars': scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], structure: Mapping) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split('/', 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in structure.get('scalars', {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [dict(g) for g in structure['param_groups']]
    for group in groups:
        if isinstance(group.get('betas'), list):  # JSON turned the tuple into a list
            group['betas'] = tuple(group['betas'])
    return {'state': state, 'param_groups': groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the python, numpy and torch (CPU and CUDA) RNG states as tensors + JSON."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {
        'rng/python': torch.tensor(py_state, dtype=torch.int64),
        'rng/numpy': torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        'rng/torch': torch.get_rng_state().clone(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f'rng/cuda/{i}'] = cuda_state.cpu().clone()
    info = {
        'python_version': py_version,
        'python_gauss': py_gauss,
        'numpy_name': np_name,
        'numpy_pos': int(np_pos),
        'numpy_has_gauss': int(np_has_gauss),
        'numpy_gauss': float(np_gauss),
    }
    return tensors, info


def restore_rng(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Put back the RNG states recorded by ``capture_rng``."""
    random.setstate(
        (
            info['python_version'],
            tuple(int(v) for v in tensors['rng/python'].tolist()),
            info['python_gauss'],
        )
    )
    np.random.set_state(
        (
            info['numpy_name'],
            tensors['rng/numpy'].numpy().astype(np.uint32),
            info['numpy_pos'],
            info['numpy_has_gauss'],
            info['numpy_gauss'],
        )
    )
    torch.set_rng_state(tensors['rng/torch'])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith('rng/cuda/')]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


@dataclasses.dataclass
class TrainingState:
    """A loaded training state: counters and config as data, tensors by section."""

    path: pathlib.Path
    epoch: int
    step: int
    step_in_epoch: int
    best_metric: float
    config: dict[str, Any]
    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix/`` with the prefix removed."""
        start = len(prefix) + 1
        return {k[start:]: v for k, v in self.tensors.items() if k.startswith(prefix + '/')}

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        scaler: Any = None,
        ema: Any = None,
    ) -> None:
        """Load weights, optimizer, scheduler, scaler and EMA state into live objects."""
        try:
            model.load_state_dict(self.section('model'), strict=True)
            optim_tensors = {k: v for k, v in self.tensors.items() if k.startswith('optim/')}
            optimizer.load_state_dict(_unflatten_optimizer(optim_tensors, self.info['optimizer']))
            if scheduler is not None and self.info.get('scheduler') is not None:
                scheduler.load_state_dict(self.info['scheduler'])
            if scaler is not None and self.info.get('scaler'):
                scaler.load_state_dict(self.info['scaler'])
            if ema is not None:
                ema.load_state_dict(self.section('ema'))
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f'{self.path}: training state does not match this model/optimizer '
                f'(was the recipe changed since it was written?): {e}'
            ) from e

    def restore_rng(self) -> None:
        """Continue the random streams exactly where the interrupted run left them."""
        restore_rng(self.section_with_prefix('rng'), self.info['rng'])

    def section_with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix/`` keeping their full keys."""
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix + '/')}


def save_training_state(
    path: str | pathlib.Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    scaler: Any = None,
    ema_state: Mapping[str, torch.Tensor] | None = None,
    epoch: int,
    step: int,
    step_in_epoch: int = 0,
    best_metric: float = float('inf'),
    config: Mapping[str, Any],
) -> pathlib.Path:
    """Write the full training state atomically; ``epoch`` is the epoch to run next.

    ``step_in_epoch`` counts the batches of ``epoch`` already consumed (non-zero when the
    state is written inside an epoch), so a resumed run skips exactly those.
    """
    path = pathlib.Path(path)
    tensors = {f'model/{k}': _cpu(v) for k, v in model.state_dict().items()}
    if ema_state is not None:
        tensors.update({f'ema/{k}': _cpu(v) for k, v in ema_state.items()})
    optim_tensors, optim_structure = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    rng_tensors, rng_info = capture_rng()
    tensors.update(rng_tensors)
    scheduler_state = None
    if scheduler is not None:
        scheduler_state = dict(scheduler.state_dict())
        if 'lr_lambdas' in scheduler_state:
            # The schedule functions are rebuilt from the recipe, never stored.
            scheduler_state['lr_lambdas'] = [None] * len(scheduler_state['lr_lambdas'])
    info = {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'epoch': int(epoch),
        'step': int(step),
        'step_in_epoch': int(step_in_epoch),
        'best_metric': float(best_metric),
        'config': dict(config),
        'optimizer': optim_structure,
        'scheduler': scheduler_state,
        'scaler': scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        'rng': rng_info,
    }
    try:
        metadata = {'format': FORMAT, 'train_state': json.dumps(info, allow_nan=True)}
    except TypeError as e:
        raise CheckpointError(f'training state for {path} is not plain data: {e}') from e
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_training_state(path: str | pathlib.Path, map_location: str = 'cpu') -> TrainingState:
    """Read a file written by ``save_training_state``; raises CheckpointError otherwise."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'no training state at {str(path)!r}')
    try:
        tensors = {}
        with safe_open(str(path), framework='pt', device=map_location) as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f'{path}: not a readable safetensors file: {e}') from e
    if metadata.get('format') != FORMAT or 'train_state' not in metadata:
        raise CheckpointError(
            f'{path}: not a training state (format {metadata.get("format")!r}); '
            f'model files (model.safetensors) cannot be resumed from'
        )
    try:
        info = json.loads(metadata['train_state'])
        return TrainingState(
            path=path,
            epoch=int(info['epoch']),
            step=int(info['step']),
            step_in_epoch=int(info.get('step_in_epoch', 0)),
            best_metric=float(info['best_metric']),
            config=info['config'],
            info=info,
            tensors=tensors,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f'{path}: corrupt training state header: {e}') from e
