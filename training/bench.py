"""``python -m training bench`` (``make bench``): training throughput and the full report.

Runs everything ``moa-depth bench`` measures (floors, per-frame stages, end to end per
model and backend, the worker under load), then training throughput: images per second
at batch 8 for each recipe's model, one optimizer step being ``forward_train``, the
recipe's loss (``build_loss``), backward, gradient clipping and an AdamW step over
``trainable_parameter_groups()``, as the training loop does. Inputs are random images and
depths at the model's input size, so data loading is not part of the number. Writes
``runs/bench/results.json`` and ``results.md`` and regenerates the README's performance
section between its BENCH markers.

A recipe is a preset name (the built-in ones below) or a recipe YAML file
(``training/configs/*.yaml``: its model, overrides, loss and loss options are used).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from moa_depth_ros.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# label -> (model preset, loss preset): the papers' recipes.
RECIPES: dict[str, tuple[str, str]] = {
    'moa_depthclip': ('moa_depthclip', 'moa_depthclip'),
    'space_clip': ('space_clip', 'space_clip'),
}
# label -> recipe YAML: the quickstart's model exactly as `make demo` trains it.
RECIPE_FILES: dict[str, pathlib.Path] = {
    'quickstart': REPO_ROOT / 'training' / 'configs' / 'quickstart.yaml',
}
FULL = {'train_warmup': 1, 'train_steps': 3}
QUICK = {'train_warmup': 1, 'train_steps': 2}


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

    from moa_depth_ros.bench.floors import model_flops
    from moa_depth_ros.model import create_model
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
    flops = model_flops(model.eval())
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

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = np.asarray(times)
    return {
        'label': recipe['label'],
        'model_name': recipe['model'],
        'loss': recipe['loss'],
        'input_hw': list(model.input_hw),
        'batch': batch,
        'images_per_s': batch * steps / float(step_s.sum()),
        'step_s': {
            'median': float(np.median(step_s)),
            'min': float(step_s.min()),
            'max': float(step_s.max()),
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


def build_parser() -> argparse.ArgumentParser:
    """Build the parser: the runtime benchmark's options plus the training ones."""
    from moa_depth_ros.bench import cli

    parser = argparse.ArgumentParser(
        prog='python -m training bench',
        description='The full benchmark: moa-depth bench plus training throughput; writes '
        'runs/bench/results.{json,md} and the README performance section.',
    )
    cli.configure(parser)
    parser.set_defaults(readme=str(REPO_ROOT / 'README.md'))
    parser.add_argument(
        '--no-readme', action='store_true', help='do not update the README section'
    )
    parser.add_argument(
        '--train-recipes',
        nargs='+',
        default=[*RECIPES, *RECIPE_FILES],
        help=f'recipe names ({", ".join([*RECIPES, *RECIPE_FILES])}), model presets or recipe '
        '.yaml files',
    )
    parser.add_argument('--train-batch', type=int, default=8, help='images per step')
    parser.add_argument('--train-warmup', type=int, help='untimed steps first (1)')
    parser.add_argument('--train-steps', type=int, help='timed steps (3)')
    parser.add_argument('--train-amp', choices=('off', 'bf16'), default='off')
    parser.add_argument('--no-train', action='store_true', help='skip training throughput')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the full benchmark and write the results and the README section."""
    from moa_depth_ros.bench import cli

    args = build_parser().parse_args(argv)
    if args.no_readme:
        args.readme = None
    cli.check_outputs(args)
    if args.from_results:
        cli.finish(cli.read_results(args.from_results), args)
        return 0
    log = cli.log_progress
    started = time.perf_counter()
    results = cli.collect(args, log=log, command='make bench')
    base = QUICK if args.quick else FULL
    warmup = args.train_warmup if args.train_warmup is not None else base['train_warmup']
    steps = args.train_steps if args.train_steps is not None else base['train_steps']
    if args.no_train:
        results['skipped'].append(
            {'what': 'training throughput', 'reason': 'not requested (--no-train)'}
        )
    else:
        start = time.perf_counter()
        results['training'] = bench_training(
            args.train_recipes,
            batch=args.train_batch,
            warmup=warmup,
            steps=steps,
            amp=args.train_amp,
            log=log,
        )
        results['skipped'].extend(results['training']['skipped'])
        results['wall_s']['training'] = time.perf_counter() - start
    results['wall_s']['total'] = time.perf_counter() - started
    cli.close_run(results)
    cli.finish(results, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
