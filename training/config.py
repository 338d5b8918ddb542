"""Training recipes: the ``TrainConfig`` dataclasses and their YAML loader.

A recipe (``training/configs/*.yaml``) is one YAML document whose sections mirror the
dataclasses below: ``model`` (what ``create_model`` builds), ``data`` (what
``build_dataset`` reads), ``optim`` (AdamW, per-group learning rates, warmup + cosine,
clipping) and the top-level run settings (epochs, batch, AMP, EMA, logging). Unknown keys
and values of the wrong type raise ``ConfigError`` naming the key, so a typo never trains
silently with a default. The whole config travels inside every checkpoint as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import types
import typing
from typing import Any, Mapping, Sequence, Union

from moa_depth_ros.errors import ConfigError

AMP_MODES = ('off', 'auto', 'bf16', 'fp16')
SCHEDULES = ('cosine', 'constant')
EMA_SELECT = ('raw', 'ema', 'both')


@dataclasses.dataclass
class ModelConfig:
    """Which network to build: ``create_model(name, pretrained=..., **overrides)``."""

    name: str = 'moa_depthclip'
    # None trains from random init (offline); an open_clip tag ('openai') or a local file.
    pretrained: Union[str, None] = None
    # Fields of the model's own config dataclass (input_size, clip_cfg, depth range, ...).
    overrides: dict = dataclasses.field(default_factory=dict)
    # A checkpoint (.safetensors) to start from: it defines the architecture and the
    # weights (fine-tuning); name must match it and overrides stay empty.
    init_checkpoint: Union[str, None] = None


@dataclasses.dataclass
class DataSection:
    """Which data to read and how to split off validation."""

    # Fields of ``training.data.DataConfig`` (dataset, list files, roots, synthetic sizes,
    # augment_cfg, ...); validated against that dataclass when the run starts.
    dataset: dict = dataclasses.field(default_factory=lambda: {'dataset': 'synthetic'})
    # NYU/KITTI: the scenes (NYU room folders, KITTI drives) of this fraction of the
    # training list are held out for validation, so checkpoints are never selected on
    # the test list. Synthetic data has its own validation seed range.
    val_holdout_fraction: float = 0.05
    num_workers: int = 0


@dataclasses.dataclass
class OptimConfig:
    """AdamW with per-group learning rates, linear warmup then cosine decay."""

    lr: float = 1e-5
    # Learning rate per parameter group of ``trainable_parameter_groups()``; groups not
    # named here use ``lr``.
    group_lr: dict = dataclasses.field(default_factory=dict)
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = 'cosine'
    # Warmup length: ``warmup_steps`` if positive, else ``warmup_ratio`` of all steps.
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    # Cosine floor as a fraction of each group's peak learning rate.
    min_lr_ratio: float = 0.0
    # Global L2 norm of the gradient is clipped to this (0 disables clipping).
    grad_clip_norm: float = 1.0


@dataclasses.dataclass
class TrainConfig:
    """One training run; ``runs/<name>/`` receives checkpoints, logs and the final model."""

    name: str = 'run'
    seed: int = 42
    epochs: int = 1
    # Global batch per optimizer step: split evenly over DistributedDataParallel ranks and
    # gradient-accumulation micro-batches.
    batch_size: int = 8
    grad_accum_steps: int = 1
    # Stop after this many optimizer steps in total (0: run all epochs).
    max_steps: int = 0
    # off | auto (fp16 + GradScaler on CUDA, bf16 on CPU) | bf16 | fp16.
    amp: str = 'off'
    # Exponential moving average of the weights (0 disables it).
    ema_decay: float = 0.0
    # Which weights validation scores when EMA is on: raw, ema, or both (keep the better).
    ema_select: str = 'both'
    loss: str = 'moa_depthclip'
    loss_options: dict = dataclasses.field(default_factory=dict)
    out_dir: str = 'runs'
    # Device: auto (cuda if available, else cpu), cpu, cuda, cuda:N.
    device: str = 'auto'
    # torch intra-op threads (0 keeps torch's default).
    num_threads: int = 0
    val_every_epochs: int = 1
    # Validation metric that picks best.safetensors (lower is better for errors).
    select_metric: str = 'abs_rel'
    # Also write the resumable training state every N steps inside an epoch (0: per epoch).
    save_every_steps: int = 0
    log_every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)

    def run_dir(self) -> pathlib.Path:
        """Where this run writes its files."""
        return pathlib.Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML safe); ``config_from_dict`` reverses it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> None:
        """Reject values that would fail later, or silently do something else."""
        _choice('amp', self.amp, AMP_MODES)
        _choice('ema_select', self.ema_select, EMA_SELECT)
        _choice('optim.schedule', self.optim.schedule, SCHEDULES)
        holdout = self.data.val_holdout_fraction
        if not 0.0 < holdout < 1.0:
            raise ConfigError(f'data.val_holdout_fraction must be in (0, 1), got {holdout!r}')
        if self.grad_accum_steps < 1:
            raise ConfigError(f'grad_accum_steps must be >= 1, got {self.grad_accum_steps!r}')
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f'batch_size {self.batch_size} must be a multiple of grad_accum_steps '
                f'{self.grad_accum_steps}'
            )
        _positive('epochs', self.epochs)
        _positive('batch_size', self.batch_size)
        _positive('val_every_epochs', self.val_every_epochs)
        _positive('optim.lr', self.optim.lr)
        for key in ('max_steps', 'save_every_steps', 'num_threads', 'log_every_steps'):
            if getattr(self, key) < 0:
                raise ConfigError(f'{key} must be >= 0, got {getattr(self, key)!r}')
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f'ema_decay must be in [0, 1), got {self.ema_decay!r}')
        if self.optim.grad_clip_norm < 0:
            raise ConfigError(
                f'optim.grad_clip_norm must be >= 0, got {self.optim.grad_clip_norm!r}'
            )
        if not 0.0 <= self.optim.warmup_ratio < 1.0:
            raise ConfigError(
                f'optim.warmup_ratio must be in [0, 1), got {self.optim.warmup_ratio!r}'
            )
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ConfigError(
                f'optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio!r}'
            )
        for group, lr in self.optim.group_lr.items():
            if not isinstance(lr, (int, float)) or lr <= 0:
                raise ConfigError(f'optim.group_lr.{group} must be a positive number, got {lr!r}')
        if len(self.optim.betas) != 2:
            raise ConfigError(f'optim.betas must have two values, got {self.optim.betas!r}')
        if not self.name or '/' in self.name or self.name in ('.', '..'):
            raise ConfigError(f'name must be a plain directory name, got {self.name!r}')


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f'{key} must be one of {", ".join(allowed)}; got {value!r}')


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f'{key} must be positive, got {value!r}')


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a field's type hint; YAML's loose numbers become floats."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f'{key}: expected {hint}, got {value!r}')
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f'{key}: expected a mapping, got {value!r}')
        return _from_dict(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f'{key}: expected true/false, got {value!r}')
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f'{key}: expected an integer, got {value!r}')
    if hint is float:
        # PyYAML reads 1e-5 (no dot) as a string, so accept numeric strings here.
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError as e:
                raise ConfigError(f'{key}: expected a number, got {value!r}') from e
        raise ConfigError(f'{key}: expected a number, got {value!r}')
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f'{key}: expected a string, got {value!r}')
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    if hint is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(float(v) if isinstance(v, str) else v for v in value)
        raise ConfigError(f'{key}: expected a list, got {value!r}')
    return value


def _from_dict(cls: type, data: Mapping[str, Any], where: str = '') -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f'{where}.' if where else ''
        raise ConfigError(
            f'unknown config key {prefix}{unknown[0]!r}; known keys: {", ".join(sorted(names))}'
        )
    values = {}
    for key, value in data.items():
        values[key] = _coerce(value, hints[key], f'{where}.{key}' if where else key)
    return cls(**values)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a ``TrainConfig`` from plain data (a parsed recipe or checkpoint)."""
    data = dict(data)
    if isinstance(data.get('amp'), bool):  # YAML 1.1 reads a bare `amp: off` as false
        data['amp'] = 'auto' if data['amp'] else 'off'
    config = _from_dict(TrainConfig, data)
    config.validate()
    return config


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a recipe dict."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'override must look like section.key=value, got {item!r}')
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f'override {item!r}: value is not valid YAML: {e}') from e
        node = data
        parts = key.split('.')
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f'override {item!r}: {part!r} is not a section')
            node = child
        node[parts[-1]] = value
    return data


