"""Training losses for metric depth, and the papers' weighted combinations as presets.

Every loss is masked by ``valid = (gt > min_depth_m) & (gt < max_depth_m)`` (NaN/inf
ground truth is invalid), ignores whatever the prediction holds at invalid pixels (even
NaN: inputs are replaced there before any arithmetic, so no NaN reaches a gradient), and
returns 0 - still attached to the graph, so ``backward()`` works - when no pixel is valid.

Resolution: depth-valued predictions ('depth', 'regression_m', every 'aux' map) are
upsampled bilinearly (align_corners=False, as SPACE-CLIP upsamples its aux maps) to the
ground truth's size; for the bin cross-entropy the ground truth is instead downsampled
(nearest) to the logits' size, which avoids upsampling [N,B,H,W] logits.

Presets (``build_loss(name)``):

- ``'moa_depthclip'`` (MoA-DepthCLIP, DESIGN.md): 1.0 CE(bins) + 1.0 L1(regression)
  + 0.5 SILog(fused depth).
- ``'space_clip'``: the official training code (github taewan2002/space-clip, ``train.py``
  lines 278-413 with ``configs/nyu.yaml`` and ``configs/kitti.yaml``):
  ``(1 - w_ssim) * SILog(depth) + w_ssim * SSIM(depth) + sum_i aux_w[i] * SILog(aux[i])
  + w_grad * Gradient(depth)`` with ``w_ssim = 0.5``, ``aux_loss_weights = [0.10, 0.05,
  0.00]`` (an aux map past the list takes the last weight, ``_resolve_aux_weight``) and
  ``w_grad = 0.0``; SILog with variance_focus 0.85 (``utils/loss.py``).
- ``'silog'``: SILog(depth) alone (BTS / AdaBins style fine-tuning).

SILog is the standard form ``10 * sqrt(mean(g^2) - lambda * mean(g)^2)``, g = log(pred) -
log(gt) over the valid pixels of the whole batch (BTS, AdaBins, SPACE-CLIP), computed as
``var(g) + (1 - lambda) mean(g)^2`` which is never negative in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math
from typing import Mapping

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError

LOSS_KINDS = ('silog', 'l1', 'bin_ce', 'ssim', 'gradient')

# Below this the square root is continued linearly: sqrt has an infinite slope at 0, and
# a perfect prediction must give exactly 0 with a finite gradient.
_SQRT_EPS = 1e-10
# Predictions are clamped here before the log (as SPACE-CLIP's eps): a ReLU head may
# output exactly 0.
_LOG_EPS = 1e-7


def valid_depth_mask(gt_m: torch.Tensor, min_depth_m: float, max_depth_m: float) -> torch.Tensor:
    """Boolean mask of usable ground truth: finite and strictly inside (min, max)."""
    return torch.isfinite(gt_m) & (gt_m > min_depth_m) & (gt_m < max_depth_m)


def _as_nchw(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f'{name} must be [N,1,H,W] or [N,H,W], got {tuple(x.shape)}')
    return x


def resize_prediction(pred: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bring a [N,C,h,w] prediction to ``size_hw`` bilinearly (no-op when it matches)."""
    if tuple(pred.shape[-2:]) == tuple(size_hw):
        return pred
    return F.interpolate(pred, size=tuple(size_hw), mode='bilinear', align_corners=False)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    root = torch.sqrt(x.clamp_min(_SQRT_EPS))
    return torch.where(x > _SQRT_EPS, root, x / math.sqrt(_SQRT_EPS))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; 0 (with graph) when the mask is empty."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)


def silog_loss(
    pred_m: torch.Tensor,
    gt_m: torch.Tensor,
    mask: torch.Tensor,
    variance_focus: float = 0.85,
) -> torch.Tensor:
    """``10 * sqrt(mean(g^2) - variance_focus * mean(g)^2)`` over the batch's valid pixels."""
    one = torch.ones_like(pred_m)
    pred = torch.where(mask, pred_m, one).clamp_min(_LOG_EPS)
    gt = torch.where(mask, gt_m, one).clamp_min(_LOG_EPS)
    g = torch.log(pred) - torch.log(gt)
    mean_g = _masked_mean(g, mask)
    var_g = _masked_mean((g - mean_g) ** 2, mask)
    return 10.0 * _safe_sqrt(var_g + (1.0 - variance_focus) * mean_g**2)


