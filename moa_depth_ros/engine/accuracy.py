"""How closely a runtime's outputs follow a reference run of the same network.

``parity_errors`` bounds an equivalent run (ONNX Runtime vs PyTorch, an engine vs ONNX
Runtime FP32) by the largest error relative to each output's scale. ``depth_agreement`` and
``ACCURACY_BAR`` judge a reduced-precision variant (int8 ONNX, bf16 torch, an OpenVINO or
TensorRT FP16/BF16 build) against FP32 on the same input: it is used only where it meets the
bar; ``confidence_agreement`` and ``CONFIDENCE_BAR`` do the same for the confidence output.
Pure NumPy, so the runtime (OpenVINO precision hints, TensorRT builds) and the training
tools apply the same bar.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from moa_depth_ros.engine.base import OUTPUT_NAMES
from moa_depth_ros.errors import EngineError

# Error scale of each output: depth is relative to the reference's peak (metres);
# confidence is a [0, 1] quantity, so its full scale is 1. (Relative to its own peak, the
# confidence of a near-uniform bin distribution, about 1e-3, would turn float32 rounding
# of 1 - entropy / log(bins) into a large "relative" error.)
_FULL_SCALE = {'depth': 0.0, 'confidence': 1.0}


def parity_errors(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Compare (depth, confidence) pairs: max abs error, and that error relative to scale.

    ``depth_rel`` = max |error| / max |reference depth|; ``confidence_rel`` = max |error|
    / max(max |reference confidence|, 1), since confidence lives in [0, 1].
    """
    out = {}
    for name, ref, got in zip(OUTPUT_NAMES, reference, candidate):
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape:
            raise EngineError(f'{name}: shapes differ, {list(ref.shape)} vs {list(got.shape)}')
        max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        peak = float(np.max(np.abs(ref))) if ref.size else 0.0
        out[f'{name}_max_abs'] = max_abs
        out[f'{name}_rel'] = max_abs / max(peak, _FULL_SCALE[name], 1e-12)
    return out


# A reduced-precision variant (int8 ONNX, bf16 torch) is offered only if, against FP32 on
# the same input, mean relative depth error <= 1 % and >= 99 % of pixels stay within
# delta < 1.25 of FP32 (the delta1 criterion of depth benchmarks, applied to FP32 as truth).
ACCURACY_BAR = {'mean_rel_err': 0.01, 'delta1_agreement': 0.99}


def depth_agreement(reference: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """How closely ``depth`` follows ``reference`` (metres; pixels with reference > 0)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(depth, dtype=np.float64).ravel()
    valid = (ref > 0) & np.isfinite(ref) & np.isfinite(got)
    if not valid.any():
        return {'mean_rel_err': float('nan'), 'max_rel_err': float('nan'), 'delta1_agreement': 0.0}
    ref, got = ref[valid], got[valid]
    rel = np.abs(got - ref) / ref
    ratio = np.maximum(got / ref, ref / np.maximum(got, 1e-12))
    return {
        'mean_rel_err': float(rel.mean()),
        'max_rel_err': float(rel.max()),
        'delta1_agreement': float(np.mean(ratio < 1.25)),
    }


def accuracy_holds(agreement: Mapping[str, float]) -> bool:
    """Tell whether a reduced-precision variant meets ``ACCURACY_BAR``."""
    return bool(
        agreement['mean_rel_err'] <= ACCURACY_BAR['mean_rel_err']
        and agreement['delta1_agreement'] >= ACCURACY_BAR['delta1_agreement']
    )


# The published confidence meets a bar of its own (a variant that keeps the depth but not
# the confidence would mislead every consumer that thresholds it): against FP32 on the same
# input, mean absolute error <= 0.01 on the [0, 1] scale (the depth bar's 1 %) and >= 99 %
# of pixels within 0.05 (a twentieth of the scale: a threshold a user sets stays meaningful).
CONFIDENCE_BAR = {'confidence_mean_abs_err': 0.01, 'confidence_within_0_05': 0.99}


def confidence_agreement(reference: np.ndarray, confidence: np.ndarray) -> dict[str, float]:
    """How closely ``confidence`` follows ``reference`` (both in [0, 1]; finite pixels)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(confidence, dtype=np.float64).ravel()
    if ref.shape != got.shape:
        raise EngineError(f'confidence: shapes differ, {ref.size} vs {got.size} values')
    if not ref.size:
        return {'confidence_mean_abs_err': 0.0, 'confidence_within_0_05': 1.0}
    # A non-finite value is as far off as a value can be.
    error = np.where(np.isfinite(got) & np.isfinite(ref), np.abs(got - ref), np.inf)
    return {
        'confidence_mean_abs_err': float(np.mean(np.minimum(error, 1.0))),
        'confidence_within_0_05': float(np.mean(error <= 0.05)),
    }


def confidence_holds(agreement: Mapping[str, float]) -> bool:
    """Tell whether a reduced-precision variant's confidence meets ``CONFIDENCE_BAR``."""
    return bool(
        agreement['confidence_mean_abs_err'] <= CONFIDENCE_BAR['confidence_mean_abs_err']
        and agreement['confidence_within_0_05'] >= CONFIDENCE_BAR['confidence_within_0_05']
    )


def reference_inputs(input_hw: tuple[int, int], batch: int = 1) -> list[np.ndarray]:
    """Return the fixed inputs a reduced-precision build is judged on.

    Random (seed 0), all-zero and saturated (all ones) images, float32 [batch, 3, H, W] in
    [0, 1]: the saturated image drives activations to their largest values, where FP16
    overflows first; the zero image is the other end of the input range.
    """
    h, w = input_hw
    rng = np.random.default_rng(0)
    return [
        rng.random((batch, 3, h, w), dtype=np.float32),
        np.zeros((batch, 3, h, w), np.float32),
        np.ones((batch, 3, h, w), np.float32),
    ]
