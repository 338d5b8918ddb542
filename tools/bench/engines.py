"""``python -m tools.bench engines``: per-model, per-backend latency next to the compute floor.

For each model at its input size and batch 1: median and p90 latency and throughput of
every available backend (torch, onnxruntime, openvino, tensorrt), the FLOP count of ``forward()``
(``torch.utils.flop_counter``), and the machine's measured matmul rate in the same run,
so ``ratio_to_floor`` (latency / (FLOPs / matmul rate)) shows how far each backend is from
what this machine's GEMM units could do.

Reduced-precision variants are measured too (torch bf16 autocast; onnxruntime int8 dynamic
quantization; OpenVINO's default precision where the CPU prefers one, e.g. bf16 with AMX)
together with their parity against FP32 (relative depth error and delta1
agreement); ``accuracy_holds`` says whether a variant meets ``ACCURACY_BAR``. This is an
offline tool: it imports torch, the model package and the exporter.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np

from moa_depth_ros.bench.measure import machine_description, package_version, time_call
from moa_depth_ros.engine.loader import BACKENDS
from moa_depth_ros.errors import ConfigError, MoaDepthError
from tools.bench.floors import count_flops, measure_matmul_rate, network_floor_ms, ratio
from training.onnx_export import ACCURACY_BAR, accuracy_holds, depth_agreement

DEFAULT_MODELS = ('moa_depthclip', 'space_clip', 'depthclip')


def _row(
    backend: str,
    precision: str,
    timing: dict[str, float],
    flops: int,
    rates: dict[str, float],
    rate_key: str,
) -> dict[str, Any]:
    median_ms = timing['median_ms']
    rate = rates.get(rate_key)
    floor_ms = network_floor_ms(flops, rate / 1e12 if rate else None)
    to_floor = ratio(median_ms, floor_ms)
    return {
        'backend': backend,
        'precision': precision,
        **timing,
        'achieved_gflops': flops / (median_ms / 1e3) / 1e9,
        'compute_floor_ms': float('nan') if floor_ms is None else floor_ms,
        'floor_rate': rate_key,
        'ratio_to_floor': float('nan') if to_floor is None else to_floor,
    }


def bench_model(
    model: Any,
    *,
    backends: Sequence[str] = BACKENDS,
    variants: bool = True,
    warmup: int = 20,
    iters: int = 50,
    threads: int | None = None,
    rates: dict[str, float] | None = None,
    workdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Benchmark one DepthModel object on every requested backend at batch 1."""
    from moa_depth_ros.engine.loader import load_engine
    from moa_depth_ros.engine.onnx_backend import OnnxRuntimeEngine
    from moa_depth_ros.engine.torch_backend import TorchEngine
    from training.onnx_export import export_onnx, parity_errors, quantize_int8

    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise ConfigError(f'unknown backends {unknown}; choose from {list(BACKENDS)}')
    rates = rates or {}
    model = model.eval()
    flops = count_flops(model)
    image = np.random.default_rng(0).random((1, 3, *model.input_hw), dtype=np.float32)
    result: dict[str, Any] = {
        'model_name': model.model_name,
        'input_hw': list(model.input_hw),
        'gflop': flops / 1e9,
        'parameters': sum(p.numel() for p in model.parameters()),
        'rows': [],
        'skipped': {},
    }
    reference_engine = TorchEngine(model, device='cpu')
    reference = reference_engine.infer(image)

    def measure(engine, backend, precision, rate_key):
        try:
            timing = time_call(lambda: engine.infer(image), warmup=warmup, iters=iters)
            got = engine.infer(image)
        finally:
            if engine is not reference_engine:
                engine.close()
        row = _row(backend, precision, timing, flops, rates, rate_key)
        row['parity'] = {**parity_errors(reference, got), **depth_agreement(reference[0], got[0])}
        row['accuracy_holds'] = accuracy_holds(row['parity'])
        result['rows'].append(row)

    if 'torch' in backends:
        measure(reference_engine, 'torch', 'fp32', 'fp32')
        if variants:
            measure(TorchEngine(model, device='cpu', precision='bf16'), 'torch', 'bf16', 'bf16')
    needs_onnx = bool({'onnxruntime', 'openvino', 'tensorrt'} & set(backends))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        onnx_path = pathlib.Path(tmp) / f'{model.model_name}.onnx'
        if needs_onnx:
            report = export_onnx(model, onnx_path)
            result['export_parity'] = {
                'depth_rel': report.depth_rel_err,
                'confidence_rel': report.confidence_rel_err,
            }
        if 'onnxruntime' in backends:
            measure(
                OnnxRuntimeEngine(onnx_path, device='cpu', intra_op_threads=threads),
                'onnxruntime',
                'fp32',
                'fp32',
            )
            if variants:
                int8_path = pathlib.Path(tmp) / f'{model.model_name}.int8.onnx'
                try:
                    quantize_int8(onnx_path, int8_path)
                except Exception as e:  # onnxruntime.quantization raises plain ValueErrors
                    result['skipped']['onnxruntime int8'] = f'quantization failed: {e}'
                else:
                    int8 = OnnxRuntimeEngine(int8_path, device='cpu', intra_op_threads=threads)
                    measure(int8, 'onnxruntime', 'int8-dynamic', 'int8')
        if 'openvino' in backends:
            _openvino_rows(onnx_path, tmp, threads, variants, measure, result['skipped'])
        if 'tensorrt' in backends:
            try:
                engine = load_engine(onnx_path, backend='tensorrt', cache_dir=tmp)
            except MoaDepthError as e:
                result['skipped']['tensorrt'] = str(e).split(';')[0]
            else:
                measure(engine, 'tensorrt', engine.sidecar.precision, 'gpu')
    reference_engine.close()
    return result


