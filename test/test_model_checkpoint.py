"""Self-describing checkpoints: bit-exact round trips and clear errors for bad files."""

from __future__ import annotations

import json
import os

from model_fixtures import TINY, perturb_batchnorm, random_image, tiny_model
import pytest
from safetensors.torch import save_file
import torch

from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.errors import CheckpointError
from moa_depth_ros.model import (
    depthclip,
    load_model,
    moa_depthclip,
    read_checkpoint_metadata,
    save_checkpoint,
    space_clip,
)

NAMES = sorted(TINY)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """One trained-looking tiny model per architecture, saved once."""
    out = {}
    for name in NAMES:
        model = tiny_model(name, seed=7)
        perturb_batchnorm(model)
        path = save_checkpoint(model.eval(), tmp_path_factory.mktemp(name) / 'model.safetensors')
        out[name] = (model, path)
    return out


@pytest.mark.parametrize('name', NAMES)
def test_round_trip_is_bit_exact(saved, name, monkeypatch):
    model, path = saved[name]

    def no_text(*args, **kwargs):
        raise AssertionError('load_model must not rebuild the text tower')

    for module in (depthclip, moa_depthclip, space_clip):
        monkeypatch.setattr(module, 'build_clip', no_text)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    for key, value in loaded.state_dict().items():
        assert value.dtype == reference[key].dtype and torch.equal(value, reference[key]), key
    image = random_image(model)
    with torch.no_grad():
        for ours, theirs in zip(loaded(image), model(image)):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize('name', NAMES)
def test_metadata_describes_the_model(saved, name):
    model, path = saved[name]
    meta = read_checkpoint_metadata(path)
    assert meta['format'] == 'moa_depth_ros.checkpoint' and meta['format_version'] == '1'
    assert meta['model_name'] == name
    assert (int(meta['input_height']), int(meta['input_width'])) == model.input_hw
    assert float(meta['min_depth_m']) == model.min_depth_m
    assert float(meta['max_depth_m']) == model.max_depth_m
    assert meta['input_name'] == 'image' and meta['output_names'] == 'depth,confidence'
    assert json.loads(meta['config_json']) == model.config.to_dict()
    assert meta['config_digest'] == model.config.digest()
    assert meta['package_version']
    # The header alone is enough for a runtime's metadata.
    runtime = ModelMetadata.from_dict(meta, source=str(path))
    assert runtime.input_hw == model.input_hw and runtime.model_name == name


def test_extra_metadata_is_stored_and_may_not_shadow(tmp_path):
    model = tiny_model('space_clip')
    path = save_checkpoint(model, tmp_path / 'a.safetensors', extra={'epoch': '3'})
    assert read_checkpoint_metadata(path)['epoch'] == '3'
    with pytest.raises(CheckpointError, match='model_name'):
        save_checkpoint(model, tmp_path / 'b.safetensors', extra={'model_name': 'x'})
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.safetensors']  # no temp files


def _corrupt(path, tmp_path, kind):
    data = path.read_bytes()
    bad = tmp_path / f'{kind}.safetensors'
    if kind == 'truncated':
        bad.write_bytes(data[: len(data) // 2])
    elif kind == 'garbage':
        bad.write_bytes(b'\x00\x01 definitely not safetensors' * 10)
    elif kind == 'header':
        bad.write_bytes(data[:8] + b'{' * 40 + data[48:])
    elif kind == 'pickle':
        torch.save({'state_dict': {'w': torch.zeros(2)}}, bad)
    elif kind == 'empty':
        bad.write_bytes(b'')
    return bad


@pytest.mark.parametrize('kind', ['truncated', 'garbage', 'header', 'pickle', 'empty'])
def test_corrupted_files_fail_with_a_checkpoint_error(saved, tmp_path, kind):
    bad = _corrupt(saved['space_clip'][1], tmp_path, kind)
    with pytest.raises(CheckpointError, match=str(bad.name)):
        load_model(bad)


def test_foreign_safetensors_file_is_rejected_by_format(tmp_path):
    path = tmp_path / 'foreign.safetensors'
    save_file({'weight': torch.zeros(3)}, str(path), metadata={'format': 'pt'})
    with pytest.raises(CheckpointError, match='not a moa_depth_ros checkpoint'):
        load_model(path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        load_model(tmp_path / 'absent.safetensors')


def test_weights_that_disagree_with_the_config_are_rejected(saved, tmp_path):
    model, _ = saved['moa_depthclip']
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = read_checkpoint_metadata(saved['moa_depthclip'][1])
    config = json.loads(meta['config_json'])
    config['num_bins'] = 8  # the stored head has 16 bins
    path = tmp_path / 'mismatch.safetensors'
    save_file(state, str(path), metadata={**meta, 'config_json': json.dumps(config)})
    with pytest.raises(CheckpointError, match='do not match the stored config'):
        load_model(path)
    meta['format_version'] = '99'
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match='format_version'):
        load_model(path)
    meta.update(format_version='1', model_name='midas')
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match='midas'):
        load_model(path)


def test_checkpoint_is_readable_by_other_users(tmp_path):
    # The node may run as another user than training: mkstemp's 0600 must not stick.
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tiny_model('moa_depthclip'), tmp_path / 'model.safetensors')
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
