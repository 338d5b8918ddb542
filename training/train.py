"""``python -m training train``: the training loop, read top to bottom.

::

    python -m training train --config training/configs/moa_depthclip_nyu.yaml
    python -m training train --config ... --resume           # continue after a kill
    torchrun --nproc_per_node 4 -m training train --config ...  # DistributedDataParallel

One function, ``train(config)``, does everything in order: distributed setup, seeding,
data, model, optimizer (AdamW with a learning rate per parameter group), warmup + cosine
schedule, AMP, EMA, optional resume, then the loop (forward, loss, backward, clip, step),
validation after every epoch on a *validation* split, and checkpoints. ``runs/<name>/``
receives:

- ``train_state.safetensors``: the full resumable state (``training/checkpointing.py``),
  written atomically after every epoch (and every ``save_every_steps``);
- ``model.safetensors``: the final weights (``save_checkpoint``: what the exporter reads);
- ``best.safetensors``: the weights with the best validation ``select_metric``;
- ``val_metrics.json``, ``config.yaml``, ``tb/`` (TensorBoard scalars).

Determinism: the sampler order depends only on (seed, epoch), augmentations only on
(data seed, epoch, sample index), and the global RNG states are saved, so ``--resume``
continues bit-identically: the batches a killed run had consumed inside an epoch are
skipped, not redrawn. With DDP every rank gets ``batch_size / world_size`` samples of
the same global batch (``GlobalBatchSampler``); a single process with
``grad_accum_steps`` = N micro-batches computes the same update as N ranks, BatchNorm
statistics and batch-level SILog included.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import random
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from moa_depth_ros.errors import ConfigError, MoaDepthError
from training.config import (
    TrainConfig,
    add_overrides_argument,
    build_data_config,
    load_config,
)
from training.data.base import resize_batch

STATE_FILE = 'train_state.safetensors'
MODEL_FILE = 'model.safetensors'
BEST_FILE = 'best.safetensors'
# Validation metrics where larger is better; every other metric is an error.
HIGHER_IS_BETTER = ('delta1', 'delta2', 'delta3', 'd1', 'd2', 'd3')


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: pathlib.Path
    model_path: pathlib.Path | None
    best_path: pathlib.Path | None
    state_path: pathlib.Path | None
    steps: int
    epochs_done: int
    losses: list[float]
    val_metrics: dict[str, float]
    best_metric: float
    train_time_s: float


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


class ModelEma:
    """Exponential moving average of the weights that training changes.

    Only trainable parameters and buffers are tracked: frozen CLIP weights never move, so
    averaging them would only cost time. ``applied(model)`` swaps the averaged weights in
    for validation or saving and puts the live ones back afterwards.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        tracked = {n for n, p in model.named_parameters() if p.requires_grad}
        tracked |= {n for n, _ in model.named_buffers()}
        self.shadow = {
            k: v.detach().clone() for k, v in model.state_dict().items() if k in tracked
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for key, shadow in self.shadow.items():
            value = state[key].detach()
            if shadow.is_floating_point():
                shadow.lerp_(value.to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f'EMA state lacks {missing[:3]}')
        for key, shadow in self.shadow.items():
            shadow.copy_(state[key])

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(live, strict=False)


class _TrainForward(torch.nn.Module):
    """Makes ``forward_train`` the module's forward, so DDP sees (and syncs) that call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        return self.model.forward_train(image)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of one rank, laid out so DDP and gradient accumulation agree.

    The global batch of a step is split over ``world_size x grad_accum_steps`` *virtual
    ranks*, each reading its share of the epoch's permutation through its own
    ``DistributedSampler`` (same seed, so the same permutation). Rank r runs the virtual
    ranks r*A .. r*A+A-1 as its A accumulation micro-batches. One process with A = 2 thus
    sees exactly the micro-batches that two DDP ranks with A = 1 see, and computes the same
    update. ``start_step`` skips the steps a resumed run already took in this epoch.
    """

    def __init__(self, dataset, *, world_size, rank, grad_accum_steps, micro_batch, seed):
        virtual = world_size * grad_accum_steps
        self.samplers = [
            torch.utils.data.DistributedSampler(
                dataset,
                num_replicas=virtual,
                rank=rank * grad_accum_steps + j,
                shuffle=True,
                seed=seed,
                drop_last=True,
            )
            for j in range(grad_accum_steps)
        ]
        self.micro_batch = micro_batch
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.samplers[0]) // self.micro_batch

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        orders = [list(sampler) for sampler in self.samplers]
        m = self.micro_batch
        for step in range(self.start_step, self.steps_per_epoch):
            for order in orders:
                yield order[step * m : (step + 1) * m]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * len(self.samplers)


