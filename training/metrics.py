"""Depth evaluation metrics as the papers compute them (BTS / AdaBins ``eval`` code).

Per image: the prediction is resized to the ground truth (bilinear) if sizes differ,
optionally median-scaled, then NaN -> min, +inf -> max and clamped to [min, max]; valid
pixels are ``min < gt < max`` inside the evaluation crop. Metrics are computed per image
and then averaged over images (not over pixels):

- d1, d2, d3: fraction with ``max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3``
- AbsRel ``mean(|gt - pred| / gt)``, SqRel ``mean((gt - pred)^2 / gt)``
- RMSE ``sqrt(mean((gt - pred)^2))``, RMSElog ``sqrt(mean((log gt - log pred)^2))``
- log10 ``mean(|log10 gt - log10 pred|)``
- SILog ``100 * sqrt(mean(e^2) - mean(e)^2)``, e = log pred - log gt (BTS's eval form)

Crops: ``nyu_eigen`` rows 45:471, columns 41:601 (only for 480x640 ground truth);
``kitti_garg`` and ``kitti_eigen`` as fractions of height/width (BTS). The fractions apply
to whatever ground truth is scored: KITTIEigen cuts it to the 352x1216 benchmark crop, as
AdaBins' online evaluation does; BTS's ``eval.py`` instead pads the prediction back to the
full ~375x1242 frame and takes the fractions of that, a slightly larger region, so numbers
of the two set-ups differ a little. Median scaling (monodepth2 order: ``pred *=
median(gt) / median(pred)`` over the valid pixels, then the clamp) is off by default and
always named in the results header, so a scaled number is never mistaken for a metric one.
Computation is torch, in float64, on the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError

METRIC_NAMES = ('d1', 'd2', 'd3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog')
COLUMN_LABELS = ('d1', 'd2', 'd3', 'AbsRel', 'SqRel', 'RMSE', 'RMSElog', 'log10', 'SILog')
CROPS = ('none', 'nyu_eigen', 'kitti_garg', 'kitti_eigen')

# (top, bottom, left, right) fractions of BTS's eval code.
_KITTI_CROP_FRACTIONS = {
    'kitti_garg': (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    'kitti_eigen': (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}


@dataclass(frozen=True)
class MetricConfig:
    """Depth caps, evaluation crop and median scaling of one evaluation."""

    min_depth_m: float = 1e-3
    max_depth_m: float = 10.0
    crop: str = 'none'
    median_scaling: bool = False

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ConfigError(f'crop must be one of {CROPS}, got {self.crop!r}')
        if not 0.0 < self.min_depth_m < self.max_depth_m:
            raise ConfigError(
                f'need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}'
            )

    @classmethod
    def nyu(cls, **changes) -> MetricConfig:
        """NYU Depth V2 as BTS/AdaBins: depth in (1e-3, 10) m, Eigen crop."""
        return cls(**{'min_depth_m': 1e-3, 'max_depth_m': 10.0, 'crop': 'nyu_eigen', **changes})

    @classmethod
    def kitti(cls, **changes) -> MetricConfig:
        """KITTI Eigen split: depth in (1e-3, 80) m, Garg crop (BTS; SPACE-CLIP uses eigen)."""
        return cls(**{'min_depth_m': 1e-3, 'max_depth_m': 80.0, 'crop': 'kitti_garg', **changes})

    def header(self) -> str:
        return (
            f'min_depth_m={self.min_depth_m:g} max_depth_m={self.max_depth_m:g} '
            f'crop={self.crop} median_scaling={"on" if self.median_scaling else "off"}'
        )


def crop_mask(crop: str, height: int, width: int, device=None) -> torch.Tensor:
    """Boolean [H, W] mask of the evaluation region."""
    mask = torch.zeros((height, width), dtype=torch.bool, device=device)
    if crop == 'none':
        mask[:] = True
    elif crop == 'nyu_eigen':
        if (height, width) != (480, 640):
            raise ConfigError(
                f'crop nyu_eigen is defined for 480x640 ground truth, got {height}x{width}'
            )
        mask[45:471, 41:601] = True
    elif crop in _KITTI_CROP_FRACTIONS:
        top, bottom, left, right = _KITTI_CROP_FRACTIONS[crop]
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = (
            True
        )
    else:
        raise ConfigError(f'crop must be one of {CROPS}, got {crop!r}')
    return mask


def _as_nhw(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 4:
        if t.shape[1] != 1:
            raise ConfigError(f'{name} must have one channel, got {tuple(t.shape)}')
        t = t[:, 0]
    if t.dim() != 3:
        raise ConfigError(f'{name} must be [H,W], [N,H,W] or [N,1,H,W], got {tuple(t.shape)}')
    return t


def compute_metrics(
    pred_m,
    gt_m,
    config: MetricConfig = MetricConfig(),
    *,
    valid_mask=None,
) -> dict[str, torch.Tensor]:
    """Compute per-image metrics: float64 tensors [N], plus ``'n_valid'`` (int64 [N]).

    An image with no valid pixel gets NaN metrics and ``n_valid`` 0.
    ``pred_m``/``gt_m``: torch or numpy, [H,W], [N,H,W] or [N,1,H,W]; ``valid_mask``
    (optional, same shape as gt) further restricts the scored pixels.
    """
    gt = _as_nhw(gt_m, 'gt_m').to(torch.float64)
    pred = _as_nhw(pred_m, 'pred_m').to(device=gt.device, dtype=torch.float64)
    if pred.shape[0] != gt.shape[0]:
        raise ConfigError(f'pred has {pred.shape[0]} images, gt {gt.shape[0]}')
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(
            pred[:, None], size=tuple(gt.shape[-2:]), mode='bilinear', align_corners=False
        )[:, 0]
    lo, hi = config.min_depth_m, config.max_depth_m
    valid = torch.isfinite(gt) & (gt > lo) & (gt < hi)
    valid &= crop_mask(config.crop, gt.shape[-2], gt.shape[-1], gt.device)
    if valid_mask is not None:
        valid &= _as_nhw(valid_mask, 'valid_mask').to(device=gt.device, dtype=torch.bool)
    if config.median_scaling:
        ratios = []
        for p, g, v in zip(pred, gt, valid):
            good = v & torch.isfinite(p)
            if good.any():
                ratios.append(torch.quantile(g[good], 0.5) / torch.quantile(p[good], 0.5))
            else:
                ratios.append(torch.ones((), dtype=gt.dtype, device=gt.device))
        pred = pred * torch.stack(ratios).view(-1, 1, 1)
    pred = torch.nan_to_num(pred, nan=lo, posinf=hi, neginf=lo).clamp(lo, hi)
    gt_safe = torch.where(valid, gt, torch.ones_like(gt))
    pred = torch.where(valid, pred, torch.ones_like(pred))

    count = valid.sum(dim=(1, 2))
    denom = count.to(torch.float64)  # 0 for an empty image: 0 / 0 = NaN flags it

    def mean(values: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, values, torch.zeros_like(values)).sum(dim=(1, 2)) / denom

    ratio = torch.maximum(gt_safe / pred, pred / gt_safe)
    diff = gt_safe - pred
    log_diff = torch.log(pred) - torch.log(gt_safe)
    mean_log = mean(log_diff)
    out = {
        'd1': mean((ratio < 1.25).to(torch.float64)),
        'd2': mean((ratio < 1.25**2).to(torch.float64)),
        'd3': mean((ratio < 1.25**3).to(torch.float64)),
        'abs_rel': mean(diff.abs() / gt_safe),
        'sq_rel': mean(diff**2 / gt_safe),
        'rmse': torch.sqrt(mean(diff**2)),
        'rmse_log': torch.sqrt(mean(log_diff**2)),
        'log10': mean((torch.log10(pred) - torch.log10(gt_safe)).abs()),
        'silog': 100.0 * torch.sqrt((mean(log_diff**2) - mean_log**2).clamp_min(0.0)),
    }
    out['n_valid'] = count
    return out


class MetricAccumulator:
    """Sums per-image metrics over a test set and gives their means (BTS/AdaBins style).

    Images without a valid pixel are skipped and counted in ``skipped``.
    """

    def __init__(self, config: MetricConfig = MetricConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self.count = 0
        self.skipped = 0

    def update(self, pred_m, gt_m, *, valid_mask=None) -> dict[str, torch.Tensor]:
        """Score a batch; return its per-image metrics (see ``compute_metrics``)."""
        per_image = compute_metrics(pred_m, gt_m, self.config, valid_mask=valid_mask)
        scored = per_image['n_valid'] > 0
        n = int(scored.sum())
        self.count += n
        self.skipped += int(scored.numel()) - n
        for name in METRIC_NAMES:
            self._sums[name] += float(per_image[name][scored].sum())
        return per_image

    def means(self) -> dict[str, float]:
        """Mean of each metric over the scored images (NaN before any image)."""
        if self.count == 0:
            return {name: float('nan') for name in METRIC_NAMES}
        return {name: self._sums[name] / self.count for name in METRIC_NAMES}

    def header(self) -> str:
        skipped = f' skipped={self.skipped}' if self.skipped else ''
        return f'{self.config.header()} images={self.count}{skipped}'

    def table(self) -> str:
        return format_table(self.means(), header=self.header())


def format_table(
    results: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    header: str | None = None,
    *,
    digits: int = 4,
) -> str:
    """Format metrics as the papers' tables: d1 d2 d3 AbsRel SqRel RMSE RMSElog log10 SILog.

    ``results`` is one row (metric -> value) or named rows (row name -> metric -> value),
    e.g. to print a model next to a paper's numbers. Missing metrics print as '-'.
    """
    if all(isinstance(v, Mapping) for v in results.values()) and results:
        rows = list(results.items())
    else:
        rows = [('', results)]
    name_width = max((len(name) for name, _ in rows), default=0)
    width = max(8, digits + 4)
    lines = [f'# {header}'] if header else []
    lead = f'{"":<{name_width}} ' if name_width else ''
    lines.append(lead + ' '.join(f'{label:>{width}}' for label in COLUMN_LABELS))
    for name, row in rows:
        cells = []
        for metric in METRIC_NAMES:
            value = row.get(metric)
            if value is None:
                cells.append(f'{"-":>{width}}')
            else:
                cells.append(f'{float(value):>{width}.{digits}f}')
        prefix = f'{name:<{name_width}} ' if name_width else ''
        lines.append(prefix + ' '.join(cells))
    return '\n'.join(lines)


def metrics_to_numpy(per_image: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-image metric tensors as numpy arrays (for saving a per-image CSV)."""
    return {k: v.detach().cpu().numpy() for k, v in per_image.items()}
