"""Training losses: known values, masks, empty masks, bin targets and the paper presets."""

from __future__ import annotations

import math

import pytest
import torch

from moa_depth_ros.errors import ConfigError
from training.losses import (
    LOSS_PRESETS,
    bin_cross_entropy_loss,
    build_loss,
    gradient_loss,
    l1_loss,
    nearest_bin_index,
    silog_loss,
    ssim_loss,
    valid_depth_mask,
)


def _gt(seed: int = 0, shape=(2, 1, 16, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gt = 0.5 + 7.0 * torch.rand(shape, generator=g)
    gt[..., :3, :4] = 0.0  # a hole of missing measurements
    return gt


def _mask(gt: torch.Tensor) -> torch.Tensor:
    return valid_depth_mask(gt, 1e-3, 10.0)


def test_silog_is_exactly_zero_for_a_perfect_prediction_with_finite_gradient():
    gt = _gt()
    pred = gt.clone().requires_grad_(True)
    loss = silog_loss(pred, gt, _mask(gt))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_matches_the_standard_formula():
    gt = _gt(1)
    g = torch.Generator().manual_seed(2)
    pred = gt * (0.7 + 0.6 * torch.rand(gt.shape, generator=g))
    mask = _mask(gt)
    d = torch.log(pred[mask].double()) - torch.log(gt[mask].double())
    for focus in (0.85, 0.5, 1.0):
        expected = 10 * math.sqrt((d**2).mean().item() - focus * d.mean().item() ** 2)
        got = silog_loss(pred, gt, mask, variance_focus=focus)
        assert got.item() == pytest.approx(expected, rel=1e-4)


def test_silog_of_a_global_scale_error_is_the_mean_term_only():
    gt = _gt(3)
    loss = silog_loss(2.0 * gt, gt, _mask(gt), variance_focus=0.85)
    assert loss.item() == pytest.approx(10 * math.sqrt(0.15) * math.log(2.0), rel=1e-4)


def test_l1_known_value():
    gt = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    pred = torch.tensor([[[[1.5, 1.0], [3.0, 9.0]]]])
    assert l1_loss(pred, gt, _mask(gt)).item() == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def _all_losses(pred, gt, mask):
    return {
        'silog': silog_loss(pred, gt, mask),
        'l1': l1_loss(pred, gt, mask),
        'ssim': ssim_loss(pred, gt, mask),
        'gradient': gradient_loss(pred, gt, mask, scales=2),
    }


def test_garbage_in_invalid_pixels_changes_nothing_and_gets_no_gradient():
    gt = _gt(4)
    mask = _mask(gt)
    g = torch.Generator().manual_seed(5)
    pred = gt * (0.8 + 0.4 * torch.rand(gt.shape, generator=g)) + 0.1
    clean = _all_losses(pred, gt, mask)
    dirty = pred.clone()
    dirty[~mask] = torch.tensor([float('nan'), float('inf'), -5.0, 0.0, 1e9]).repeat(
        int((~mask).sum()) // 5 + 1
    )[: int((~mask).sum())]
    dirty.requires_grad_(True)
    garbage = _all_losses(dirty, gt, mask)
    for name in clean:
        assert garbage[name].item() == pytest.approx(clean[name].item(), rel=1e-6), name
    sum(garbage.values()).backward()
    assert torch.isfinite(dirty.grad).all()
    assert (dirty.grad[~mask] == 0).all()


def test_every_loss_is_zero_with_a_finite_gradient_when_nothing_is_valid():
    gt = torch.zeros(2, 1, 8, 8)  # no measurement at all
    pred = torch.rand(2, 1, 8, 8, requires_grad=True)
    mask = _mask(gt)
    losses = _all_losses(pred, gt, mask)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    losses['bin_ce'] = bin_cross_entropy_loss(logits, torch.linspace(1, 9, 5), gt, mask)
    for name, value in losses.items():
        assert value.item() == 0.0, name
        assert value.requires_grad, name
    sum(losses.values()).backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(logits.grad).all()


def test_nearest_bin_index_for_every_centre_layout():
    centers = torch.tensor([1.0, 2.0, 4.0, 8.0])
    gt = torch.tensor([[[[0.2, 1.4, 1.6, 2.9], [3.1, 5.9, 6.1, 30.0]]]])
    expected = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 3]]])
    for layout in (centers, centers[None], centers.view(1, 4, 1, 1)):
        assert torch.equal(nearest_bin_index(gt, layout), expected)
    # Per-image (adaptive) bins: the second image's bins are shifted by +10 m.
    gt2 = torch.cat([gt, gt + 10.0])
    per_image = torch.stack([centers, centers + 10.0])
    assert torch.equal(nearest_bin_index(gt2, per_image), torch.cat([expected, expected]))