def l1_loss(pred_m: torch.Tensor, gt_m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in metres over valid pixels."""
    pred = torch.where(mask, pred_m, torch.zeros_like(pred_m))
    gt = torch.where(mask, gt_m, torch.zeros_like(gt_m))
    return _masked_mean((pred - gt).abs(), mask)


def _centers_nb11(bin_centers_m: torch.Tensor, n: int, n_bins: int) -> torch.Tensor:
    c = bin_centers_m
    if c.dim() == 1:
        c = c.view(1, -1, 1, 1)
    elif c.dim() == 2:
        c = c.view(c.shape[0], c.shape[1], 1, 1)
    if c.dim() != 4 or c.shape[1] != n_bins or c.shape[0] not in (1, n) or c.shape[2:] != (1, 1):
        raise ConfigError(
            f'bin_centers_m must be [B], [N,B] or [N,B,1,1] with B={n_bins}, N={n}, '
            f'got {tuple(bin_centers_m.shape)}'
        )
    return c


def nearest_bin_index(gt_m: torch.Tensor, bin_centers_m: torch.Tensor) -> torch.Tensor:
    """Index [N,H,W] of the bin centre nearest (in metres) to each ground-truth depth."""
    gt = _as_nchw(gt_m, 'gt_depth_m')
    n_bins = bin_centers_m.shape[-3] if bin_centers_m.dim() == 4 else bin_centers_m.shape[-1]
    centers = _centers_nb11(bin_centers_m.detach(), gt.shape[0], n_bins)
    return (gt - centers.to(gt.dtype)).abs().argmin(dim=1)


def bin_cross_entropy_loss(
    bin_logits: torch.Tensor,
    bin_centers_m: torch.Tensor,
    gt_m: torch.Tensor,
    mask: torch.Tensor,
    bin_edges_m: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of [N,B,h,w] logits against the bin of the ground truth.

    With ``bin_edges_m`` (the B-1 ascending boundaries a model defines, e.g. midway in
    log-depth for log-spaced bins) the target is the bin those edges put the depth in, so
    training agrees with the model's own spacing; without them, the nearest centre in metres.
    ``gt_m`` and ``mask`` must already be at the logits' resolution (see DepthLoss).
    """
    if bin_logits.dim() != 4:
        raise ConfigError(f'bin_logits must be [N,B,H,W], got {tuple(bin_logits.shape)}')
    safe_gt = torch.where(mask, gt_m, torch.ones_like(gt_m))
    if bin_edges_m is not None:
        edges = bin_edges_m.detach().reshape(-1).to(safe_gt.dtype)
        if edges.numel() != bin_logits.shape[1] - 1:
            raise ConfigError(
                f'bin_edges_m must hold B-1={bin_logits.shape[1] - 1} boundaries, '
                f'got {edges.numel()}'
            )
        target = torch.bucketize(safe_gt[:, 0].contiguous(), edges.contiguous())
    else:
        target = nearest_bin_index(safe_gt, bin_centers_m)
    valid = mask[:, 0]
    # Zero the logits of invalid pixels so garbage there (NaN, inf) never reaches backward.
    logits = torch.where(valid[:, None], bin_logits, torch.zeros_like(bin_logits))
    ce = F.cross_entropy(logits, torch.where(valid, target, 0), reduction='none')
    return _masked_mean(ce, valid)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_loss(
    pred_m: torch.Tensor,
    gt_m: torch.Tensor,
    mask: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Mean of ``1 - SSIM`` over valid pixels, on depth normalised per image.

    As SPACE-CLIP's ``SSIMLoss``: each image is scaled to [0, 1] by the min/max of its
    valid ground truth (prediction clamped to [0, 1] after the same scaling), Gaussian
    window 11 / sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, zero padding. One deliberate
    difference: invalid pixels are set to 0 in both maps before filtering, so what the
    prediction holds there cannot change the loss (the official code lets it leak in).
    """
    big = torch.full_like(gt_m, float('inf'))
    valid_gt = torch.where(mask, gt_m, big)
    low = valid_gt.amin(dim=(1, 2, 3), keepdim=True)
    high = torch.where(mask, gt_m, -big).amax(dim=(1, 2, 3), keepdim=True)
    has_valid = torch.isfinite(low)
    low = torch.where(has_valid, low, torch.zeros_like(low))
    scale = torch.where(has_valid, (high - low).clamp_min(1e-6), torch.ones_like(low))
    zero = torch.zeros_like(pred_m)
    pred = torch.where(mask, ((pred_m - low) / scale).clamp(0.0, 1.0), zero)
    gt = torch.where(mask, ((gt_m - low) / scale).clamp(0.0, 1.0), zero)

    window = _gaussian_window(window_size, sigma, pred.device, pred.dtype)
    pad = window_size // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=pad)

    mu_p, mu_g = blur(pred), blur(gt)
    mu_pp, mu_gg, mu_pg = mu_p * mu_p, mu_g * mu_g, mu_p * mu_g
    var_p = blur(pred * pred) - mu_pp
    var_g = blur(gt * gt) - mu_gg
    cov = blur(pred * gt) - mu_pg
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_pg + c1) * (2 * cov + c2)) / ((mu_pp + mu_gg + c1) * (var_p + var_g + c2))
    return _masked_mean(1.0 - ssim, mask)


def gradient_loss(
    pred_m: torch.Tensor, gt_m: torch.Tensor, mask: torch.Tensor, scales: int = 1
) -> torch.Tensor:
    """First-order gradient matching: L1 between finite differences of prediction and GT.

    With ``scales`` = 1 this is SPACE-CLIP's ``GradientLoss`` (differences in metres where
    both neighbours are valid, mean of the x and y terms). ``scales`` > 1 averages it over
    2x, 4x, ... subsampled maps, as MiDaS's multi-scale gradient matching.
    """
    zero = torch.zeros_like(pred_m)
    pred = torch.where(mask, pred_m, zero)
    gt = torch.where(mask, gt_m, zero)
    terms = []
    for k in range(max(1, int(scales))):
        s = 2**k
        p, g, m = pred[..., ::s, ::s], gt[..., ::s, ::s], mask[..., ::s, ::s]
        diff = p - g
        mx = m[..., :, 1:] & m[..., :, :-1]
        my = m[..., 1:, :] & m[..., :-1, :]
        dx = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
        dy = (diff[..., 1:, :] - diff[..., :-1, :]).abs()
        terms.append(0.5 * (_masked_mean(dx, mx) + _masked_mean(dy, my)))
    return torch.stack(terms).mean()


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss on one model output.

    ``output`` is a key of ``forward_train``'s dict ('depth', 'regression_m',
    'bin_logits', 'aux'); for 'aux' the term applies to every aux map i with weight
    ``aux_weights[i]`` (the last weight repeats) times ``weight``.
    """

    name: str
    kind: str
    output: str
    weight: float
    aux_weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class LossConfig:
    terms: tuple[LossTerm, ...]
    min_depth_m: float = 1e-3
    max_depth_m: float = 10.0
    variance_focus: float = 0.85
    ssim_window: int = 11
    gradient_scales: int = 1


LOSS_PRESETS: dict[str, LossConfig] = {
    'moa_depthclip': LossConfig(
        terms=(
            LossTerm('ce_bins', 'bin_ce', 'bin_logits', 1.0),
            LossTerm('l1_regression', 'l1', 'regression_m', 1.0),
            LossTerm('silog', 'silog', 'depth', 0.5),
        )
    ),
    # taewan2002/space-clip train.py: total = (1 - w_ssim) * silog + w_ssim * ssim
    # + sum(aux_w[i] * silog(aux[i])) + w_grad * grad; configs/{nyu,kitti}.yaml:
    # w_ssim 0.5, w_grad 0.0, aux_loss_weights [0.10, 0.05, 0.00].
    'space_clip': LossConfig(
        terms=(
            LossTerm('silog', 'silog', 'depth', 0.5),
            LossTerm('ssim', 'ssim', 'depth', 0.5),
            LossTerm('silog_aux', 'silog', 'aux', 1.0, aux_weights=(0.10, 0.05, 0.00)),
            LossTerm('gradient', 'gradient', 'depth', 0.0),
        )
    ),
    'silog': LossConfig(terms=(LossTerm('silog', 'silog', 'depth', 1.0),)),
}


def _aux_weight(weights: tuple[float, ...], index: int) -> float:
    """Weight of aux map ``index``: past the list the last weight repeats (SPACE-CLIP)."""
    if not weights:
        return 1.0
    return float(weights[min(index, len(weights) - 1)])


class DepthLoss(nn.Module):
    """A weighted sum of loss terms over a model's ``forward_train`` outputs.

    ``forward(outputs, gt_depth_m)`` returns ``(total, parts)``: ``total`` a scalar
    tensor to back-propagate, ``parts`` detached scalars: each term's unweighted value
    (aux maps as ``<name><i>``) and ``'total'``. Terms of weight 0 are not computed.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        for term in config.terms:
            if term.kind not in LOSS_KINDS:
                raise ConfigError(f'loss term {term.name!r}: kind must be one of {LOSS_KINDS}')
        if not 0.0 <= config.min_depth_m < config.max_depth_m:
            raise ConfigError(
                f'need 0 <= min_depth_m < max_depth_m, got {config.min_depth_m}, '
                f'{config.max_depth_m}'
            )
        self.config = config

    def _term(self, kind: str, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor):
        if kind == 'silog':
            return silog_loss(pred, gt, mask, self.config.variance_focus)
        if kind == 'l1':
            return l1_loss(pred, gt, mask)
        if kind == 'ssim':
            return ssim_loss(pred, gt, mask, self.config.ssim_window)
        return gradient_loss(pred, gt, mask, self.config.gradient_scales)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], gt_depth_m: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        gt = _as_nchw(gt_depth_m, 'gt_depth_m').float()
        mask = valid_depth_mask(gt, cfg.min_depth_m, cfg.max_depth_m)
        total = None
        parts: dict[str, torch.Tensor] = {}

        def add(name: str, weight: float, value: torch.Tensor) -> None:
            nonlocal total
            parts[name] = value.detach()
            total = weight * value if total is None else total + weight * value

        for term in cfg.terms:
            if term.weight == 0.0:
                continue
            if term.output == 'aux':
                # Models without aux heads (or with them switched off) simply skip this.
                for i, aux in enumerate(outputs.get('aux') or ()):
                    w = _aux_weight(term.aux_weights, i)
                    if w == 0.0:
                        continue
                    pred = resize_prediction(_as_nchw(aux, f'aux[{i}]').float(), gt.shape[-2:])
                    add(f'{term.name}{i}', term.weight * w, self._term(term.kind, pred, gt, mask))
                continue
            if term.output not in outputs:
                raise ConfigError(
                    f'loss term {term.name!r} needs model output {term.output!r}; the model '
                    f'gave {sorted(outputs)}'
                )
            if term.kind == 'bin_ce':
                logits = outputs[term.output].float()
                if 'bin_centers_m' not in outputs:
                    raise ConfigError(
                        f'loss term {term.name!r} needs model output "bin_centers_m"; the '
                        f'model gave {sorted(outputs)}'
                    )
                gt_small = gt
                if tuple(logits.shape[-2:]) != tuple(gt.shape[-2:]):
                    gt_small = F.interpolate(gt, size=tuple(logits.shape[-2:]), mode='nearest')
                mask_small = valid_depth_mask(gt_small, cfg.min_depth_m, cfg.max_depth_m)
                value = bin_cross_entropy_loss(
                    logits,
                    outputs['bin_centers_m'],
                    gt_small,
                    mask_small,
                    outputs.get('bin_edges_m'),
                )
            else:
                pred = _as_nchw(outputs[term.output], term.output).float()
                pred = resize_prediction(pred, gt.shape[-2:])
                value = self._term(term.kind, pred, gt, mask)
            add(term.name, term.weight, value)
        if total is None:
            raise ConfigError('the loss has no term with a non-zero weight')
        parts['total'] = total.detach()
        return total, parts


def build_loss(
    name: str = 'moa_depthclip',
    *,
    min_depth_m: float | None = None,
    max_depth_m: float | None = None,
    variance_focus: float | None = None,
    weights: Mapping[str, float] | None = None,
) -> DepthLoss:
    """Build a preset loss (see module docstring), optionally with other depth caps/weights.

    ``weights`` maps term names (e.g. 'silog', 'ssim', 'gradient') to new weights.
    """
    if name not in LOSS_PRESETS:
        raise ConfigError(f'loss name must be one of {tuple(LOSS_PRESETS)}, got {name!r}')
    cfg = LOSS_PRESETS[name]
    changes = {
        k: v
        for k, v in (
            ('min_depth_m', min_depth_m),
            ('max_depth_m', max_depth_m),
            ('variance_focus', variance_focus),
        )
        if v is not None
    }
    if weights:
        known = {t.name for t in cfg.terms}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ConfigError(f'loss {name!r} has no terms {unknown}; terms: {sorted(known)}')
        changes['terms'] = tuple(
            replace(t, weight=float(weights.get(t.name, t.weight))) for t in cfg.terms
        )
    return DepthLoss(replace(cfg, **changes))
