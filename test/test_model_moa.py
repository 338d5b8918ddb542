"""MoA-DepthCLIP: shapes, ranges, what trains, adapters' gates and the full-size counts."""

from __future__ import annotations

import math

from model_fixtures import random_image, tiny_model
import pytest
import torch

from moa_depth_ros.errors import ConfigError, InvalidImageError
from moa_depth_ros.model import MoADepthCLIP, create_model
from moa_depth_ros.model.adapters import MixtureOfAdapters, gate_entropy

# Paper numbers for ViT-B/32 (width 768): 4 x (4 experts + gate) and 4 transformer blocks.
MOA_ADAPTER_PARAMS = 4 * (4 * (768 * 64 + 64 + 64 * 768 + 768) + 768 * 128 + 128 + 128 * 4 + 4)
LAST_FOUR_BLOCK_PARAMS = 4 * 7_087_872


@pytest.fixture(scope='module')
def full_model() -> MoADepthCLIP:
    torch.manual_seed(0)
    return create_model('moa_depthclip')


@pytest.fixture(scope='module')
def tiny() -> MoADepthCLIP:
    return tiny_model('moa_depthclip').eval()


def test_full_size_trainable_counts_match_the_paper(full_model):
    counts = full_model.parameter_counts()
    assert MOA_ADAPTER_PARAMS == 1_981_968  # "about 1.98 M"
    assert counts['adapters'] == MOA_ADAPTER_PARAMS
    assert counts['backbone'] == LAST_FOUR_BLOCK_PARAMS == 28_351_488  # "about 28.35 M"
    assert counts['trainable'] == counts['adapters'] + counts['backbone'] + counts['head']
    assert full_model.input_hw == (224, 224)
    assert tuple(full_model.backbone.grid_size) == (7, 7)
    assert full_model.context_embedding.shape == (512,)
    # OpenAI's ViT-B/32 weights were trained with QuickGELU (open_clip's '-quickgelu').
    activations = {type(b.mlp.gelu).__name__ for b in full_model.backbone.transformer.resblocks}
    assert activations == {'QuickGELU'}


def test_full_size_model_has_no_text_tower(full_model):
    names = list(full_model.state_dict())
    assert not [n for n in names if 'token_embedding' in n or n.startswith('transformer.')]
    # Only the vision blocks and the context vector come from CLIP.
    assert 'context_embedding' in names


@pytest.mark.parametrize('input_size', [(64, 64), (64, 96), (96, 128)])
def test_outputs_have_input_size_and_stay_in_range(input_size):
    model = tiny_model('moa_depthclip', input_size=input_size).eval()
    image = random_image(model)
    with torch.no_grad():
        depth, confidence = model(image)
        out = model.forward_train(image)
    assert depth.shape == confidence.shape == (2, 1, *input_size)
    # The export graph and the training path predict the same maps.
    assert torch.equal(depth, out['depth']) and torch.equal(confidence, out['confidence'])
    assert depth.dtype == confidence.dtype == torch.float32
    assert model.min_depth_m <= depth.min() and depth.max() <= model.max_depth_m
    assert 0.0 <= confidence.min() and confidence.max() <= 1.0
    assert out['bin_logits'].shape == (2, 16, *input_size)
    assert out['bin_centers_m'].shape == (16,)
    assert out['regression_m'].shape == (2, 1, *input_size)
    assert out['gate_entropy'].ndim == 0


def test_wrong_input_size_is_rejected_with_the_expected_shape(tiny):
    with pytest.raises(InvalidImageError, match=r'\[N, 3, 64, 96\]'):
        tiny(torch.rand(1, 3, 64, 64))


def test_exactly_adapters_last_blocks_and_head_are_trainable(tiny):
    trainable = {n for n, p in tiny.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in tiny.named_parameters()
        if n.startswith(('adapters.', 'decoder.', 'head.'))
        or n.startswith(('backbone.transformer.resblocks.2.', 'backbone.transformer.resblocks.3.'))
    }
    assert trainable == expected
    groups = tiny.trainable_parameter_groups()
    assert sum(len(g) for g in groups.values()) == len(trainable)


def test_gradients_reach_every_trainable_parameter_and_nothing_frozen():
    model = tiny_model('moa_depthclip').train()
    out = model.forward_train(random_image(model))
    target = torch.randint(0, 16, out['depth'].shape[-2:]).expand(2, -1, -1)
    loss = (
        torch.nn.functional.cross_entropy(out['bin_logits'], target)
        + out['regression_m'].mean()
        + out['depth'].mean()
    )
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_gates_sum_to_one_per_token(tiny):
    with torch.no_grad():
        out = tiny.forward_train(random_image(tiny))
    assert len(out['gates']) == 4
    for gates in out['gates']:
        assert gates.shape == (2, 1 + 4 * 6, 4)  # class token + 4x6 patches, 4 experts
        assert torch.all(gates >= 0)
        torch.testing.assert_close(gates.sum(-1), torch.ones(gates.shape[:-1]))
    assert 0.0 <= float(out['gate_entropy']) <= math.log(4) + 1e-6