def test_bin_cross_entropy_is_small_on_the_nearest_bin_and_large_elsewhere():
    centers = torch.linspace(1.0, 8.0, 8)
    gt = torch.tensor([[[[1.1, 2.2, 0.0], [7.6, 4.9, 3.0]]]])
    mask = _mask(gt)
    target = nearest_bin_index(gt, centers)[0]
    right = torch.full((1, 8, 2, 3), -20.0)
    wrong = torch.full((1, 8, 2, 3), -20.0)
    for y in range(2):
        for x in range(3):
            right[0, target[y, x], y, x] = 20.0
            wrong[0, (target[y, x] + 3) % 8, y, x] = 20.0
    assert bin_cross_entropy_loss(right, centers, gt, mask).item() < 1e-6
    assert bin_cross_entropy_loss(wrong, centers, gt, mask).item() > 30.0


def test_ssim_and_gradient_are_zero_at_a_perfect_prediction():
    gt = _gt(6)
    mask = _mask(gt)
    assert ssim_loss(gt.clone(), gt, mask).item() == 0.0
    assert gradient_loss(gt.clone(), gt, mask).item() == 0.0
    # Gradient matching ignores a constant offset; SSIM (after GT scaling) does not.
    assert gradient_loss(gt + 0.5, gt, mask).item() == pytest.approx(0.0, abs=1e-5)
    blurred = torch.nn.functional.avg_pool2d(gt, 3, 1, 1)
    assert ssim_loss(blurred, gt, mask).item() > 0.01
    assert gradient_loss(blurred, gt, mask).item() > 0.01


