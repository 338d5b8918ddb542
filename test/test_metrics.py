"""Depth metrics: hand-computed values, an independent numpy reference, crops, averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moa_depth_ros.errors import ConfigError
from training.metrics import (
    COLUMN_LABELS,
    METRIC_NAMES,
    MetricAccumulator,
    MetricConfig,
    compute_metrics,
    crop_mask,
    format_table,
)


def reference_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Apply the formulas of BTS/AdaBins ``compute_errors``, written out plainly in numpy."""
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return {
        'd1': float((thresh < 1.25).mean()),
        'd2': float((thresh < 1.25**2).mean()),
        'd3': float((thresh < 1.25**3).mean()),
        'abs_rel': float(np.mean(np.abs(gt - pred) / gt)),
        'sq_rel': float(np.mean((gt - pred) ** 2 / gt)),
        'rmse': float(np.sqrt(np.mean((gt - pred) ** 2))),
        'rmse_log': float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        'log10': float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
        'silog': float(np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100),
    }


def reference_eval(gt, pred, lo, hi, region=None):
    """BTS eval loop for one image: clamp the prediction, mask the GT, then the errors."""
    pred = pred.copy()
    pred[pred < lo] = lo
    pred[pred > hi] = hi
    pred[np.isinf(pred)] = hi
    pred[np.isnan(pred)] = lo
    valid = (gt > lo) & (gt < hi)
    if region is not None:
        valid &= region
    return reference_errors(gt[valid], pred[valid])


def test_hand_computed_values_on_a_two_by_two_image():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = np.array([[1.0, 1.0], [4.0, 16.0]])
    m = compute_metrics(pred, gt, MetricConfig(min_depth_m=0.1, max_depth_m=20.0))
    ln2 = math.log(2.0)
    expected = {
        'd1': 0.5,  # ratios 1, 2, 1, 2
        'd2': 0.5,
        'd3': 0.5,  # 2 > 1.25^3 = 1.953
        'abs_rel': (0 + 0.5 + 0 + 1.0) / 4,
        'sq_rel': (0 + 1 / 2 + 0 + 64 / 8) / 4,
        'rmse': math.sqrt((0 + 1 + 0 + 64) / 4),
        'rmse_log': math.sqrt(2 * ln2**2 / 4),
        'log10': math.log10(2.0) / 2,
        'silog': 100 * math.sqrt(ln2**2 / 2),
    }
    for name, value in expected.items():
        assert m[name].item() == pytest.approx(value, rel=1e-12), name
    assert m['n_valid'].tolist() == [4]


def test_matches_reference_formulas_on_random_maps_with_invalid_pixels():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 12.0, (3, 24, 32))
    gt[rng.uniform(size=gt.shape) < 0.2] = 0.0  # holes in the ground truth
    pred = gt * rng.uniform(0.6, 1.5, gt.shape) + rng.normal(0, 0.3, gt.shape)
    pred[0, 0, :5] = np.array([-1.0, 0.0, np.inf, np.nan, 50.0])  # to be clamped
    cfg = MetricConfig(min_depth_m=1e-3, max_depth_m=10.0)
    got = compute_metrics(torch.from_numpy(pred), torch.from_numpy(gt), cfg)
    for i in range(3):
        ref = reference_eval(gt[i], pred[i], 1e-3, 10.0)
        for name in METRIC_NAMES:
            assert got[name][i].item() == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize(
    ('crop', 'fractions'),
    [
        ('kitti_garg', (0.40810811, 0.99189189, 0.03594771, 0.96405229)),
        ('kitti_eigen', (0.3324324, 0.91351351, 0.0359477, 0.96405229)),
    ],
)
def test_kitti_crops_match_the_bts_fractions(crop, fractions):
    h, w = 375, 1242
    mask = crop_mask(crop, h, w).numpy()
    top, bottom, left, right = fractions
    expected = np.zeros((h, w), bool)
    expected[int(top * h) : int(bottom * h), int(left * w) : int(right * w)] = True
    np.testing.assert_array_equal(mask, expected)

    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 70.0, (h, w))
    pred = gt * rng.uniform(0.8, 1.2, (h, w))
    got = compute_metrics(pred, gt, MetricConfig(max_depth_m=80.0, crop=crop))
    ref = reference_eval(gt, pred, 1e-3, 80.0, expected)
    for name in METRIC_NAMES:
        assert got[name].item() == pytest.approx(ref[name], rel=1e-9), name


def test_nyu_eigen_crop_ignores_the_border_and_needs_480x640():
    gt = np.full((480, 640), 3.0)
    pred = np.full((480, 640), 3.0)
    pred[:45] = 9.0  # wrong only outside the crop
    pred[:, 601:] = 0.2
    m = compute_metrics(pred, gt, MetricConfig(crop='nyu_eigen'))
    assert m['abs_rel'].item() == 0.0
    assert m['n_valid'].item() == (471 - 45) * (601 - 41)
    with pytest.raises(ConfigError, match='480x640'):
        compute_metrics(np.ones((240, 320)), np.ones((240, 320)), MetricConfig(crop='nyu_eigen'))


