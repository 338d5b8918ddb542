"""Training throughput, the last section of ``python -m tools.bench all`` (``make bench``).

Images per second at batch 8 for each recipe's model, one optimizer step being
``forward_train``, the recipe's loss (``build_loss``), backward, gradient clipping and an
AdamW step over ``trainable_parameter_groups()``, as the training loop does. Inputs are
random images and depths at the model's input size, so data loading is not part of the
number.

A recipe is a preset name (the built-in ones below) or a recipe YAML file
(``training/configs/*.yaml``: its model, overrides, loss and loss options are used).
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

from moa_depth_ros.bench.measure import time_call
from moa_depth_ros.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# label -> (model preset, loss preset): the papers' recipes.
RECIPES: dict[str, tuple[str, str]] = {
    'moa_depthclip': ('moa_depthclip', 'moa_depthclip'),
    'space_clip': ('space_clip', 'space_clip'),
}
# label -> recipe YAML: the quickstart's model exactly as `make demo` trains it.
RECIPE_FILES: dict[str, pathlib.Path] = {
    'quickstart': REPO_ROOT / 'training' / 'configs' / 'quickstart.yaml',
}
DEFAULT_RECIPES = (*RECIPES, *RECIPE_FILES)


def _recipe(entry: str) -> dict[str, Any]:
    """Model name, overrides, loss and loss options of a recipe name or YAML file."""
    label = pathlib.Path(entry).stem
    if entry in RECIPE_FILES:
        label, entry = entry, str(RECIPE_FILES[entry])
    if entry.endswith(('.yaml', '.yml')):
        from training.config import load_config

        config = load_config(entry)
        return {
            'label': label,
            'model': config.model.name,
            'overrides': dict(config.model.overrides),
            'loss': config.loss,
            'loss_options': dict(config.loss_options),
        }
    if entry in RECIPES:
        model, loss = RECIPES[entry]
        return {'label': entry, 'model': model, 'overrides': {}, 'loss': loss, 'loss_options': {}}
    from moa_depth_ros.model import PRESETS

    if entry not in PRESETS:
        names = ', '.join([*RECIPES, *RECIPE_FILES])
        raise ConfigError(
            f'training recipe {entry!r} is neither a recipe ({names}), a model preset '
            f'({", ".join(PRESETS)}) nor a .yaml recipe file'
        )
    from training.losses import LOSS_PRESETS

    arch = PRESETS[entry].model_name
    loss = arch if arch in LOSS_PRESETS else 'silog'
    return {'label': entry, 'model': entry, 'overrides': {}, 'loss': loss, 'loss_options': {}}


def train_throughput(
    entry: str,
    *,
    batch: int = 8,
    warmup: int = 1,
    steps: int = 3,
    amp: str = 'off',
    grad_clip_norm: float = 1.0,
) -> dict[str, Any]:
    """Time optimizer steps of one recipe's model at ``batch``; return images/s and facts."""
    import torch

    from moa_depth_ros.model import create_model
    from tools.bench.floors import count_flops
    from training.losses import build_loss

    if batch < 1 or warmup < 0 or steps < 1:
        raise ConfigError(
            f'need batch >= 1, warmup >= 0, steps >= 1; got {batch}, {warmup}, {steps}'
        )
    if amp not in ('off', 'bf16'):
        raise ConfigError(f'amp must be off or bf16 on this benchmark, got {amp!r}')
    recipe = _recipe(entry)
    torch.manual_seed(0)
    model = create_model(recipe['model'], **recipe['overrides'])
    flops = count_flops(model.eval())
    model.train()
    groups = [
        {'params': [p for p in params if p.requires_grad], 'name': name}
        for name, params in model.trainable_parameter_groups().items()
    ]
    groups = [g for g in groups if g['params']]
    if not groups:
        raise ConfigError(f'{recipe["label"]}: the model has no trainable parameters')
    trainable = [p for g in groups for p in g['params']]
    optimizer = torch.optim.AdamW(groups, lr=1e-5, weight_decay=1e-4)
    loss_options = {'min_depth_m': model.min_depth_m, 'max_depth_m': model.max_depth_m}
    loss_options.update(recipe['loss_options'])
    criterion = build_loss(recipe['loss'], **loss_options)
    generator = torch.Generator().manual_seed(0)
    h, w = model.input_hw
    image = torch.rand(batch, 3, h, w, generator=generator)
    lo, hi = model.min_depth_m, model.max_depth_m
    gt_depth_m = lo + (hi - lo) * (0.05 + 0.9 * torch.rand(batch, 1, h, w, generator=generator))

    def step() -> None:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp == 'bf16'):
            outputs = model.forward_train(image)
        outputs = {
            k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in outputs.items()
        }
        loss, _ = criterion(outputs, gt_depth_m)
        loss.backward()
        if grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    timing = time_call(step, warmup=warmup, iters=steps)
    return {
        'label': recipe['label'],
        'model_name': recipe['model'],
        'loss': recipe['loss'],
        'input_hw': list(model.input_hw),
        'batch': batch,
        'images_per_s': batch * 1e3 / timing['mean_ms'],
        'step_s': {
            'median': timing['median_ms'] / 1e3,
            'min': timing['min_ms'] / 1e3,
            'max': timing['max_ms'] / 1e3,
        },
        'parameters': int(sum(p.numel() for p in model.parameters())),
        'trainable_parameters': int(sum(p.numel() for p in trainable)),
        'gflop_forward': flops / 1e9,
    }


def bench_training(
    entries: Sequence[str],
    *,
    batch: int = 8,
    warmup: int = 1,
    steps: int = 3,
    amp: str = 'off',
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Training throughput of every recipe; failures are listed with their reason."""
    import torch

    out: dict[str, Any] = {
        'batch': batch,
        'warmup': warmup,
        'steps': steps,
        'amp': 'fp32' if amp == 'off' else f'{amp} autocast',
        'device': 'cpu',
        'threads': torch.get_num_threads(),
        'rows': [],
        'skipped': [],
    }
    for entry in entries:
        log(f'training throughput: {entry} at batch {batch} ({warmup} + {steps} steps) ...')
        try:
            out['rows'].append(
                train_throughput(entry, batch=batch, warmup=warmup, steps=steps, amp=amp)
            )
        except ConfigError as e:
            out['skipped'].append({'what': f'training {entry}', 'reason': str(e)})
    return out