def _moa_outputs(gt: torch.Tensor, low_res: bool = False):
    centers = torch.linspace(0.5, 9.5, 16)
    g = torch.Generator().manual_seed(7)
    size = (gt.shape[-2] // 2, gt.shape[-1] // 2) if low_res else gt.shape[-2:]
    return {
        'depth': (gt.mean() + torch.rand((gt.shape[0], 1, *size), generator=g)).requires_grad_(),
        'confidence': torch.rand((gt.shape[0], 1, *size), generator=g),
        'bin_logits': torch.randn((gt.shape[0], 16, *size), generator=g).requires_grad_(),
        'bin_centers_m': centers,
        'regression_m': (3.0 + torch.rand((gt.shape[0], 1, *size), generator=g)).requires_grad_(),
        'gate_entropy': torch.tensor(1.0),
    }


def test_moa_depthclip_preset_weights_from_the_design():
    gt = _gt(8)
    out = _moa_outputs(gt)
    total, parts = build_loss('moa_depthclip')(out, gt)
    mask = _mask(gt)
    ce = bin_cross_entropy_loss(out['bin_logits'], out['bin_centers_m'], gt, mask)
    l1 = l1_loss(out['regression_m'], gt, mask)
    si = silog_loss(out['depth'], gt, mask)
    assert total.item() == pytest.approx((1.0 * ce + 1.0 * l1 + 0.5 * si).item(), rel=1e-6)
    assert set(parts) == {'ce_bins', 'l1_regression', 'silog', 'total'}
    assert parts['silog'].item() == pytest.approx(si.item(), rel=1e-6)
    total.backward()
    assert out['bin_logits'].grad is not None and out['regression_m'].grad is not None


def test_low_resolution_outputs_are_brought_to_the_ground_truth():
    gt = _gt(9)
    total, parts = build_loss('moa_depthclip')(_moa_outputs(gt, low_res=True), gt)
    assert torch.isfinite(total)
    assert all(torch.isfinite(v) for v in parts.values())


def test_space_clip_preset_matches_the_official_weights():
    gt = _gt(10)
    g = torch.Generator().manual_seed(11)
    depth = gt.clamp_min(0.5) * (0.8 + 0.4 * torch.rand(gt.shape, generator=g))
    aux = [
        torch.nn.functional.avg_pool2d(depth, 2),  # half resolution: upsampled by the loss
        depth * 1.1,
        depth * 0.5,  # weight 0.00 in the official config: must not count
        depth * 0.4,  # past the list: takes the last weight (0.00)
    ]
    total, parts = build_loss('space_clip')({'depth': depth, 'aux': aux}, gt)
    mask = _mask(gt)
    up = torch.nn.functional.interpolate(aux[0], size=gt.shape[-2:], mode='bilinear')
    expected = (
        0.5 * silog_loss(depth, gt, mask)
        + 0.5 * ssim_loss(depth, gt, mask)
        + 0.10 * silog_loss(up, gt, mask)
        + 0.05 * silog_loss(aux[1], gt, mask)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {'silog', 'ssim', 'silog_aux0', 'silog_aux1', 'total'}
    # A model without aux heads still trains with the main terms.
    total_no_aux, _ = build_loss('space_clip')({'depth': depth}, gt)
    assert total_no_aux.item() == pytest.approx(
        (0.5 * silog_loss(depth, gt, mask) + 0.5 * ssim_loss(depth, gt, mask)).item(), rel=1e-5
    )


def test_presets_are_named_and_misuse_is_reported():
    assert {'moa_depthclip', 'space_clip', 'silog'} <= set(LOSS_PRESETS)
    with pytest.raises(ConfigError, match='loss name'):
        build_loss('adabins')
    with pytest.raises(ConfigError, match='bin_logits'):
        build_loss('moa_depthclip')({'depth': torch.ones(1, 1, 4, 4)}, torch.ones(1, 1, 4, 4))
    with pytest.raises(ConfigError, match='no terms'):
        build_loss('silog', weights={'ssim': 1.0})


def test_weight_and_depth_cap_overrides():
    gt = _gt(12)
    depth = gt * 1.2
    loss = build_loss('space_clip', weights={'ssim': 0.0, 'silog': 1.0}, max_depth_m=4.0)
    total, parts = loss({'depth': depth}, gt)
    assert set(parts) == {'silog', 'total'}
    mask = valid_depth_mask(gt, 1e-3, 4.0)
    assert total.item() == pytest.approx(silog_loss(depth, gt, mask).item(), rel=1e-6)


def test_bin_ce_target_follows_the_models_log_spacing():
    """With the model's edges, the target is the model's own nearest bin (log domain)."""
    from moa_depth_ros.model.heads import HybridDepthHead

    head = HybridDepthHead(8, num_bins=16, min_depth_m=0.5, max_depth_m=10.0)
    # Depths just either side of each geometric-mean boundary between neighbouring centres.
    centers = head.bin_centers_m.double()
    geo = torch.sqrt(centers[1:] * centers[:-1])
    gt = torch.cat([geo * 0.999, geo * 1.001]).float().view(1, 1, 1, -1)
    expected = head.depth_to_bin_index(gt)[:, 0]
    # Logits that put all mass on the expected bins give (near) zero loss; metres-nearest
    # targets would disagree just above each boundary and give a large loss there.
    logits = torch.full((1, 16, 1, gt.shape[-1]), -30.0)
    logits.scatter_(1, expected[:, None], 30.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    loss = bin_cross_entropy_loss(logits, head.bin_centers_m, gt, mask, head.bin_edges_m)
    assert float(loss) < 1e-6
    metres = bin_cross_entropy_loss(logits, head.bin_centers_m, gt, mask)
    assert float(metres) > 1.0