def test_accumulator_averages_per_image_not_per_pixel():
    # Image A: 4 pixels, all exact. Image B: 1 valid pixel, 50 % off.
    gt_a, pred_a = np.full((2, 2), 2.0), np.full((2, 2), 2.0)
    gt_b = np.array([[2.0, 0.0], [0.0, 0.0]])
    pred_b = np.array([[3.0, 5.0], [5.0, 5.0]])
    acc = MetricAccumulator(MetricConfig())
    acc.update(pred_a, gt_a)
    acc.update(pred_b, gt_b)
    means = acc.means()
    assert acc.count == 2
    assert means['abs_rel'] == pytest.approx(0.25)  # (0 + 0.5) / 2, not 0.5 / 5
    assert means['d1'] == pytest.approx(0.5)


def test_images_without_valid_pixels_are_skipped_and_reported():
    acc = MetricAccumulator(MetricConfig())
    per_image = acc.update(np.ones((2, 4, 4)), np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0)]))
    assert math.isnan(per_image['rmse'][0].item())
    assert acc.count == 1 and acc.skipped == 1
    assert acc.means()['rmse'] == pytest.approx(1.0)
    assert 'skipped=1' in acc.header()


def test_predictions_are_clamped_to_the_depth_caps():
    gt = np.full((1, 3), 5.0)
    pred = np.array([[100.0, np.inf, np.nan]])
    m = compute_metrics(pred, gt, MetricConfig(min_depth_m=1.0, max_depth_m=10.0))
    # Clamped to 10, 10 and 1: errors 5, 5, 4.
    assert m['rmse'].item() == pytest.approx(math.sqrt((25 + 25 + 16) / 3))


def test_median_scaling_is_off_by_default_and_named_in_the_header():
    gt = np.random.default_rng(2).uniform(1.0, 5.0, (8, 8))
    pred = 2.0 * gt
    plain = MetricAccumulator(MetricConfig())
    plain.update(pred, gt)
    scaled = MetricAccumulator(MetricConfig(median_scaling=True))
    scaled.update(pred, gt)
    assert plain.means()['abs_rel'] == pytest.approx(1.0)
    assert scaled.means()['abs_rel'] == pytest.approx(0.0, abs=1e-12)
    assert 'median_scaling=off' in plain.header()
    assert 'median_scaling=on' in scaled.header()
    assert 'median_scaling=on' in scaled.table()


def test_median_scaling_comes_before_the_clamp_as_monodepth2():
    gt = np.random.default_rng(5).uniform(1.0, 5.0, (8, 8))
    # Every prediction is far above the cap: clamping first would flatten it to 10.
    pred = 100.0 * gt
    m = compute_metrics(pred, gt, MetricConfig(max_depth_m=10.0, median_scaling=True))
    assert m['abs_rel'].item() == pytest.approx(0.0, abs=1e-12)
    assert m['d1'].item() == 1.0


def test_prediction_at_another_resolution_is_resized_to_the_ground_truth():
    gt = np.full((1, 1, 8, 12), 4.0)
    pred = torch.full((1, 1, 4, 6), 4.0)
    m = compute_metrics(pred, gt)
    assert m['rmse'].item() == pytest.approx(0.0)
    assert m['n_valid'].item() == 96


def test_format_table_prints_the_paper_columns_in_order():
    values = {name: i + 0.5 for i, name in enumerate(METRIC_NAMES)}
    text = format_table(values, header='crop=nyu_eigen median_scaling=off')
    lines = text.splitlines()
    assert lines[0] == '# crop=nyu_eigen median_scaling=off'
    assert lines[1].split() == list(COLUMN_LABELS)
    assert lines[2].split() == [f'{v:.4f}' for v in values.values()]


def test_format_table_with_named_rows_and_missing_values():
    text = format_table(
        {'ours': {'d1': 0.8, 'abs_rel': 0.12}, 'paper': {'d1': 0.745, 'abs_rel': 0.321}}
    )
    lines = text.splitlines()
    assert lines[1].split()[:3] == ['ours', '0.8000', '-']
    assert lines[2].split()[0] == 'paper'
    assert '0.3210' in lines[2]


def test_dataset_presets_use_the_papers_caps_and_crops():
    assert MetricConfig.nyu() == MetricConfig(1e-3, 10.0, 'nyu_eigen', False)
    assert MetricConfig.kitti(crop='kitti_eigen').max_depth_m == 80.0


def test_unknown_crop_is_a_config_error():
    with pytest.raises(ConfigError, match='crop'):
        MetricConfig(crop='eigen')
