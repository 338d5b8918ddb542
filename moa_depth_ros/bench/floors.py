"""Machine floors measured in the same run as the benchmarks they bound.

A latency means little without what the machine could do at best. Two floors:

- memory bandwidth: the median time of a numpy copy of a buffer larger than any last-level
  cache, reported as bytes copied per second (each byte read once and written once), the
  same operation ``moa_depth_ros.benchmark`` uses as the floor of each per-frame stage;
- dense matmul rate of torch in FP32 and BF16 (``engine.bench.measure_matmul_rate``),
  the floor of the network: a model of F FLOPs cannot run faster than F / rate.

``ratio(time, floor)`` is how every report prints them: time / floor, 1.0 = at the floor.
The model FLOP count comes from ``engine.bench.count_flops`` (torch's flop counter).
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np

from moa_depth_ros.errors import ConfigError

# 64 MiB: twice the largest last-level caches of the CPUs this runs on (32 MiB L3 here),
# so the copy measures DRAM, not cache.
DEFAULT_COPY_BYTES = 64 << 20
MATMUL_DTYPES = ('fp32', 'bf16')


def copy_bandwidth(
    nbytes: int = DEFAULT_COPY_BYTES, min_seconds: float = 0.5, min_repeats: int = 5
) -> dict[str, float]:
    """Median time of ``np.copyto`` of ``nbytes`` and the rate: bytes copied per second."""
    if nbytes <= 0 or min_repeats < 1 or not min_seconds >= 0:
        raise ConfigError(
            f'need nbytes > 0, min_repeats >= 1, min_seconds >= 0; got {nbytes}, '
            f'{min_repeats}, {min_seconds}'
        )
    src = np.ones(int(nbytes), dtype=np.uint8)
    dst = np.zeros_like(src)  # zeros (not empty) so the pages exist before the first copy
    np.copyto(dst, src)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    median_s = float(np.median(times))
    return {
        'bytes': int(nbytes),
        'repeats': len(times),
        'median_ms': median_s * 1e3,
        'copy_gbps': nbytes / median_s / 1e9,
    }


def copy_floor_ms(nbytes: int, copy_gbps: float) -> float:
    """Time (ms) to copy ``nbytes`` at the measured rate: the floor of a stage writing them."""
    return nbytes / (copy_gbps * 1e9) * 1e3


def torch_available() -> bool:
    """Tell whether torch is importable (the matmul floor and FLOP counts need it)."""
    return importlib.util.find_spec('torch') is not None


def matmul_rates(
    dtypes: tuple[str, ...] = MATMUL_DTYPES, n: int = 2048, min_seconds: float = 1.0
) -> dict[str, Any]:
    """Measured torch matmul rate per dtype in TFLOP/s, on the CPU with torch's threads.

    Returns {'tflops': {dtype: rate}, 'threads': int, 'n': n, 'skipped': {dtype: reason}}.
    Without torch every dtype is skipped with the reason.
    """
    result: dict[str, Any] = {'tflops': {}, 'n': int(n), 'skipped': {}}
    if not torch_available():
        result['skipped'] = dict.fromkeys(dtypes, 'torch is not installed')
        return result
    import torch

    from moa_depth_ros.engine.bench import measure_matmul_rate

    result['threads'] = torch.get_num_threads()
    for dtype in dtypes:
        try:
            result['tflops'][dtype] = measure_matmul_rate(dtype, n, min_seconds) / 1e12
        except (RuntimeError, NotImplementedError, KeyError) as e:
            result['skipped'][dtype] = f'{type(e).__name__}: {e}'
    return result


def measure_floors(quick: bool = False) -> dict[str, Any]:
    """Both floors; ``quick`` uses small sizes and short runs (a smoke test, noisy)."""
    start = time.perf_counter()
    if quick:
        bandwidth = copy_bandwidth(16 << 20, min_seconds=0.05, min_repeats=3)
        matmul = matmul_rates(n=512, min_seconds=0.05)
    else:
        bandwidth = copy_bandwidth()
        matmul = matmul_rates()
    return {'memory': bandwidth, 'matmul': matmul, 'wall_s': time.perf_counter() - start}


def model_flops(model: Any) -> int:
    """FLOPs of one ``forward()`` at batch 1 and the model's input size (multiply-add = 2)."""
    from moa_depth_ros.engine.bench import count_flops

    return count_flops(model, batch=1)


def ratio(time_value: float | None, floor_value: float | None) -> float | None:
    """``time / floor`` (1.0 = at the floor); None when either is unknown or the floor is 0."""
    if time_value is None or floor_value is None:
        return None
    if not (math.isfinite(time_value) and math.isfinite(floor_value)) or floor_value <= 0:
        return None
    return time_value / floor_value


def network_floor_ms(flops: int | None, tflops: float | None) -> float | None:
    """Return the compute floor of a network in ms: FLOPs / measured matmul rate."""
    if not flops or not tflops:
        return None
    return flops / (tflops * 1e12) * 1e3
