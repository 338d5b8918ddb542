"""Training loop: a synthetic run through ``main(argv)``, overfitting, kill + resume.

Tiny towers (2 blocks, width 32) on 32x32 synthetic rooms keep each run to seconds on a
2-core CPU. ``tiny_recipe`` is shared with the eval and DDP tests.
"""

from __future__ import annotations

import copy
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
import torch
import yaml

from moa_depth_ros.errors import ConfigError
from training.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_MODEL = {
    'input_size': [32, 32],
    'trainable_last_blocks': 2,
    'adapter_after_blocks': [0, 1],
    'decoder_skip_blocks': [0],
    'decoder_channels': [16, 16],
    'num_bins': 16,
    'head_hidden_channels': 8,
    'gate_hidden': 16,
    'adapter_bottleneck': 8,
    'clip_cfg': {
        'embed_dim': 16,
        'vision_cfg': {'layers': 2, 'width': 32, 'patch_size': 8, 'head_width': 16},
        'text_cfg': {
            'context_length': 77,
            'vocab_size': 49408,
            'width': 16,
            'heads': 2,
            'layers': 1,
        },
    },
}

# SPACE-CLIP's decoder on a 4-block tower (taps 4, 3, 2, 1 and 1, 0 instead of 12 blocks).
SPACE_TINY = {
    'input_size': [32, 32],
    'main_path_indices': [4, 3, 2, 1],
    'structural_path_indices': [1, 0],
    'decoder_channels': [16, 16, 8, 8],
    'film_param_hidden_dim': 16,
    'clip_cfg': {
        **TINY_MODEL['clip_cfg'],
        'vision_cfg': {'layers': 4, 'width': 32, 'patch_size': 8, 'head_width': 16},
    },
}

TINY_RECIPE = {
    'name': 'tiny',
    'seed': 0,
    'epochs': 2,
    'batch_size': 4,
    'num_threads': 1,
    'tensorboard': False,
    'progress': False,
    'log_every_steps': 1,
    'model': {'name': 'moa_depthclip', 'overrides': TINY_MODEL},
    'data': {
        'dataset': {'dataset': 'synthetic', 'synthetic_sizes': {'train': 8, 'val': 2, 'test': 2}}
    },
    'optim': {'lr': 3.0e-3, 'warmup_steps': 1, 'min_lr_ratio': 0.1},
}


def tiny_recipe(tmp_path: pathlib.Path, **changes) -> pathlib.Path:
    """Write the tiny recipe (with ``changes`` merged into its sections) to a YAML file."""
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe['out_dir'] = str(tmp_path / 'runs')
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    path = tmp_path / f'{recipe["name"]}.yaml'
    path.write_text(yaml.safe_dump(recipe), encoding='utf-8')
    return path


def _training_loss(model_or_path, seed: int = 0) -> float:
    """Loss of a model on the (unaugmented) tiny training scenes."""
    from moa_depth_ros.model import create_model, load_model
    from training.data import DataConfig, build_dataset
    from training.losses import build_loss

    if model_or_path is None:
        torch.manual_seed(seed)  # what train() does before create_model
        model = create_model('moa_depthclip', **TINY_MODEL)
    else:
        model = load_model(model_or_path)
    model.eval()
    data = build_dataset(
        DataConfig(synthetic_hw=(32, 32), synthetic_sizes={'train': 8}, augment=False), 'train'
    )
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        loss, _ = build_loss('moa_depthclip', min_depth_m=1e-3, max_depth_m=10.0)(
            model.forward_train(batch['image']), batch['depth_m']
        )
    return float(loss)


def test_training_run_through_main_lowers_the_loss(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, epochs=3, tensorboard=True)
    assert main(['train', '--config', str(recipe)]) == 0
    run_dir = tmp_path / 'runs' / 'tiny'
    out = capsys.readouterr().out
    assert str(run_dir / 'model.safetensors') in out
    for name in ('model.safetensors', 'best.safetensors', 'train_state.safetensors'):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / 'tb').glob('events.out.tfevents.*')), 'no TensorBoard events'
    assert _training_loss(run_dir / 'model.safetensors') < _training_loss(None)


def test_overfits_a_handful_of_scenes(tmp_path):
    from training.config import load_config
    from training.train import train

    recipe = tiny_recipe(
        tmp_path,
        epochs=60,
        data={
            'dataset': {
                'dataset': 'synthetic',
                'augment': False,
                'synthetic_sizes': {'train': 4, 'val': 2, 'test': 2},
            }
        },
        val_every_epochs=60,
    )
    result = train(load_config(recipe))
    assert result.steps == 60
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


def _state_step(path: pathlib.Path) -> int:
    from training.checkpointing import load_training_state

    return load_training_state(path).step