def test_adapter_is_a_residual_mixture_with_tempered_gate():
    torch.manual_seed(0)
    moa = MixtureOfAdapters(16, num_experts=3, bottleneck=4, gate_hidden=8, temperature=2.0)
    x = torch.randn(2, 5, 16)
    y, gates = moa(x)
    logits = moa.gate(x)
    torch.testing.assert_close(gates, torch.softmax(logits / 2.0, dim=-1))
    expected = x + sum(gates[..., k : k + 1] * moa.experts[k](x) for k in range(3))
    torch.testing.assert_close(y, expected)
    hot = MixtureOfAdapters(16, num_experts=3, bottleneck=4, gate_hidden=8, temperature=1e6)
    with torch.no_grad():
        _, flat = hot(x)
    assert float(gate_entropy(flat)) == pytest.approx(math.log(3), abs=1e-4)


@pytest.mark.parametrize(
    'overrides, field',
    [
        ({'adapter_after_blocks': (0, 4)}, 'adapter_after_blocks'),
        ({'trainable_last_blocks': 5}, 'trainable_last_blocks'),
        ({'decoder_skip_blocks': (9,)}, 'decoder_skip_blocks'),
        ({'input_size': (64, 90)}, 'patch size'),
        ({'fusion': 'max'}, 'fusion'),
        ({'bin_spacing': 'cubic'}, 'bin_spacing'),
    ],
)
def test_invalid_configs_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        tiny_model('moa_depthclip', **overrides)


# A conv stem for the tiny tower's 16-pixel patches: four stride-2 layers.
STEM = {'conv_stem_channels': (8, 8, 16, 16), 'trainable_last_blocks': 4}


def test_conv_stem_feeds_same_resolution_decoder_stages():
    model = tiny_model('moa_depthclip', **STEM).eval()
    assert model.backbone.conv1.stride == 16
    # Stages 0-2 (1/8, 1/4, 1/2 of the input) take stem maps 2, 1, 0; the last (full
    # resolution) has no stem map that fine.
    assert sorted(model.decoder.map_skip_projections) == ['0', '1', '2']
    stage_hw, skip_hw = {}, {}
    for i, stage in enumerate(model.decoder.stages):
        stage.up_conv.register_forward_hook(
            lambda m, a, out, i=i: stage_hw.__setitem__(i, tuple(out.shape[-2:]))
        )
    for key, proj in model.decoder.map_skip_projections.items():
        proj.register_forward_hook(
            lambda m, a, out, i=int(key): skip_hw.__setitem__(i, tuple(out.shape[-2:]))
        )
    with torch.no_grad():
        depth, confidence = model(random_image(model))
    assert depth.shape == confidence.shape == (2, 1, 64, 96)
    assert skip_hw == {i: stage_hw[i] for i in range(3)}
    assert stage_hw[0] == (8, 12)


def test_whole_tower_trains_when_every_block_does():
    model = tiny_model('moa_depthclip', **STEM).train()
    assert all(p.requires_grad for p in model.parameters())
    out = model.forward_train(random_image(model))
    target = torch.randint(0, 16, out['depth'].shape[-2:]).expand(2, -1, -1)
    loss = torch.nn.functional.cross_entropy(out['bin_logits'], target) + out['depth'].mean()
    loss.backward()
    for name in ('backbone.conv1.layers.0.0.weight', 'backbone.positional_embedding'):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    for name, param in model.named_parameters():
        assert param.grad is not None, name
    # Without a stem too: all four blocks trainable means the patch embedding trains.
    plain = tiny_model('moa_depthclip', trainable_last_blocks=4)
    assert plain.backbone.conv1.weight.requires_grad


@pytest.mark.parametrize(
    'overrides, match',
    [
        ({'conv_stem_channels': (8, 8, 16)}, 'patch size is 16'),
        ({'conv_stem_channels': (8, 0, 8, 8)}, 'positive'),
    ],
)
def test_bad_conv_stems_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_model('moa_depthclip', **overrides)


def test_conv_stem_refuses_pretrained_weights(tmp_path):
    with pytest.raises(ConfigError, match='pretrained'):
        tiny_model('moa_depthclip', pretrained=str(tmp_path / 'clip.safetensors'), **STEM)