def add_overrides_argument(parser: Any, example: str = '') -> None:
    """Add the repeatable ``--set KEY=VALUE`` option that ``apply_overrides`` reads."""
    parser.add_argument(
        '--set',
        dest='overrides',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override a recipe value' + (f', e.g. {example}' if example else ''),
    )


def load_config(path: str | pathlib.Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply ``key=value`` overrides, and validate it."""
    import yaml

    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except OSError as e:
        raise ConfigError(f'cannot read config file {str(path)!r}: {e}') from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {str(path)!r} is not valid YAML: {e}') from e
    if not isinstance(data, dict):
        raise ConfigError(f'config file {str(path)!r} must hold a mapping, got {type(data)}')
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f'{path}: {e}') from e


def build_data_config(values: Mapping[str, Any], **defaults: Any) -> Any:
    """Build a ``training.data.DataConfig`` from a recipe's ``data.dataset`` mapping.

    ``defaults`` fill fields the recipe leaves out (e.g. ``image_hw`` = the model input).
    Lists become tuples and ``augment_cfg`` a mapping becomes an ``AugmentConfig``.
    """
    from training.data import AugmentConfig, DataConfig

    merged = {**defaults, **dict(values)}
    known = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(
            f'unknown key data.dataset.{unknown[0]!r}; known keys: {", ".join(sorted(known))}'
        )
    for key, cast in (
        ('image_hw', int),
        ('synthetic_hw', int),
        ('synthetic_camera_height_m', float),
        ('synthetic_hfov_deg', float),
    ):
        if isinstance(merged.get(key), list):
            merged[key] = tuple(cast(v) for v in merged[key])
    recording = merged.get('recording')
    if isinstance(recording, Mapping):
        from training.data.recording import RecordingConfig

        rec_known = {f.name for f in dataclasses.fields(RecordingConfig)}
        bad = sorted(set(recording) - rec_known)
        if bad:
            raise ConfigError(
                f'unknown key data.dataset.recording.{bad[0]!r}; known keys: '
                f'{", ".join(sorted(rec_known))}'
            )
        merged['recording'] = RecordingConfig(**recording)
    augment = merged.get('augment_cfg')
    if isinstance(augment, Mapping):
        aug_known = {f.name for f in dataclasses.fields(AugmentConfig)}
        bad = sorted(set(augment) - aug_known)
        if bad:
            raise ConfigError(
                f'unknown key data.dataset.augment_cfg.{bad[0]!r}; known keys: '
                f'{", ".join(sorted(aug_known))}'
            )
        merged['augment_cfg'] = AugmentConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        )
    try:
        return DataConfig(**merged)
    except TypeError as e:
        raise ConfigError(f'data.dataset: {e}') from e