# --------------------------------------------------------------------------- set-up


def _setup_distributed(config: TrainConfig) -> _Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; nccl on CUDA, gloo on CPU."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', str(rank)))
    if config.device == 'auto':
        device = torch.device(f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu')
    else:
        device = torch.device(config.device)
        if device.type == 'cuda' and world_size > 1:
            device = torch.device(f'cuda:{local_rank}')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f'device={config.device!r} but CUDA is not available')
        torch.cuda.set_device(device)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend='nccl' if device.type == 'cuda' else 'gloo',
            rank=rank,
            world_size=world_size,
        )
    return _Dist(rank, world_size, local_rank, device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 1_009 + rank) % 2**63


def _amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for a config ``amp`` value."""
    if mode == 'off':
        return None, False
    if mode == 'auto':
        mode = 'fp16' if device.type == 'cuda' else 'bf16'
    if mode == 'fp16':
        if device.type != 'cuda':
            raise ConfigError('amp=fp16 needs a CUDA device; use amp=bf16 on a CPU')
        return torch.float16, True
    return torch.bfloat16, False


def _lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, floor: float):
    """Linear warmup to 1, then cosine down to ``floor`` at ``total_steps``."""
    if step < warmup_steps:
        return float(step + 1) / float(warmup_steps)
    if schedule == 'constant':
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups from ``trainable_parameter_groups()``, each with its own learning rate."""
    groups = []
    for name, params in model.trainable_parameter_groups().items():
        params = [p for p in params if p.requires_grad]
        if params:
            lr = float(config.optim.group_lr.get(name, config.optim.lr))
            groups.append({'params': params, 'lr': lr, 'name': name})
    unknown = sorted(set(config.optim.group_lr) - {g['name'] for g in groups})
    if unknown:
        known = sorted(model.trainable_parameter_groups())
        raise ConfigError(
            f'optim.group_lr names {unknown}, which are not trainable parameter groups of '
            f'{model.model_name} (groups: {known})'
        )
    if not groups:
        raise ConfigError(f'{model.model_name} has no trainable parameters with this config')
    return groups


def _scene_key(image_path: str) -> str:
    """NYU room folder or KITTI drive of a list entry: the unit of a held-out scene."""
    parts = [p for p in image_path.replace('\\', '/').split('/') if p]
    for part in parts:
        if '_drive_' in part:
            return part
    return parts[0] if len(parts) > 1 else ''


def _holdout_lists(data_cfg, fraction: float, seed: int, out_dir: pathlib.Path):
    """Split the training list by scene into train and validation lists (files in out_dir)."""
    from training.data import read_list_file

    entries = read_list_file(data_cfg.train_list)
    scenes = sorted({_scene_key(e.image) for e in entries})
    if len(scenes) < 2:
        raise ConfigError(
            f'{data_cfg.train_list}: cannot hold out validation scenes from a list with '
            f'{len(scenes)} scene folder(s); give data.dataset.eval_list a validation list'
        )
    order = np.random.default_rng(seed).permutation(len(scenes))
    n_val = min(len(scenes) - 1, max(1, round(fraction * len(scenes))))
    val_scenes = {scenes[i] for i in order[:n_val]}

    def write(name: str, rows: list) -> str:
        path = out_dir / name
        tmp = path.with_name(f'.{name}.tmp-{os.getpid()}')
        lines = [f'{e.image} {e.depth or "None"} {e.focal_px!r}\n' for e in rows]
        tmp.write_text(''.join(lines), encoding='utf-8')
        os.replace(tmp, path)
        return str(path)

    out_dir.mkdir(parents=True, exist_ok=True)
    train_rows = [e for e in entries if _scene_key(e.image) not in val_scenes]
    val_rows = [e for e in entries if _scene_key(e.image) in val_scenes and e.depth]
    return write('train_list.txt', train_rows), write('val_list.txt', val_rows)


