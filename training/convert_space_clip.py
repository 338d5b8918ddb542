"""Convert an official SPACE-CLIP checkpoint (HF CLIPVisionModel backbone) to ours.

The official ``train.py`` saves ``{'model': state_dict, 'optimizer': ..., 'epoch': ...}``
with torch.save. Its decoder keys are already ours (same module names); its backbone keys
are Hugging Face ``CLIPVisionModel`` keys under ``clip_vision_model.vision_model.``, which
map onto open_clip's VisionTransformer (``backbone.``) like this:

    embeddings.class_embedding             -> class_embedding
    embeddings.patch_embedding.weight      -> conv1.weight
    embeddings.position_embedding.weight   -> positional_embedding
    pre_layrnorm / post_layernorm          -> ln_pre / ln_post
    encoder.layers.i.self_attn.{q,k,v}_proj -> transformer.resblocks.i.attn.in_proj_*
                                               (concatenated q, k, v)
    encoder.layers.i.self_attn.out_proj    -> transformer.resblocks.i.attn.out_proj
    encoder.layers.i.layer_norm1 / 2       -> transformer.resblocks.i.ln_1 / ln_2
    encoder.layers.i.mlp.fc1 / fc2         -> transformer.resblocks.i.mlp.c_fc / c_proj

Usage: ``python -m training convert-space-clip best_checkpoint.pt out.safetensors``.
The file is read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which
rebuilds tensors and plain containers only and refuses anything else (no code runs).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Mapping, Sequence

import torch

from moa_depth_ros.errors import CheckpointError, MoaDepthError
from moa_depth_ros.model.checkpoint import save_checkpoint
from moa_depth_ros.model.factory import create_model
from moa_depth_ros.model.space_clip import SpaceCLIP

HF_PREFIX = 'clip_vision_model.vision_model.'
_LAYER = re.compile(r'encoder\.layers\.(\d+)\.(.+)')
_QKV = re.compile(r'self_attn\.([qkv])_proj\.(weight|bias)')
_TOP_LEVEL = {
    'embeddings.class_embedding': 'class_embedding',
    'embeddings.patch_embedding.weight': 'conv1.weight',
    'embeddings.position_embedding.weight': 'positional_embedding',
}
_RENAMES = (  # (HF prefix, open_clip prefix), applied to the rest of a key
    ('pre_layrnorm.', 'ln_pre.'),
    ('post_layernorm.', 'ln_post.'),
    ('self_attn.out_proj.', 'attn.out_proj.'),
    ('layer_norm1.', 'ln_1.'),
    ('layer_norm2.', 'ln_2.'),
    ('mlp.fc1.', 'mlp.c_fc.'),
    ('mlp.fc2.', 'mlp.c_proj.'),
)


def _rename(rest: str) -> str:
    for old, new in _RENAMES:
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise CheckpointError(f'unexpected CLIPVisionModel key {HF_PREFIX + rest!r}')


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official SPACECLIP state dict onto ``SpaceCLIP``'s key names."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix('module.')  # saved from DataParallel
        if not key.startswith(HF_PREFIX):
            out[key] = value  # decoder: the official names are ours
            continue
        rest = key[len(HF_PREFIX) :]
        if rest == 'embeddings.position_ids':
            continue  # a constant arange buffer; open_clip has none
        if rest in _TOP_LEVEL:
            out['backbone.' + _TOP_LEVEL[rest]] = value
            continue
        layer = _LAYER.fullmatch(rest)
        if layer is None:
            out['backbone.' + _rename(rest)] = value
            continue
        index, inner = int(layer.group(1)), layer.group(2)
        attn = _QKV.fullmatch(inner)
        if attn is not None:
            qkv.setdefault((index, attn.group(2)), {})[attn.group(1)] = value
        else:
            out[f'backbone.transformer.resblocks.{index}.{_rename(inner)}'] = value
    for (index, kind), parts in sorted(qkv.items()):
        if sorted(parts) != ['k', 'q', 'v']:
            raise CheckpointError(
                f'layer {index} attention {kind} lacks q/k/v: has {sorted(parts)}'
            )
        packed = torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
        out[f'backbone.transformer.resblocks.{index}.attn.in_proj_{kind}'] = packed
    return out


def read_official_state_dict(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """Read the model state from an official checkpoint (.pt via weights_only, or safetensors)."""
    path = pathlib.Path(path)
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            blob = load_file(str(path))
        else:
            blob = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # unpickling refused, corrupt zip, missing file
        raise CheckpointError(f'{path}: cannot read as a weights-only checkpoint: {e}') from e
    state = blob.get('model', blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f'{path}: no tensor state dict found (expected a "model" entry)')
    return state


def load_official_checkpoint(
    path: str | pathlib.Path, *, preset: str = 'space_clip', **overrides: object
) -> SpaceCLIP:
    """Build a ``SpaceCLIP`` from an official checkpoint; ``overrides`` as create_model."""
    model = create_model(preset, **overrides)
    if not isinstance(model, SpaceCLIP):
        raise CheckpointError(f'preset {preset!r} is not a SPACE-CLIP preset')
    state = convert_official_state_dict(read_official_state_dict(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f'{path}: does not match the {preset!r} architecture (check use_film, '
            f'use_structural_pathway, use_multiscale_supervision overrides): {e}'
        ) from e
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('official', help='official best_checkpoint.pt / last_checkpoint.pt')
    parser.add_argument('output', help='our .safetensors checkpoint to write')
    parser.add_argument('--preset', default='space_clip', help='space_clip or space_clip_kitti')
    args = parser.parse_args(argv)
    try:
        model = load_official_checkpoint(args.official, preset=args.preset)
        extra = {'converted_from': pathlib.Path(args.official).name}
        print(save_checkpoint(model, args.output, extra=extra))
    except MoaDepthError as e:
        print(f'convert-space-clip: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