def _openvino_rows(onnx_path, cache_dir, threads, variants, measure, skipped) -> None:
    """OpenVINO FP32 and, as a variant, its default precision on this CPU (if not FP32)."""
    from moa_depth_ros.engine.choice import openvino_installed

    if not openvino_installed():
        skipped['openvino'] = 'openvino is not installed (requirements-openvino.txt)'
        return
    from moa_depth_ros.engine.openvino_backend import OpenVinoEngine

    def load(precision):
        return OpenVinoEngine(
            onnx_path,
            device='cpu',
            precision=precision,
            intra_op_threads=threads,
            cache_dir=cache_dir,
        )

    measure(load('fp32'), 'openvino', 'fp32', 'fp32')
    if not variants:
        return
    preferred = load('auto')
    if preferred.precision == 'fp32':
        preferred.close()
        skipped['openvino auto'] = preferred.precision_note or 'this CPU prefers fp32'
        return
    measure(preferred, 'openvino', preferred.precision, preferred.precision)


def bench_engines(
    models: Sequence[str] = DEFAULT_MODELS,
    backends: Sequence[str] = BACKENDS,
    *,
    warmup: int = 20,
    iters: int = 50,
    threads: int | None = None,
    variants: bool = True,
    model_overrides: dict[str, dict[str, Any]] | None = None,
    workdir: str | os.PathLike | None = None,
    matmul_n: int = 2048,
    matmul_seconds: float = 1.0,
) -> dict[str, Any]:
    """Benchmark models (preset names or ``.safetensors`` checkpoints) on each backend.

    Preset names build randomly initialised networks (timing does not depend on the
    weights; parity numbers then describe that network). ``model_overrides`` maps a preset
    name to ``create_model`` overrides. Returns a JSON-able dict with ``machine`` (CPU,
    threads, matmul TFLOP/s for fp32/bf16/int8 measured in this run) and ``models``.
    """
    import onnxruntime
    import torch

    from moa_depth_ros.model import create_model, load_model

    if threads:
        torch.set_num_threads(int(threads))
    machine = {
        **machine_description(),
        'torch_threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'onnxruntime': onnxruntime.__version__,
        'openvino': package_version('openvino'),
    }
    rates = {}
    for dtype in ('fp32', 'bf16', 'int8'):
        try:
            rates[dtype] = measure_matmul_rate(dtype, matmul_n, matmul_seconds)
        except (RuntimeError, NotImplementedError) as e:
            machine[f'matmul_{dtype}_error'] = str(e)
    machine['matmul_tflops'] = {k: v / 1e12 for k, v in rates.items()}
    results = {}
    for entry in models:
        if entry.endswith('.safetensors'):
            model = load_model(entry)
        else:
            model = create_model(entry, **(model_overrides or {}).get(entry, {}))
        key = entry if entry not in results else f'{entry}#{len(results)}'
        results[key] = bench_model(
            model,
            backends=backends,
            variants=variants,
            warmup=warmup,
            iters=iters,
            threads=threads,
            rates=rates,
            workdir=workdir,
        )
    return {'machine': machine, 'models': results}


