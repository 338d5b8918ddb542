"""SPACE-CLIP: the official parameter count and module names, outputs, training, conversion."""

from __future__ import annotations

from model_fixtures import TINY_SPACE, perturb_batchnorm, random_image, tiny_model
import pytest
import torch
import torch.nn.functional as F

from moa_depth_ros.errors import CheckpointError, ConfigError
from moa_depth_ros.model import SpaceCLIP, create_model
from moa_depth_ros.model.clip_backbone import vit_block, vit_tokens
from training.convert_space_clip import (
    HF_PREFIX,
    convert_official_state_dict,
    load_official_checkpoint,
)

# From the official repository's efficiency benchmark (docs/efficiency_benchmark_ko.md).
OFFICIAL_TRAINABLE = 12_050_996
OFFICIAL_TOTAL = 97_850_420
HF_CLIP_VISION_B16 = 85_799_424

# Keys of the official SPACECLIP state dict (names written out from space_clip.py).
OFFICIAL_DECODER_KEYS = {
    'film_param_generators.0.0.weight': (256, 768),
    'film_param_generators.3.2.bias': (1536,),
    'main_path_projections.0.weight': (256, 768, 1, 1),
    'main_path_projections.3.weight': (32, 768, 1, 1),
    'structural_path_projections.2.weight': (64, 768, 1, 1),
    'structural_decoder_blocks.0.upsample_low.upsample.weight': (768, 256, 2, 2),
    'structural_decoder_blocks.2.fusion_conv.1.running_var': (64,),
    'main_decoder_blocks.0.upsample_low.upsample.weight': (256, 256, 2, 2),
    'main_decoder_blocks.0.upsample_low.conv.1.num_batches_tracked': (),
    'main_decoder_blocks.0.skip_clip_gate.0.weight': (256, 256, 1, 1),
    'main_decoder_blocks.0.fusion_conv.0.weight': (256, 768, 3, 3),
    'main_decoder_blocks.2.skip_struct_gate.0.bias': (64,),
    'main_decoder_blocks.3.fusion_conv.0.weight': (32, 64, 3, 3),
    'main_decoder_blocks.3.fusion_conv.3.conv2.weight': (32, 32, 3, 3),
    'main_decoder_blocks.3.fusion_conv.3.norm2.bias': (32,),
    'depth_prediction_head.0.weight': (16, 32, 3, 3),
    'depth_prediction_head.3.bias': (1,),
    'aux_depth_heads.0.3.weight': (1, 128, 1, 1),
    'aux_depth_heads.2.0.weight': (32, 64, 3, 3),
}


@pytest.fixture(scope='module')
def full_model() -> SpaceCLIP:
    return create_model('space_clip')


def test_trainable_parameter_count_equals_the_official(full_model):
    counts = full_model.parameter_counts()
    assert counts['trainable'] == counts['head'] == OFFICIAL_TRAINABLE
    assert counts['total'] == OFFICIAL_TOTAL
    backbone = sum(p.numel() for p in full_model.backbone.parameters())
    assert backbone == HF_CLIP_VISION_B16  # the same tower as HF's CLIPVisionModel
    assert tuple(full_model.backbone.grid_size) == (14, 14)


def test_tower_uses_quick_gelu_like_openai_clip(full_model):
    # OpenAI's ViT-B/16 (HF hidden_act='quick_gelu') was trained with QuickGELU; open_clip's
    # plain 'ViT-B-16' config says GELU, which would give wrong features with those weights.
    activations = {type(b.mlp.gelu).__name__ for b in full_model.backbone.transformer.resblocks}
    assert activations == {'QuickGELU'}


def test_decoder_uses_the_official_module_names_and_shapes(full_model):
    state = full_model.state_dict()
    for key, shape in OFFICIAL_DECODER_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # The last main block has no structural skip, as in the official model.
    assert not [k for k in state if k.startswith('main_decoder_blocks.3.skip_struct_gate')]


@pytest.mark.parametrize('input_size', [(64, 64), (64, 96), (96, 128)])
def test_outputs_have_input_size_and_stay_in_range(input_size):
    model = tiny_model('space_clip', input_size=input_size).eval()
    perturb_batchnorm(model)
    with torch.no_grad():
        depth, confidence = model(random_image(model))
        out = model.forward_train(random_image(model))
    assert depth.shape == confidence.shape == (2, 1, *input_size)
    assert model.min_depth_m <= depth.min() and depth.max() <= model.max_depth_m
    assert set(confidence.unique().tolist()) <= {0.0, 1.0}
    assert [a.shape for a in out['aux']] == [(2, 1, *input_size)] * 3
    assert float(out['depth'].min()) >= 0.0  # the official ReLU head


