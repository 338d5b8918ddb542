"""DistributedDataParallel: two CPU processes (gloo, torchrun) equal one process.

Both runs take the same global batch of 4 per step: torchrun gives each of 2 ranks 2
samples; the single process accumulates the same two micro-batches of 2. BatchNorm
statistics and SILog are per micro-batch in both, so the parameters must agree up to
floating-point summation order.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

from safetensors.torch import load_file
from test_train import TINY_MODEL, tiny_recipe
import torch

from training.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    common = {'epochs': 1, 'batch_size': 4, 'seed': 1}
    ddp_recipe = tiny_recipe(tmp_path, name='ddp', **common)
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nnodes',
            '1',
            '--nproc_per_node',
            '2',
            '--master_addr',
            '127.0.0.1',
            '--master_port',
            str(_free_port()),
            '-m',
            'training',
            'train',
            '--config',
            str(ddp_recipe),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'global batch 4 on 2 x cpu' in result.stdout

    single_recipe = tiny_recipe(tmp_path, name='single', grad_accum_steps=2, **common)
    assert main(['train', '--config', str(single_recipe)]) == 0

    from moa_depth_ros.model import create_model

    torch.manual_seed(1)
    initial = create_model('moa_depthclip', **TINY_MODEL)
    # Parameters only: BatchNorm running statistics are buffers that DDP takes from rank 0,
    # and they are counted per micro-batch under accumulation.
    names = [name for name, _ in initial.named_parameters()]
    ddp = load_file(tmp_path / 'runs' / 'ddp' / 'model.safetensors')
    single = load_file(tmp_path / 'runs' / 'single' / 'model.safetensors')
    for name in names:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    # Not vacuous: training moved the weights away from their (seeded) initial values.
    start = initial.state_dict()
    moved = [n for n in names if not torch.equal(single[n], start[n])]
    assert any(n.startswith('adapters.') for n in moved), moved
