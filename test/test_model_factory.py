"""The factory, presets, configs and loading CLIP weights from a local file."""

from __future__ import annotations

import copy
import json

from model_fixtures import TINY_MOA, TINY_SPACE, TINY_VIT_CFG, tiny_model
import open_clip
import pytest
from safetensors.torch import save_file
import torch
import torch.nn.functional as F

from moa_depth_ros.errors import CheckpointError, ConfigError
from moa_depth_ros.model import (
    DEFAULT_MODEL,
    MODEL_NAMES,
    PRESETS,
    MoADepthCLIP,
    create_model,
    preset_config,
)


def test_default_model_is_moa_depthclip():
    assert DEFAULT_MODEL == 'moa_depthclip'
    assert set(MODEL_NAMES) == {'moa_depthclip', 'space_clip', 'depthclip'}
    assert isinstance(create_model(**copy.deepcopy(TINY_MOA)), MoADepthCLIP)


@pytest.mark.parametrize('input_size', [(128, 128), (96, 96)])
def test_quickstart_preset_is_small_and_runs_at_reduced_sizes(input_size):
    model = create_model('moa_depthclip_tiny', input_size=input_size).eval()
    assert model.parameter_counts()['total'] < 3_000_000
    with torch.no_grad():
        depth, confidence = model(torch.rand(1, 3, *input_size))
    assert depth.shape == confidence.shape == (1, 1, *input_size)


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_configs_survive_a_json_round_trip(preset):
    config = preset_config(preset)
    again = type(config).from_dict(json.loads(config.to_json()))
    assert again == config and again.digest() == config.digest()


def test_describe_reports_size_range_and_config():
    model = tiny_model('moa_depthclip', max_depth_m=20.0)
    info = model.describe()
    assert info['model_name'] == 'moa_depthclip'
    assert (info['input_height'], info['input_width']) == ('64', '96')
    assert float(info['min_depth_m']) == 0.1 and float(info['max_depth_m']) == 20.0
    assert json.loads(info['config_json'])['max_depth_m'] == 20.0
    assert info['config_digest'] != tiny_model('moa_depthclip').describe()['config_digest']


@pytest.mark.parametrize(
    'name, overrides, match',
    [
        ('midas', {}, 'unknown model preset'),
        ('moa_depthclip', {'num_experts_typo': 3}, 'num_experts_typo'),
        ('moa_depthclip', {'min_depth_m': 5.0, 'max_depth_m': 1.0}, 'min_depth_m'),
        ('moa_depthclip', {'clip_model': 'ViT-Z-99'}, 'ViT-Z-99'),
        ('space_clip', {'input_size': (64,)}, 'input_size'),
    ],
)
def test_bad_names_and_overrides_raise_config_errors(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        create_model(name, **overrides)


@pytest.fixture(scope='module')
def clip_weights(tmp_path_factory):
    """Save a random tiny CLIP (both towers, 64x64 grid) the way open_clip ships weights."""
    torch.manual_seed(11)
    clip = open_clip.model.CLIP(**dict(TINY_VIT_CFG, quick_gelu=True)).eval()
    folder = tmp_path_factory.mktemp('clip')
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / 'open_clip_model.safetensors'))
    torch.save(state, folder / 'open_clip_pytorch_model.bin')
    return clip, folder


@pytest.mark.parametrize(
    'filename', ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin']
)
def test_pretrained_local_file_loads_the_vision_tower(clip_weights, filename):
    clip, folder = clip_weights
    model = create_model('space_clip', pretrained=str(folder / filename), **TINY_SPACE)
    expected = {k: v for k, v in clip.visual.state_dict().items() if k != 'proj'}
    got = model.backbone.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_pretrained_weights_are_resized_to_the_grid_and_feed_the_context(clip_weights):
    clip, folder = clip_weights
    path = str(folder / 'open_clip_model.safetensors')
    model = create_model('moa_depthclip', pretrained=path, **copy.deepcopy(TINY_MOA))
    # 64x64 weights (4x4 grid) into a 64x96 model (4x6 grid): class row kept, grid resized.
    pos = model.backbone.positional_embedding
    assert pos.shape == (1 + 4 * 6, 64)
    assert torch.equal(pos[0], clip.visual.positional_embedding[0])
    with torch.no_grad():
        text = clip.encode_text(open_clip.tokenize(list(model.config.scene_prompts)))
    expected = F.normalize(text, dim=-1).mean(dim=0)
    torch.testing.assert_close(model.context_embedding, expected)


def test_unknown_pretrained_tag_and_wrong_weights_are_clear_errors(clip_weights, tmp_path):
    with pytest.raises(ConfigError, match='no-such-tag'):
        create_model('space_clip', pretrained='no-such-tag', **TINY_SPACE)
    wrong = tmp_path / 'wrong.safetensors'
    save_file({'visual.conv1.weight': torch.zeros(8, 3, 16, 16)}, str(wrong))
    with pytest.raises(CheckpointError, match='wrong.safetensors'):
        create_model('space_clip', pretrained=str(wrong), **TINY_SPACE)