def test_confidence_marks_where_raw_depth_was_clamped():
    model = tiny_model('space_clip', max_depth_m=0.05).eval()
    with torch.no_grad():
        model.depth_prediction_head[3].bias.fill_(0.02)  # raw depths around 0.02 m and more
        image = random_image(model)
        depth, confidence = model(image)
        raw = model.forward_train(image)['depth']
    inside = (raw >= model.min_depth_m) & (raw <= model.max_depth_m)
    assert 0.0 < inside.float().mean() < 1.0  # both cases occur in this example
    assert torch.equal(confidence.bool(), inside)
    torch.testing.assert_close(depth, raw.clamp(model.min_depth_m, model.max_depth_m))


def test_only_the_decoder_trains_and_gets_gradients():
    model = tiny_model('space_clip').train()
    assert not model.backbone.training  # frozen tower stays in eval mode
    out = model.forward_train(random_image(model))
    (out['depth'].mean() + sum(a.mean() for a in out['aux'])).backward()
    for name, param in model.named_parameters():
        if name.startswith('backbone.'):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.requires_grad and param.grad is not None, name
            assert param.grad.abs().sum() > 0, name


def test_ablation_switches_remove_their_modules():
    model = tiny_model(
        'space_clip',
        use_film=False,
        use_structural_pathway=False,
        use_multiscale_supervision=False,
    ).eval()
    names = {n.split('.')[0] for n, _ in model.named_parameters()}
    assert not names & {'film_param_generators', 'structural_decoder_blocks', 'aux_depth_heads'}
    with torch.no_grad():
        out = model.forward_train(random_image(model))
    assert out['aux'] == [] and out['depth'].shape == (2, 1, 64, 64)


def test_taps_beyond_the_tower_depth_are_rejected():
    with pytest.raises(ConfigError, match='main_path_indices'):
        tiny_model('space_clip', main_path_indices=(12, 9, 6, 3))