def format_results(results: dict[str, Any]) -> str:
    """Render ``bench_engines`` output as a text table."""
    machine = results['machine']
    tflops = machine.get('matmul_tflops', {})
    lines = [
        f'{machine.get("cpu")} ({machine.get("logical_cores")} logical cores, torch threads '
        f'{machine.get("torch_threads")}; ISA {", ".join(machine.get("isa", [])) or "?"})',
        'measured matmul: '
        + ', '.join(
            f'{k} {v:.3f} T{"OP" if k == "int8" else "FLOP"}/s' for k, v in tflops.items()
        ),
        '',
        f'{"model":<15}{"backend":<13}{"precision":<14}{"median ms":>10}{"p90 ms":>9}'
        f'{"fps":>7}{"GFLOP":>8}{"GFLOP/s":>9}{"floor ms":>9}{"x floor":>8}'
        f'{"depth rel":>11}{"delta1":>8}  ok',
    ]
    for name, res in results['models'].items():
        for row in res['rows']:
            parity = row['parity']
            lines.append(
                f'{name:<15}{row["backend"]:<13}{row["precision"]:<14}{row["median_ms"]:>10.1f}'
                f'{row["p90_ms"]:>9.1f}{row["throughput_fps"]:>7.2f}{res["gflop"]:>8.2f}'
                f'{row["achieved_gflops"]:>9.1f}{row["compute_floor_ms"]:>9.1f}'
                f'{row["ratio_to_floor"]:>8.1f}{parity["mean_rel_err"]:>11.2e}'
                f'{parity["delta1_agreement"]:>8.4f}  {"yes" if row["accuracy_holds"] else "NO"}'
            )
        for backend, reason in res.get('skipped', {}).items():
            lines.append(f'{name:<15}{backend:<13}skipped: {reason}')
    lines.append(
        '\n"x floor" = median latency / (FLOPs / measured matmul rate of that precision); '
        '"depth rel" = mean |d - d_fp32| / d_fp32 vs torch FP32; "ok" = mean rel <= '
        f'{ACCURACY_BAR["mean_rel_err"]:g} and delta1 agreement >= '
        f'{ACCURACY_BAR["delta1_agreement"]:g}'
    )
    return '\n'.join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        help='model presets (random weights) or .safetensors checkpoints',
    )
    parser.add_argument('--backends', nargs='+', default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument('--warmup', type=int, default=20, help='untimed runs per backend')
    parser.add_argument('--iters', type=int, default=50, help='timed runs per backend')
    parser.add_argument('--threads', type=int, help='CPU threads (torch and onnxruntime)')
    parser.add_argument('--no-variants', action='store_true', help='skip the bf16 / int8 variants')
    parser.add_argument('--json', help='also write the full results to this JSON file')


def run(args: argparse.Namespace) -> int:
    results = bench_engines(
        args.models,
        args.backends,
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
        variants=not args.no_variants,
    )
    print(format_results(results))
    if args.json:
        from moa_depth_ros.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, sort_keys=True) + '\n')
    return 0