def test_resume_after_a_kill_continues_bit_identically(tmp_path):
    """SIGKILL a training process mid-run, resume it, compare with an uninterrupted run.

    SPACE-CLIP with decoder dropout and EMA: the dropout stream, the EMA weights, AdamW's
    moments and the schedule must all continue exactly.
    """
    common = {
        'epochs': 3,
        'save_every_steps': 1,
        'seed': 3,
        'loss': 'space_clip',
        'ema_decay': 0.9,
        'model': {'name': 'space_clip', 'overrides': {**SPACE_TINY, 'decoder_dropout': 0.3}},
    }
    reference = tiny_recipe(tmp_path, name='reference', **common)
    assert main(['train', '--config', str(reference)]) == 0

    killed = tiny_recipe(tmp_path, name='killed', **common)
    state = tmp_path / 'runs' / 'killed' / 'train_state.safetensors'
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'training', 'train', '--config', str(killed)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    try:
        while not state.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, 'the training process never saved a state'
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    total_steps = 3 * 2
    assert _state_step(state) < total_steps, 'the run finished before it could be killed'
    assert not (tmp_path / 'runs' / 'killed' / 'model.safetensors').exists()

    assert main(['train', '--config', str(killed), '--resume']) == 0
    want = load_file(tmp_path / 'runs' / 'reference' / 'train_state.safetensors')
    got = load_file(state)
    assert want.keys() == got.keys()
    assert any(key.startswith('ema/') for key in want)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert _state_step(state) == total_steps


def test_existing_run_is_not_overwritten_without_resume(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, epochs=1)
    assert main(['train', '--config', str(recipe)]) == 0
    assert main(['train', '--config', str(recipe)]) == 2
    assert '--resume' in capsys.readouterr().err


def test_unknown_recipe_key_is_named(tmp_path):
    from training.config import load_config

    recipe = tiny_recipe(tmp_path, optim={'learning_rate': 1e-4})
    with pytest.raises(ConfigError, match='learning_rate'):
        load_config(recipe)


@pytest.mark.parametrize(
    'name',
    [
        'moa_depthclip_nyu',
        'space_clip_nyu',
        'space_clip_siglip_nyu',
        'space_clip_kitti',
        'quickstart',
    ],
)
def test_shipped_recipes_load(name):
    from training.config import build_data_config, load_config

    config = load_config(ROOT / 'training' / 'configs' / f'{name}.yaml')
    data = build_data_config(config.data.dataset)
    assert config.batch_size % config.grad_accum_steps == 0
    if name == 'quickstart':  # YAML lists become the DataConfig's tuples
        assert data.synthetic_camera_height_m == (1.3, 1.5)


def test_space_clip_with_ema_and_bf16_autocast_trains(tmp_path):
    """The SPACE-CLIP recipe's path: aux losses, EMA validated against the raw weights."""
    from moa_depth_ros.model import load_model
    from training.config import load_config
    from training.train import train

    recipe = tiny_recipe(
        tmp_path,
        epochs=1,
        loss='space_clip',
        amp='bf16',
        ema_decay=0.5,
        ema_select='both',
        model={'name': 'space_clip', 'overrides': SPACE_TINY},
    )
    result = train(load_config(recipe))
    assert result.steps == 2 and all(map(torch.isfinite, map(torch.tensor, result.losses)))
    assert result.val_metrics['ema'] in (0.0, 1.0)
    model = load_model(result.model_path)
    assert model.model_name == 'space_clip'


# space_clip_siglip's timm tower (no class token, attention-pool head) at SPACE_TINY's size.
SIGLIP_TINY = {
    **{k: v for k, v in SPACE_TINY.items() if k != 'clip_cfg'},
    'clip_cfg': {
        'embed_dim': 32,
        'vision_cfg': {
            'image_size': 32,
            'timm_model_name': 'vit_base_patch16_siglip_224',
            'timm_pool': 'map',
            'timm_proj': 'none',
            'timm_model_kwargs': {'embed_dim': 32, 'depth': 4, 'num_heads': 2, 'patch_size': 8},
        },
        'text_cfg': TINY_MODEL['clip_cfg']['text_cfg'],
    },
}


def test_space_clip_on_a_frozen_siglip_tower_trains(tmp_path):
    """The decoder learns on SigLIP taps; the tower, frozen, comes back bit for bit."""
    from moa_depth_ros.model import create_model, load_model
    from training.config import load_config
    from training.train import train

    recipe = tiny_recipe(
        tmp_path,
        epochs=2,
        loss='space_clip',
        model={'name': 'space_clip_siglip', 'overrides': SIGLIP_TINY},
    )
    result = train(load_config(recipe))
    assert result.steps == 4 and all(map(torch.isfinite, map(torch.tensor, result.losses)))
    assert result.losses[-1] < result.losses[0]
    model = load_model(result.model_path)
    assert model.config.clip_model == 'ViT-B-16-SigLIP' and not model.config.clip_quick_gelu
    torch.manual_seed(0)  # what train() does before create_model
    initial = create_model('space_clip_siglip', **SIGLIP_TINY)
    for name, value in initial.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value), name
    assert any(
        not torch.equal(model.state_dict()[name], value)
        for name, value in initial.state_dict().items()
        if not name.startswith('backbone.')
    )