def _to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key our state the way the official HF-backed SPACECLIP names it."""
    out = {}
    for key, value in state.items():
        if not key.startswith('backbone.'):
            out['module.' + key] = value
            continue
        rest = key[len('backbone.') :]
        rest = {
            'class_embedding': 'embeddings.class_embedding',
            'conv1.weight': 'embeddings.patch_embedding.weight',
            'positional_embedding': 'embeddings.position_embedding.weight',
        }.get(rest, rest)
        rest = rest.replace('ln_pre.', 'pre_layrnorm.').replace('ln_post.', 'post_layernorm.')
        rest = rest.replace('transformer.resblocks.', 'encoder.layers.')
        for ours, theirs in [('ln_1', 'layer_norm1'), ('ln_2', 'layer_norm2')]:
            rest = rest.replace(ours, theirs)
        rest = rest.replace('mlp.c_fc', 'mlp.fc1').replace('mlp.c_proj', 'mlp.fc2')
        rest = rest.replace('attn.out_proj', 'self_attn.out_proj')
        if '.attn.in_proj_' in rest:
            prefix, kind = rest.split('.attn.in_proj_')
            for name, part in zip('qkv', value.chunk(3, dim=0)):
                out[f'module.{HF_PREFIX}{prefix}.self_attn.{name}_proj.{kind}'] = part.clone()
            continue
        out[HF_PREFIX + rest] = value
    out[HF_PREFIX + 'embeddings.position_ids'] = torch.arange(17).unsqueeze(0)
    return out


def _hf_clip_vision(state: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int):
    """HF CLIPVisionTransformer from its own key names: (hidden_states, pooler_output).

    Written from the HF semantics (separate q/k/v projections, query scaled by
    head_dim ** -0.5, quick_gelu, pre_layrnorm before the encoder, post_layernorm on the
    class token only), independently of open_clip and of our conversion.
    """

    def w(name):
        return state[HF_PREFIX + name]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w(name + '.weight'), w(name + '.bias'), 1e-5)

    patch = w('embeddings.patch_embedding.weight')
    x = F.conv2d(pixels, patch, stride=patch.shape[-1]).flatten(2).transpose(1, 2)
    cls = w('embeddings.class_embedding').expand(x.shape[0], 1, -1)
    x = norm(
        torch.cat([cls, x], dim=1) + w('embeddings.position_embedding.weight'), 'pre_layrnorm'
    )
    hidden = [x]
    layer = 0
    while HF_PREFIX + f'encoder.layers.{layer}.layer_norm1.weight' in state:
        prefix = f'encoder.layers.{layer}.'

        def linear(t, name, prefix=prefix):
            return F.linear(t, w(prefix + name + '.weight'), w(prefix + name + '.bias'))

        n, length, width = x.shape
        h = norm(x, prefix + 'layer_norm1')
        q, k, v = (
            linear(h, f'self_attn.{p}_proj').view(n, length, heads, -1).transpose(1, 2)
            for p in 'qkv'
        )
        q = q * (width // heads) ** -0.5
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        x = x + linear(attn.transpose(1, 2).reshape(n, length, width), 'self_attn.out_proj')
        h = linear(norm(x, prefix + 'layer_norm2'), 'mlp.fc1')
        x = x + linear(h * torch.sigmoid(1.702 * h), 'mlp.fc2')  # quick_gelu
        hidden.append(x)
        layer += 1
    return hidden, norm(x[:, 0], 'post_layernorm')


def test_converted_backbone_computes_what_hf_clip_computes(tmp_path):
    model = tiny_model('space_clip', seed=5).eval()
    official = _to_official(model.state_dict())
    path = tmp_path / 'best_checkpoint.pt'
    torch.save({'model': official}, path)
    loaded = load_official_checkpoint(path, **TINY_SPACE).eval()
    pixels = loaded.normalize(random_image(loaded))
    with torch.no_grad():
        hf_state = {k.removeprefix('module.'): v for k, v in official.items()}
        expected, expected_pooled = _hf_clip_vision(hf_state, pixels, heads=2)
        ours = [vit_tokens(loaded.backbone, pixels)]
        for block in loaded.backbone.transformer.resblocks:
            ours.append(vit_block(block, ours[-1]))
        pooled = loaded.backbone.ln_post(ours[-1][:, 0])
    assert len(ours) == len(expected) == 5  # hidden_states[0] (after ln_pre) + 4 blocks
    for index, (got, want) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f'hidden_states[{index}]')
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-4, atol=1e-5)


def test_official_checkpoint_converts_bit_exactly(tmp_path):
    model = tiny_model('space_clip', seed=3).eval()
    perturb_batchnorm(model)
    official = _to_official(model.state_dict())
    assert (
        'module.clip_vision_model.vision_model.encoder.layers.0.self_attn.q_proj.weight'
        in official
    )
    converted = convert_official_state_dict(official)
    reference = model.state_dict()
    assert converted.keys() == reference.keys()
    assert all(torch.equal(converted[k], reference[k]) for k in reference)

    path = tmp_path / 'best_checkpoint.pt'
    torch.save(
        {'model': official, 'optimizer': {'state': {}, 'param_groups': []}, 'epoch': 3}, path
    )
    loaded = load_official_checkpoint(path, **TINY_SPACE)
    image = random_image(model)
    with torch.no_grad():
        assert torch.equal(loaded(image)[0], model(image)[0])


def test_mismatched_official_checkpoint_is_a_checkpoint_error(tmp_path):
    model = tiny_model('space_clip')
    official = _to_official(model.state_dict())
    del official['module.depth_prediction_head.3.bias']
    path = tmp_path / 'partial.pt'
    torch.save({'model': official}, path)
    with pytest.raises(CheckpointError, match='depth_prediction_head.3.bias'):
        load_official_checkpoint(path, **TINY_SPACE)
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='junk.pt'):
        load_official_checkpoint(tmp_path / 'junk.pt', **TINY_SPACE)


def test_the_converter_command_reports_a_bad_file_in_one_line(tmp_path, capsys):
    from training.convert_space_clip import main

    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    assert main([str(tmp_path / 'junk.pt'), str(tmp_path / 'out.safetensors')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('convert-space-clip: error: ') and 'junk.pt' in err
    assert 'Traceback' not in err and not (tmp_path / 'out.safetensors').exists()
