"""The hybrid head: bin placement, fusion rules and confidence at the depth range ends."""

from __future__ import annotations

import pytest
import torch

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.heads import BIN_SPACINGS, FUSION_RULES, HybridDepthHead, bin_centers_m

MIN_M, MAX_M, BINS = 0.5, 20.0, 32


def _head(fusion: str = 'learned', spacing: str = 'log') -> HybridDepthHead:
    torch.manual_seed(0)
    return HybridDepthHead(
        8,
        num_bins=BINS,
        min_depth_m=MIN_M,
        max_depth_m=MAX_M,
        bin_spacing=spacing,
        fusion=fusion,
        hidden_channels=4,
    ).eval()


def _force(head: HybridDepthHead, bin_index: int, regression_high: bool) -> None:
    """Make the head output a constant: one-hot on ``bin_index``, saturated regression."""
    with torch.no_grad():
        for layer in (head.bins, head.regression):
            layer.weight.zero_()
            layer.bias.zero_()
        head.bins.bias[bin_index] = 100.0
        head.regression.bias.fill_(50.0 if regression_high else -50.0)


@pytest.mark.parametrize('spacing', BIN_SPACINGS)
def test_bin_centres_span_the_range_exactly_and_increase(spacing):
    centers = bin_centers_m(MIN_M, MAX_M, BINS, spacing)
    assert centers.shape == (BINS,)
    assert float(centers[0]) == MIN_M and float(centers[-1]) == MAX_M
    assert torch.all(centers[1:] > centers[:-1])


def test_log_spacing_has_constant_ratio_and_linear_constant_step():
    log_c = bin_centers_m(MIN_M, MAX_M, BINS, 'log').double()
    ratios = log_c[1:] / log_c[:-1]
    torch.testing.assert_close(
        ratios, torch.full_like(ratios, ratios[0].item()), rtol=1e-5, atol=0
    )
    lin = bin_centers_m(MIN_M, MAX_M, BINS, 'linear').double()
    steps = lin[1:] - lin[:-1]
    expected = torch.full_like(steps, (MAX_M - MIN_M) / (BINS - 1))
    torch.testing.assert_close(steps, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize('fusion', FUSION_RULES)
@pytest.mark.parametrize('end', ['near', 'far'])
def test_every_fusion_reaches_the_range_end(fusion, end):
    head = _head(fusion)
    _force(head, 0 if end == 'near' else BINS - 1, regression_high=end == 'far')
    with torch.no_grad():
        out = head(torch.randn(1, 8, 4, 6), (8, 12))
    expected = MIN_M if end == 'near' else MAX_M
    torch.testing.assert_close(out['depth'], torch.full((1, 1, 8, 12), expected))
    torch.testing.assert_close(out['bin_depth_m'], torch.full((1, 1, 8, 12), expected))
    torch.testing.assert_close(out['regression_m'], torch.full((1, 1, 8, 12), expected))
    # A one-hot bin distribution is a fully confident one.
    torch.testing.assert_close(out['confidence'], torch.ones(1, 1, 8, 12))


@pytest.mark.parametrize('fusion', FUSION_RULES)
def test_fused_depth_stays_in_range_for_extreme_features(fusion):
    head = _head(fusion)
    with torch.no_grad():
        out = head(1e4 * torch.randn(2, 8, 5, 5), (10, 10))
    assert MIN_M <= float(out['depth'].min()) and float(out['depth'].max()) <= MAX_M
    assert torch.all((out['confidence'] >= 0) & (out['confidence'] <= 1))


def test_fusion_rules_combine_bins_and_regression_as_documented():
    features = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        mean = _head('mean')(features, (3, 3))
        geometric = _head('geometric')(features, (3, 3))
    torch.testing.assert_close(mean['depth'], 0.5 * (mean['bin_depth_m'] + mean['regression_m']))
    torch.testing.assert_close(
        geometric['depth'], torch.sqrt(geometric['bin_depth_m'] * geometric['regression_m'])
    )


def test_uniform_bin_distribution_has_zero_confidence():
    head = _head()
    with torch.no_grad():
        head.bins.weight.zero_()
        head.bins.bias.zero_()
        out = head(torch.randn(1, 8, 2, 2), (2, 2))
    torch.testing.assert_close(out['confidence'], torch.zeros(1, 1, 2, 2), atol=1e-6, rtol=0)
    # ... and its expected depth is the mean of the centres.
    expected = head.bin_centers_m.mean().item()
    torch.testing.assert_close(out['bin_depth_m'], torch.full((1, 1, 2, 2), expected))


@pytest.mark.parametrize('spacing', BIN_SPACINGS)
def test_ground_truth_maps_to_the_nearest_bin_and_clamps_outside(spacing):
    head = _head(spacing=spacing)
    centers = head.bin_centers_m
    assert torch.equal(head.depth_to_bin_index(centers), torch.arange(BINS))
    outside = torch.tensor([0.01, MIN_M, MAX_M, 1000.0])
    assert head.depth_to_bin_index(outside).tolist() == [0, 0, BINS - 1, BINS - 1]


def test_bad_head_settings_raise_config_errors():
    with pytest.raises(ConfigError, match='num_bins'):
        bin_centers_m(MIN_M, MAX_M, 1, 'log')
    with pytest.raises(ConfigError, match='min_depth_m > 0'):
        bin_centers_m(0.0, MAX_M, 8, 'log')
    with pytest.raises(ConfigError, match='fusion'):
        _head('median')


def test_confidence_stays_finite_in_half_precision():
    # An FP16 TensorRT engine computes the head in half precision, where a confident bin
    # distribution underflows to exact zeros: the confidence must stay a number, near 1.
    head = _head()
    _force(head, 3, regression_high=False)
    features = torch.randn(1, 8, 4, 6)
    with torch.no_grad():
        out = head.half()(features.half(), (8, 12))
    assert torch.isfinite(out['confidence']).all()
    torch.testing.assert_close(
        out['confidence'].float(), torch.ones(1, 1, 8, 12), atol=1e-3, rtol=0
    )


def test_half_precision_confidence_follows_float32_on_peaky_distributions():
    head = _head()
    with torch.no_grad():
        head.bins.weight.mul_(50.0)  # logit gaps of tens: many probabilities underflow in fp16
        features = torch.randn(2, 8, 5, 5)
        reference = head(features, (5, 5))['confidence']
        half = head.half()(features.half(), (5, 5))['confidence'].float()
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, reference, atol=2e-2, rtol=0)