def _datasets(config: TrainConfig, model_hw, run_dir: pathlib.Path, dist, given=None):
    """Training and validation datasets; validation never reads the test list."""
    from training.data import build_dataset

    values = dict(config.data.dataset)
    name = values.get('dataset', 'synthetic')
    defaults = {'synthetic_hw': model_hw} if name == 'synthetic' else {'image_hw': model_hw}
    data_cfg = build_data_config(values, **defaults)
    if given is not None:
        return given[0], given[1], data_cfg
    if name == 'nyu_labeled':
        raise ConfigError(
            'data.dataset.dataset=nyu_labeled is an evaluation set (its validation split is '
            'the test split); train on the nyu list files'
        )
    if name in ('synthetic', 'recording'):  # validation scenes / block of their own
        return build_dataset(data_cfg, 'train'), build_dataset(data_cfg, 'val'), data_cfg
    train_list, val_list = _holdout_lists(
        data_cfg, config.data.val_holdout_fraction, config.seed, run_dir
    )
    if dist.enabled:
        torch.distributed.barrier()
    train_cfg = dataclasses.replace(data_cfg, train_list=train_list)
    val_cfg = dataclasses.replace(
        data_cfg,
        eval_list=val_list,
        eval_image_root=data_cfg.train_image_root,
        eval_depth_root=data_cfg.train_depth_root,
    )
    return build_dataset(train_cfg, 'train'), build_dataset(val_cfg, 'val'), data_cfg


def _model_from_checkpoint(config: TrainConfig):
    """Load ``model.init_checkpoint``: its architecture and weights (fine-tuning)."""
    from moa_depth_ros.model import load_model
    from moa_depth_ros.model.checkpoint import read_checkpoint_metadata

    path = config.model.init_checkpoint
    if config.model.overrides or config.model.pretrained:
        raise ConfigError(
            'model.init_checkpoint defines the architecture and weights: leave '
            'model.overrides and model.pretrained empty'
        )
    stored = read_checkpoint_metadata(path)['model_name']
    if stored != config.model.name:
        raise ConfigError(
            f'model.name is {config.model.name!r} but {path} holds a {stored!r} model'
        )
    return load_model(path).train()


def _to_canonical(
    gt_depth_m: torch.Tensor,
    batch: dict,
    input_hw: tuple[int, int],
    canonical_focal_px: float,
    metric_caps_m: tuple[float, float],
) -> torch.Tensor:
    """Labels in the canonical camera's space: depth / scale; outside the caps stays 0."""
    from training.data.base import canonical_scale

    scale = canonical_scale(batch, input_hw, canonical_focal_px).to(gt_depth_m.device)
    valid = (gt_depth_m >= metric_caps_m[0]) & (gt_depth_m <= metric_caps_m[1])
    return torch.where(valid, gt_depth_m / scale.view(-1, 1, 1, 1), torch.zeros_like(gt_depth_m))


