"""Machine floors measured in the same run as the benchmarks they bound.

A latency means little without what the machine could do at best. Two floors:

- memory bandwidth: the median time of a numpy copy of a buffer larger than any last-level
  cache, reported as bytes copied per second (each byte read once and written once), the
  same operation ``tools.bench.frame_stages`` uses as the floor of each per-frame stage;
- dense matmul rate of torch in FP32 and BF16 (``measure_matmul_rate``), the floor of the
  network: a model of F FLOPs cannot run faster than F / rate (``count_flops``, torch's
  flop counter).

``network_floor_ms`` and ``ratio(time, floor)`` (time / floor, 1.0 = at the floor) are how the
reports compute a network's distance to its floor.
Times come from ``moa_depth_ros.bench.measure.time_call``, the one timer.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

from moa_depth_ros.bench.measure import copy_ms, time_call

# 64 MiB: twice the largest last-level caches of the CPUs this runs on (32 MiB L3 here),
# so the copy measures DRAM, not cache.
DEFAULT_COPY_BYTES = 64 << 20
MATMUL_DTYPES = ('fp32', 'bf16')


def copy_bandwidth(
    nbytes: int = DEFAULT_COPY_BYTES, min_seconds: float = 0.5, min_repeats: int = 5
) -> dict[str, float]:
    """Median time of ``np.copyto`` of ``nbytes`` and the rate: bytes copied per second."""
    timing = copy_ms(nbytes, iters=min_repeats, min_seconds=min_seconds)
    return {
        'bytes': int(nbytes),
        'repeats': timing['iters'],
        'median_ms': timing['median_ms'],
        'copy_gbps': nbytes / (timing['median_ms'] / 1e3) / 1e9,
    }


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


def measure_matmul_rate(dtype: str = 'fp32', n: int = 2048, min_seconds: float = 1.0) -> float:
    """Return the measured dense matmul rate in FLOP/s (torch, n x n, current threads)."""
    import torch

    if dtype == 'int8':
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        matmul = torch._int_mm  # int8 x int8 -> int32, the kernel quantized GEMMs use
    else:
        torch_dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16}[dtype]
        a = torch.randn(n, n).to(torch_dtype)
        b = torch.randn(n, n).to(torch_dtype)
        matmul = torch.matmul
    timing = time_call(lambda: matmul(a, b), warmup=2, iters=1, min_seconds=min_seconds)
    return 2.0 * n**3 / (timing['mean_ms'] / 1e3)


def count_flops(model: Any, batch: int = 1) -> int:
    """FLOPs of one ``forward()`` at the model's input size (a multiply-add counts 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.rand(batch, 3, *model.input_hw)
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image.to(device))
    return int(counter.get_total_flops())


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
