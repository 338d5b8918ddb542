"""Convert an official SPACE-CLIP checkpoint (HF CLIP or SigLIP backbone) to ours.

The official ``train.py`` saves ``{'model': state_dict, 'optimizer': ..., 'epoch': ...}``
with torch.save. Its decoder keys are already ours (same module names); its backbone is a
Hugging Face ``CLIPVisionModel`` or ``SiglipVisionModel`` at ``clip_vision_model``. Its keys
sit under ``clip_vision_model.vision_model.`` when the checkpoint was written with
transformers up to 5.5, and directly under ``clip_vision_model.`` from 5.10 on; both are read.

CLIP maps onto open_clip's VisionTransformer (``backbone.``):

    embeddings.class_embedding             -> class_embedding
    embeddings.patch_embedding.weight      -> conv1.weight
    embeddings.position_embedding.weight   -> positional_embedding
    pre_layrnorm / post_layernorm          -> ln_pre / ln_post
    encoder.layers.i.self_attn.{q,k,v}_proj -> transformer.resblocks.i.attn.in_proj_*
                                               (concatenated q, k, v)
    encoder.layers.i.self_attn.out_proj    -> transformer.resblocks.i.attn.out_proj
    encoder.layers.i.layer_norm1 / 2       -> transformer.resblocks.i.ln_1 / ln_2
    encoder.layers.i.mlp.fc1 / fc2         -> transformer.resblocks.i.mlp.c_fc / c_proj

SigLIP maps onto timm's VisionTransformer as open_clip wraps it (``backbone.trunk.``):

    embeddings.patch_embedding             -> patch_embed.proj
    embeddings.position_embedding.weight   -> pos_embed (with a leading batch axis)
    encoder.layers.i.self_attn.{q,k,v}_proj -> blocks.i.attn.qkv (concatenated q, k, v)
    encoder.layers.i.self_attn.out_proj    -> blocks.i.attn.proj
    encoder.layers.i.layer_norm1 / 2, mlp  -> blocks.i.norm1 / norm2, mlp
    post_layernorm                         -> norm
    head.probe                             -> attn_pool.latent
    head.attention.in_proj_*               -> attn_pool.q (first third), attn_pool.kv (rest)
    head.attention.out_proj, layernorm, mlp -> attn_pool.proj, norm, mlp

Usage: ``python -m training convert-space-clip best_checkpoint.pt out.safetensors``; the preset
(space_clip or space_clip_siglip) follows from the backbone unless ``--preset`` names one.
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

#: Where the official model keeps its backbone: ``self.clip_vision_model``, a Hugging Face
#: ``CLIPVisionModel`` or ``SiglipVisionModel``. Up to transformers 5.5 their state dicts
#: nest everything under ``vision_model.``; from 5.10 on that level is gone. Longest first.
HF_PREFIXES = ('clip_vision_model.vision_model.', 'clip_vision_model.')
HF_PREFIX = HF_PREFIXES[0]
#: Backbones the official code loads, told apart by a key only each one has.
BACKBONES = {
    'clip': ('embeddings.class_embedding', 'space_clip'),
    'siglip': ('head.probe', 'space_clip_siglip'),
}
_LAYER = re.compile(r'encoder\.layers\.(\d+)\.(.+)')
_QKV = re.compile(r'self_attn\.([qkv])_proj\.(weight|bias)')
_CONSTANTS = ('embeddings.position_ids',)  # arange buffers; neither open_clip nor timm has them

# (HF key or prefix, our key or prefix under ``backbone.``) per backbone. A prefix ends with
# '.', and the rest of the key is kept.
_CLIP_TOP = (
    ('embeddings.class_embedding', 'class_embedding'),
    ('embeddings.patch_embedding.weight', 'conv1.weight'),
    ('embeddings.position_embedding.weight', 'positional_embedding'),
    ('pre_layrnorm.', 'ln_pre.'),
    ('post_layernorm.', 'ln_post.'),
)
_CLIP_LAYER = (
    ('self_attn.out_proj.', 'attn.out_proj.'),
    ('layer_norm1.', 'ln_1.'),
    ('layer_norm2.', 'ln_2.'),
    ('mlp.fc1.', 'mlp.c_fc.'),
    ('mlp.fc2.', 'mlp.c_proj.'),
)
_SIGLIP_TOP = (
    ('embeddings.patch_embedding.', 'trunk.patch_embed.proj.'),
    ('embeddings.position_embedding.weight', 'trunk.pos_embed'),
    ('post_layernorm.', 'trunk.norm.'),
    ('head.probe', 'trunk.attn_pool.latent'),
    ('head.attention.out_proj.', 'trunk.attn_pool.proj.'),
    ('head.layernorm.', 'trunk.attn_pool.norm.'),
    ('head.mlp.', 'trunk.attn_pool.mlp.'),
)
_SIGLIP_LAYER = (
    ('self_attn.out_proj.', 'attn.proj.'),
    ('layer_norm1.', 'norm1.'),
    ('layer_norm2.', 'norm2.'),
    ('mlp.', 'mlp.'),
)


def _rename(rest: str, table: tuple[tuple[str, str], ...], full_key: str) -> str:
    for old, new in table:
        if rest == old or (old.endswith('.') and rest.startswith(old)):
            return new + rest[len(old) :]
    raise CheckpointError(f'unexpected Hugging Face vision-model key {full_key!r}')


def backbone_layout(state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """Return (backbone kind, key prefix) of an official state dict (CheckpointError if none).

    The kind is 'clip' or 'siglip' (``BACKBONES``); the prefix is one of ``HF_PREFIXES``.
    """
    keys = [k.removeprefix('module.') for k in state]
    prefix = next((p for p in HF_PREFIXES if any(k.startswith(p) for k in keys)), None)
    if prefix is None:
        raise CheckpointError(
            f'no backbone keys under {" or ".join(map(repr, HF_PREFIXES))}: not an official '
            f'SPACE-CLIP checkpoint'
        )
    if prefix == HF_PREFIXES[0]:
        stray = [k for k in keys if k.startswith(HF_PREFIXES[1]) and not k.startswith(prefix)]
        if stray:
            raise CheckpointError(
                f'backbone keys in both the transformers <= 5.5 ({prefix!r}) and the newer '
                f'({HF_PREFIXES[1]!r}) layout, e.g. {stray[0]!r}'
            )
    found = [kind for kind, (key, _) in BACKBONES.items() if prefix + key in keys]
    if len(found) != 1:
        raise CheckpointError(
            f'cannot tell the backbone: expected exactly one of '
            f'{[prefix + key for key, _ in BACKBONES.values()]} in the state dict'
        )
    return found[0], prefix


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official SPACECLIP state dict (CLIP or SigLIP, either key layout) onto ours."""
    kind, prefix = backbone_layout(state)
    top, per_layer = (_CLIP_TOP, _CLIP_LAYER) if kind == 'clip' else (_SIGLIP_TOP, _SIGLIP_LAYER)
    blocks = 'transformer.resblocks' if kind == 'clip' else 'trunk.blocks'
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix('module.')  # saved from DataParallel
        if not key.startswith(prefix):
            out[key] = value  # decoder: the official names are ours
            continue
        rest = key[len(prefix) :]
        if rest in _CONSTANTS:
            continue
        layer = _LAYER.fullmatch(rest)
        if layer is None:
            if kind == 'siglip' and rest.startswith('head.attention.in_proj_'):
                out.update(_split_pool_projection(rest, value))
                continue
            new = _rename(rest, top, key)
            if new == 'trunk.pos_embed':
                value = value.unsqueeze(0)  # timm keeps a batch axis: [1, L, D]
            out['backbone.' + new] = value
            continue
        index, inner = int(layer.group(1)), layer.group(2)
        attn = _QKV.fullmatch(inner)
        if attn is not None:
            qkv.setdefault((index, attn.group(2)), {})[attn.group(1)] = value
        else:
            out[f'backbone.{blocks}.{index}.{_rename(inner, per_layer, key)}'] = value
    packed_name = 'attn.in_proj_{}' if kind == 'clip' else 'attn.qkv.{}'
    for (index, kind_), parts in sorted(qkv.items()):
        if sorted(parts) != ['k', 'q', 'v']:
            raise CheckpointError(
                f'layer {index} attention {kind_} lacks q/k/v: has {sorted(parts)}'
            )
        packed = torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
        out[f'backbone.{blocks}.{index}.{packed_name.format(kind_)}'] = packed
    return out