def _float_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Cast autocast outputs to float32 so the losses (logs, square roots) run in fp32."""

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v) for v in value)
        return value

    return {k: cast(v) for k, v in outputs.items()}


def _is_better(metric: str, value: float, best: float) -> bool:
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def _initial_best(metric: str) -> float:
    return -math.inf if metric in HIGHER_IS_BETTER else math.inf


def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n', encoding='utf-8')
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    *,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    datasets: tuple[Any, Any] | None = None,
) -> TrainResult:
    """Run (or resume) the training described by ``config``; see the module docstring.

    ``resume`` is a training-state file, or 'auto' for ``runs/<name>/train_state.safetensors``.
    Without ``resume`` an existing run directory with a training state is an error unless
    ``overwrite`` (protects a long run from an accidental restart). ``datasets`` =
    (train, val) replaces the ones the recipe describes (the quickstart renders its scenes
    once and reuses them for evaluation).
    """
    import tqdm

    from moa_depth_ros.model import create_model, save_checkpoint
    from training.checkpointing import load_training_state, save_training_state
    from training.eval import evaluate_model
    from training.losses import build_loss

    config.validate()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    dist = _setup_distributed(config)
    run_dir = config.run_dir()
    state_path = run_dir / STATE_FILE

    # -- resume or fresh start
    state = None
    if resume is not None:
        resume_path = state_path if str(resume) == 'auto' else pathlib.Path(resume)
        state = load_training_state(resume_path)
    elif state_path.exists() and not overwrite:
        raise ConfigError(
            f'{run_dir} already holds a training state; pass --resume to continue it, '
            f'--overwrite to start again, or choose another name'
        )
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # -- seeds: the model starts identical on every rank (DDP also broadcasts rank 0's)
    _seed_everything(config.seed)
    if config.model.init_checkpoint:
        model = _model_from_checkpoint(config)
    else:
        model = create_model(
            config.model.name, pretrained=config.model.pretrained, **config.model.overrides
        )
    model.to(dist.device)

    # -- data
    train_set, val_set, data_cfg = _datasets(config, model.input_hw, run_dir, dist, datasets)
    depth_range_m = data_cfg.depth_range_m
    ranks_x_micro = dist.world_size * config.grad_accum_steps
    if config.batch_size % ranks_x_micro:
        raise ConfigError(
            f'batch_size {config.batch_size} must be divisible by world_size x '
            f'grad_accum_steps = {ranks_x_micro}'
        )
    micro_batch = config.batch_size // ranks_x_micro
    batch_sampler = GlobalBatchSampler(
        train_set,
        world_size=dist.world_size,
        rank=dist.rank,
        grad_accum_steps=config.grad_accum_steps,
        micro_batch=micro_batch,
        seed=config.seed,
    )
    steps_per_epoch = batch_sampler.steps_per_epoch
    if steps_per_epoch < 1:
        raise ConfigError(
            f'the training split has {len(train_set)} samples, fewer than one global batch '
            f'of {config.batch_size}'
        )
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    # -- loss, optimizer, schedule, AMP, EMA
    loss_options = {'min_depth_m': depth_range_m[0], 'max_depth_m': depth_range_m[1]}
    # A model with a canonical camera learns depth for that camera (moa_depth_ros.frame.scale):
    # labels are converted to it per sample below, after the dataset's metric caps decided
    # which are valid, so the loss caps are the model's own range.
    canonical_focal_px = model.config.canonical_focal_px()
    if canonical_focal_px is not None:
        loss_options['max_depth_m'] = model.max_depth_m
    loss_options.update(config.loss_options)
    criterion = build_loss(config.loss, **loss_options)
    optim = config.optim
    optimizer = torch.optim.AdamW(
        _param_groups(model, config),
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    warmup_steps = optim.warmup_steps or int(optim.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: _lr_factor(s, total_steps, warmup_steps, optim.schedule, optim.min_lr_ratio),
    )
    amp_dtype, use_scaler = _amp_settings(config.amp, dist.device)
    scaler = torch.amp.GradScaler('cuda', enabled=use_scaler)
    ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None
    trainable = [p for group in optimizer.param_groups for p in group['params']]

    # -- restore a killed run: weights, moments, schedule, scaler, EMA, RNG, counters
    epoch, step, step_in_epoch = 0, 0, 0
    best = _initial_best(config.select_metric)
    if state is not None:
        state.restore(model, optimizer, scheduler, scaler, ema)
        state.restore_rng()
        epoch, step, step_in_epoch = state.epoch, state.step, state.step_in_epoch
        best = state.best_metric
        _warn_config_changes(state.config, config.to_dict(), dist)

    net: torch.nn.Module = _TrainForward(model)
    if dist.enabled:
        if dist.device.type == 'cuda':
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.device.index] if dist.device.type == 'cuda' else None
        )

    writer = None
    if dist.is_main and config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last saved state.
        writer = SummaryWriter(str(run_dir / 'tb'), purge_step=step if state else None)
    if dist.is_main:
        _write_config(run_dir, config)
        counts = model.parameter_counts()
        print(
            f'train {config.name}: {model.model_name} {model.input_hw[0]}x{model.input_hw[1]}, '
            f'{counts["trainable"]:,} trainable of {counts["total"]:,} parameters; '
            f'{len(train_set)} train / {len(val_set)} val samples; {steps_per_epoch} steps '
            f'x {config.epochs} epochs, global batch {config.batch_size} on '
            f'{dist.world_size} x {dist.device.type}'
            + (f'; resuming at step {step} (epoch {epoch})' if state else ''),
            flush=True,
        )

    def validate() -> dict[str, float]:
        """Score the live weights, or the EMA weights when those are better."""
        kwargs = {
            'device': dist.device,
            'depth_range_m': depth_range_m,
            'dataset_name': data_cfg.dataset,
            'batch_size': micro_batch,
        }
        raw = evaluate_model(model, val_set, **kwargs)
        if ema is None or config.ema_select == 'raw':
            return {**raw, 'ema': 0.0}
        with ema.applied(model):
            averaged = evaluate_model(model, val_set, **kwargs)
        use_ema = config.ema_select == 'ema' or _is_better(
            config.select_metric,
            averaged[config.select_metric],
            raw[config.select_metric],
        )
        return {**(averaged if use_ema else raw), 'ema': 1.0 if use_ema else 0.0}

    def save_weights(path: pathlib.Path, use_ema: bool, extra: dict[str, str]) -> None:
        with ema.applied(model) if (ema is not None and use_ema) else contextlib.nullcontext():
            save_checkpoint(model, path, extra=extra)

    def save_state(next_epoch: int, consumed: int) -> None:
        save_training_state(
            state_path,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            ema_state=ema.state_dict() if ema is not None else None,
            epoch=next_epoch,
            step=step,
            step_in_epoch=consumed,
            best_metric=best,
            config=config.to_dict(),
        )

    # -- the loop
    losses: list[float] = []
    val_metrics: dict[str, float] = {}
    progress = tqdm.tqdm(
        total=total_steps,
        initial=step,
        disable=not (dist.is_main and config.progress),
        dynamic_ncols=True,
        desc=config.name,
    )
    start_time = time.perf_counter()
    while epoch < config.epochs and step < total_steps:
        model.train()
        batch_sampler.set_epoch(epoch)
        if hasattr(train_set, 'set_epoch'):
            train_set.set_epoch(epoch)
        batch_sampler.start_step = step_in_epoch
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_sampler=batch_sampler,
            num_workers=config.data.num_workers,
            pin_memory=dist.device.type == 'cuda',
            # Its own generator: making an iterator must not consume the global RNG,
            # or a resumed run's dropout stream would shift.
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        batches = iter(loader)
        while step_in_epoch < steps_per_epoch and step < total_steps:
            parts_sum: dict[str, float] = {}
            gate_entropy = 0.0
            for micro_step in range(config.grad_accum_steps):
                # Dropout draws from a stream seeded by (seed, step, virtual rank): a resumed
                # run, or one splitting the batch over other ranks, gets the same masks.
                virtual_rank = dist.rank * config.grad_accum_steps + micro_step
                torch.manual_seed(_step_seed(config.seed, step, virtual_rank))
                batch = next(batches)
                # The node's resize (on the CPU, as the node does it), then to the device.
                image = resize_batch(batch['image'], model.input_hw)
                image = image.to(dist.device, non_blocking=True)
                gt_depth_m = batch['depth_m'].to(dist.device, non_blocking=True)
                if canonical_focal_px is not None:
                    gt_depth_m = _to_canonical(
                        gt_depth_m, batch, model.input_hw, canonical_focal_px, depth_range_m
                    )
                last_micro = micro_step == config.grad_accum_steps - 1
                sync = contextlib.nullcontext()
                if dist.enabled and not last_micro:
                    sync = net.no_sync()  # all-reduce once per optimizer step
                with sync:
                    with torch.autocast(
                        dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None
                    ):
                        outputs = net(image)
                    loss, parts = criterion(_float_outputs(outputs), gt_depth_m)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f'non-finite training loss {loss.item()} at step {step} '
                            f'(parts: { {k: float(v) for k, v in parts.items()} })'
                        )
                    scaler.scale(loss / config.grad_accum_steps).backward()
                for key, value in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + float(value)
                if 'gate_entropy' in outputs:
                    gate_entropy += float(outputs['gate_entropy'].detach())
            grad_norm = math.nan
            if optim.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, optim.grad_clip_norm))
            lrs = {g['name']: g['lr'] for g in optimizer.param_groups}
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            step_in_epoch += 1

            parts_mean = {k: v / config.grad_accum_steps for k, v in parts_sum.items()}
            losses.append(parts_mean['total'])
            progress.update(1)
            if dist.is_main and (step % max(1, config.log_every_steps) == 0 or step == 1):
                progress.set_postfix(loss=f'{parts_mean["total"]:.4f}', epoch=epoch)
                if writer is not None:
                    for key, value in parts_mean.items():
                        writer.add_scalar(f'train/loss_{key}', value, step)
                    for name, lr in lrs.items():
                        writer.add_scalar(f'train/lr_{name}', lr, step)
                    if 'gate_entropy' in outputs:
                        writer.add_scalar(
                            'train/gate_entropy', gate_entropy / config.grad_accum_steps, step
                        )
                    if math.isfinite(grad_norm):
                        writer.add_scalar('train/grad_norm', grad_norm, step)
            if (
                dist.is_main
                and config.save_every_steps
                and step % config.save_every_steps == 0
                and step_in_epoch < steps_per_epoch
            ):
                save_state(epoch, step_in_epoch)

        # -- end of epoch (or of max_steps): validate on rank 0, then save
        epoch_done = step_in_epoch >= steps_per_epoch
        if epoch_done:
            epoch, step_in_epoch = epoch + 1, 0
        is_last = epoch >= config.epochs or step >= total_steps
        if dist.is_main and (is_last or epoch % config.val_every_epochs == 0):
            val_metrics = validate()
            value = val_metrics[config.select_metric]
            if writer is not None:
                for key, metric in val_metrics.items():
                    writer.add_scalar(f'val/{key}', metric, step)
            progress.write(
                f'epoch {epoch} step {step}: val '
                + ' '.join(f'{k}={v:.4f}' for k, v in val_metrics.items() if k != 'ema')
                + (' (EMA weights)' if val_metrics.get('ema') else '')
            )
            if _is_better(config.select_metric, value, best):
                best = value
                save_weights(
                    run_dir / BEST_FILE,
                    bool(val_metrics.get('ema')),
                    {
                        'epoch': str(epoch),
                        'step': str(step),
                        f'val_{config.select_metric}': str(value),
                    },
                )
        if dist.is_main:
            save_state(epoch, step_in_epoch)
        if dist.enabled:
            torch.distributed.barrier()
    progress.close()
    train_time_s = time.perf_counter() - start_time

    # -- the final model (what `python -m training export` reads)
    model_path = best_path = None
    if dist.is_main:
        model_path = run_dir / MODEL_FILE
        save_weights(
            model_path,
            bool(val_metrics.get('ema')) or config.ema_select == 'ema',
            {'epoch': str(epoch), 'step': str(step)},
        )
        best_path = run_dir / BEST_FILE if (run_dir / BEST_FILE).exists() else None
        _write_json(
            run_dir / 'val_metrics.json',
            {
                'val': val_metrics,
                'best': {config.select_metric: best},
                'steps': step,
                'epochs': epoch,
                'train_time_s': train_time_s,
            },
        )
    if writer is not None:
        writer.close()
    if dist.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return TrainResult(
        run_dir=run_dir,
        model_path=model_path,
        best_path=best_path,
        state_path=state_path if state_path.exists() else None,
        steps=step,
        epochs_done=epoch,
        losses=losses,
        val_metrics=val_metrics,
        best_metric=best,
        train_time_s=train_time_s,
    )


def _warn_config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], dist) -> None:
    """Tell the user which recipe values differ from the run being resumed."""
    if not dist.is_main:
        return

    def flat(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
        out = {}
        for key, value in d.items():
            if isinstance(value, Mapping):
                out.update(flat(value, f'{prefix}{key}.'))
            else:
                out[f'{prefix}{key}'] = value
        return out

    old, new = flat(saved), flat(current)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        print(
            f'warning: resuming with a changed recipe ({", ".join(changed)}); the '
            f'continuation is not identical to the original run',
            file=sys.stderr,
        )


def _write_config(run_dir: pathlib.Path, config: TrainConfig) -> None:
    import yaml

    path = run_dir / 'config.yaml'
    tmp = path.with_name(f'.config.yaml.tmp-{os.getpid()}')
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding='utf-8')
    os.replace(tmp, path)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training train',
        description='Train a depth model from a YAML recipe (single process or torchrun).',
    )
    parser.add_argument('--config', required=True, help='YAML recipe (training/configs/*.yaml)')
    add_overrides_argument(parser, example='--set optim.lr=3e-5 --set epochs=5')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        metavar='STATE',
        help='continue a killed run (default: runs/<name>/train_state.safetensors)',
    )
    parser.add_argument(
        '--overwrite', action='store_true', help='start again even if the run directory exists'
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training train``."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        result = train(config, resume=args.resume, overwrite=args.overwrite)
    except MoaDepthError as e:
        print(f'train: error: {e}', file=sys.stderr)
        return 2
    if int(os.environ.get('RANK', '0')) == 0:
        print(f'model: {result.model_path}')
        if result.best_path is not None:
            print(
                f'best:  {result.best_path} (val {config.select_metric} {result.best_metric:.4f})'
            )
        print(f'state: {result.state_path}')
        print(f'{result.steps} steps in {result.train_time_s:.1f} s')
    return 0
