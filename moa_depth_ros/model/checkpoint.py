"""Self-describing checkpoints: safetensors weights plus the model config in the header.

``save_checkpoint`` writes the full state (frozen weights and text-derived buffers too)
with metadata naming the architecture and its config JSON; ``load_model`` rebuilds the
network from the file alone: no pretrained download, no text tower, nothing unpickled.
The header also carries the keys a runtime needs (input size, depth range, tensor names),
so ``read_checkpoint_metadata`` answers those without loading weights.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Mapping

import torch

from moa_depth_ros import __version__
from moa_depth_ros.errors import CheckpointError, ConfigError
from moa_depth_ros.fileio import atomic_output
from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.factory import build_model

FORMAT = 'moa_depth_ros.checkpoint'
FORMAT_VERSION = '1'
# The network's tensor names in every export; kept here so a checkpoint header is enough
# to describe the model to a runtime.
INPUT_NAME = 'image'
OUTPUT_NAMES = 'depth,confidence'


def save_checkpoint(
    model: DepthModel, path: str | os.PathLike, *, extra: Mapping[str, str] | None = None
) -> pathlib.Path:
    """Write ``model`` to ``path`` (safetensors, atomic) and return the path."""
    from safetensors.torch import save_file

    metadata = {
        **model.describe(),
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'package_version': __version__,
        'input_name': INPUT_NAME,
        'output_names': OUTPUT_NAMES,
    }
    for key, value in (extra or {}).items():
        if key in metadata:
            raise CheckpointError(f'extra metadata key {key!r} would shadow a reserved key')
        metadata[key] = str(value)
    # safetensors wants contiguous, non-aliased CPU tensors; clone() also breaks sharing.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = pathlib.Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the header metadata, checking that this is one of our checkpoints."""
    from safetensors import safe_open

    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            metadata = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f'{path}: not a readable safetensors file ({type(e).__name__}: {e}); '
            f'checkpoints are written by moa_depth_ros.model.save_checkpoint'
        ) from e
    if metadata.get('format') != FORMAT:
        raise CheckpointError(
            f'{path}: not a moa_depth_ros checkpoint (metadata format='
            f'{metadata.get("format")!r}, expected {FORMAT!r})'
        )
    if metadata.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(
            f'{path}: checkpoint format_version {metadata.get("format_version")!r} is not '
            f'supported (expected {FORMAT_VERSION!r})'
        )
    for key in ('model_name', 'config_json'):
        if key not in metadata:
            raise CheckpointError(f'{path}: checkpoint metadata lacks {key!r}')
    return metadata


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = 'cpu') -> DepthModel:
    """Rebuild the model stored in ``path`` and load its weights (strict), in eval mode."""
    from safetensors.torch import load_file

    metadata = read_checkpoint_metadata(path)
    try:
        config = json.loads(metadata['config_json'])
        model = build_model(metadata['model_name'], config, build_text=False)
    except (ValueError, ConfigError) as e:
        raise CheckpointError(f'{path}: cannot rebuild the model from its metadata: {e}') from e
    try:
        state = load_file(str(path), device='cpu')
    except Exception as e:  # truncated data, bad offsets
        raise CheckpointError(f'{path}: corrupt tensor data ({type(e).__name__}: {e})') from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f'{path}: weights do not match the stored config: {e}') from e
    return model.to(map_location).eval()