def _split_pool_projection(rest: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """HF's pooling head packs q, k, v in one projection; timm's has q and kv."""
    kind = rest.removeprefix('head.attention.in_proj_')  # 'weight' or 'bias'
    width = value.shape[0] // 3
    return {
        f'backbone.trunk.attn_pool.q.{kind}': value[:width],
        f'backbone.trunk.attn_pool.kv.{kind}': value[width:],
    }


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
    path: str | pathlib.Path, *, preset: str | None = None, **overrides: object
) -> SpaceCLIP:
    """Build a ``SpaceCLIP`` from an official checkpoint; ``overrides`` as create_model.

    ``preset`` None: the one for the checkpoint's backbone (``BACKBONES``: space_clip for
    CLIP, space_clip_siglip for SigLIP).
    """
    official = read_official_state_dict(path)
    try:
        kind, _ = backbone_layout(official)
        state = convert_official_state_dict(official)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from e
    preset = preset or BACKBONES[kind][1]
    model = create_model(preset, **overrides)
    if not isinstance(model, SpaceCLIP):
        raise CheckpointError(f'preset {preset!r} is not a SPACE-CLIP preset')
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f'{path}: its {kind} backbone does not match the {preset!r} architecture (check '
            f'the preset and the use_film, use_structural_pathway, '
            f'use_multiscale_supervision overrides): {e}'
        ) from e
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('official', help='official best_checkpoint.pt / last_checkpoint.pt')
    parser.add_argument('output', help='our .safetensors checkpoint to write')
    parser.add_argument(
        '--preset',
        help='space_clip, space_clip_kitti or space_clip_siglip (default: from the backbone)',
    )
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
