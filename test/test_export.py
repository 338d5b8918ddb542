"""``python -m training export`` and ``build-engine`` as commands (INT8: test_quantize.py)."""

from __future__ import annotations

import os

from model_fixtures import tiny_model
import pytest
from test_engine_support import TinyDepthNet, random_image

from moa_depth_ros import cli
from moa_depth_ros.engine import load_engine
from moa_depth_ros.engine.cache import file_sha256
from moa_depth_ros.engine.onnx_backend import read_onnx_info
from moa_depth_ros.model import read_checkpoint_metadata, save_checkpoint
from training import __main__ as training_main
from training import export
from training.onnx_export import export_onnx


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    model = tiny_model('moa_depthclip')
    extra = {'epoch': '3', 'train_config_digest': 'f00d'}
    return save_checkpoint(model, tmp_path_factory.mktemp('ckpt') / 'moa.safetensors', extra=extra)


def test_export_command_embeds_the_checkpoints_metadata(checkpoint, tmp_path, capsys):
    output = tmp_path / 'moa.onnx'
    args = ['export', '--checkpoint', str(checkpoint), '--output', str(output)]
    assert training_main.main([*args, '--dynamic-batch']) == 0
    out = capsys.readouterr().out
    assert 'verified: onnx.checker ok' in out
    # What the runtime needs, and where the weights came from.
    props = read_onnx_info(output).metadata_props
    checkpoint_props = read_checkpoint_metadata(checkpoint)
    for key in ('model_name', 'input_height', 'input_width', 'min_depth_m', 'max_depth_m'):
        assert props[key] == checkpoint_props[key], key
    assert props['config_digest'] == checkpoint_props['config_digest']
    assert props['package_version'] and props['opset'] == '17'
    assert props['source_checkpoint_sha256'] == file_sha256(checkpoint)
    assert props['checkpoint_epoch'] == '3'
    assert props['checkpoint_train_config_digest'] == 'f00d'
    assert props['checkpoint_package_version'] == checkpoint_props['package_version']
    assert 'checkpoint_format' not in props and 'checkpoint_config_json' not in props
    assert props['dynamic_batch'] == 'true'
    image = random_image((64, 96), batch=2, seed=9)
    depth, _ = load_engine(output, backend='onnxruntime').infer(image)
    assert depth.shape == (2, 1, 64, 96)


def test_export_skip_verify_and_bad_opset(checkpoint, tmp_path, capsys):
    output = tmp_path / 'fast.onnx'
    args = ['--checkpoint', str(checkpoint), '--output', str(output)]
    assert export.main([*args, '--skip-verify']) == 0
    assert 'NOT verified' in capsys.readouterr().out
    assert export.main([*args, '--opset', '13']) == 2
    assert 'opset must be >= 17' in capsys.readouterr().err


def test_commands_are_registered(capsys):
    assert training_main.main(['--help']) == 0
    usage = capsys.readouterr().out
    assert 'export' in usage and 'build-engine' in usage
    assert cli.main([]) == 0
    help_text = capsys.readouterr().out
    assert 'info' in help_text and 'bag' in help_text and 'bench' in help_text


def test_exported_files_are_readable_by_other_users(tmp_path):
    # Export runs as the trainer; the node (another user, a container) must read the file.
    previous = os.umask(0o022)
    try:
        report = export_onnx(TinyDepthNet(), tmp_path / 'tiny.onnx')
    finally:
        os.umask(previous)
    assert report.path.stat().st_mode & 0o777 == 0o644
