"""GPU acceptance of the TensorRT backend; run by test/gpu_acceptance.sh (its header says what).

One process, a time budget (``--budget-s``): the cheap checks first, the full-size builds
after, and whatever the budget leaves no time for is reported as skipped, never as passed.
Prints one line per check and writes ``gpu_acceptance.json`` (facts, checks, latencies) to
$OUT when set, else to the work directory. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from moa_depth_ros.engine import cache, load_engine, tensorrt_backend, tensorrt_builder
from moa_depth_ros.engine.accuracy import accuracy_holds, depth_agreement
from moa_depth_ros.errors import EngineError

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAK_BUDGET_BYTES = 16 << 20  # free device memory may drift by allocator noise, not more
ITERATIONS = 1000


class Report:
    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.facts: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def record(self, name: str, status: str, **details: Any) -> None:
        self.checks.append({'check': name, 'status': status, **details})
        extra = ', '.join(f'{k}={v}' for k, v in details.items())
        print(f'[{status.upper():4}] {name}' + (f': {extra}' if extra else ''), flush=True)

    def check(self, name: str, ok: bool, **details: Any) -> bool:
        self.record(name, 'pass' if ok else 'fail', **details)
        return ok

    def skip(self, name: str, why: str) -> None:
        self.record(name, 'skip', why=why)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def _free_device_memory(cuda: Any) -> int:
    cuda.activate()
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    err, free, _ = cudart.cudaMemGetInfo()
    return int(free)


def _device_count() -> int:
    try:
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        return int(count) if err == cudart.cudaError_t.cudaSuccess else 0
    except ImportError:
        import torch

        return torch.cuda.device_count()


def facts(report: Report) -> None:
    trt = tensorrt_backend.import_tensorrt()
    cuda = tensorrt_backend.default_cuda_api('cuda:0')
    report.facts.update(
        python=sys.version.split()[0],
        tensorrt=str(trt.__version__),
        build_api='weakly typed (10.x)'
        if tensorrt_backend.has_weak_typing(trt)
        else 'strongly typed (11.x)',
        cuda_python=_version('cuda-python'),
        cuda_bindings=_version('cuda-bindings'),
        onnxruntime=_version('onnxruntime'),
        onnx=_version('onnx'),
        torch=_version('torch'),
        gpus=[
            dataclasses.asdict(tensorrt_backend.default_cuda_api(f'cuda:{i}').device_info())
            for i in range(_device_count())
        ],
        free_device_memory_bytes=_free_device_memory(cuda),
    )
    for key, value in report.facts.items():
        print(f'  {key}: {value}', flush=True)


def export_models(work: pathlib.Path, tiny: bool = False) -> dict[str, pathlib.Path]:
    """Tiny stand-in, random-weight MoA-DepthCLIP and DepthCLIP, and a hopeless FP16 net.

    ``tiny``: the model tests' shrunken towers instead of full-size ones (a quick smoke).
    """
    sys.path.insert(0, str(REPO / 'test'))
    from model_fixtures import tiny_model
    from test_engine_support import TinyDepthNet
    import torch
    import torch.nn.functional as F

    from moa_depth_ros.model import create_model
    from training.onnx_export import export_onnx

    class HopelessFp16(TinyDepthNet):
        """Logits scaled past 65504: no FP16 engine can meet the bar."""

        model_name = 'hopeless_fp16'

        def forward(self, image):
            x = F.normalize(torch.relu(self.stem(image - 0.5)), dim=1)
            logits = self.head(x) * 1e5
            prob = torch.softmax(logits, dim=1)
            depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
            return depth, prob.amax(dim=1, keepdim=True)

    paths = {}
    torch.manual_seed(0)
    for name, model, dynamic in (
        ('tiny', TinyDepthNet(), False),
        ('tiny_dynamic', TinyDepthNet(), True),
        ('hopeless', HopelessFp16(), False),
        ('moa_depthclip', (tiny_model if tiny else create_model)('moa_depthclip'), False),
        ('depthclip', (tiny_model if tiny else create_model)('depthclip'), False),
    ):
        paths[name] = work / f'{name}.onnx'
        export_onnx(model.eval(), paths[name], dynamic_batch=dynamic)
    return paths


def judge_engine(report: Report, label: str, onnx_path: pathlib.Path, engine: Any) -> None:
    """Parity on a fresh input, the precisions the inspector reports, no TF32."""
    sidecar = engine.sidecar
    report.check(f'{label}: sidecar parity passed', bool(sidecar.parity.get('passed')))
    rng = np.random.default_rng(123)
    image = rng.random((1, 3, *engine.input_hw), dtype=np.float32)
    reference = load_engine(onnx_path, backend='onnxruntime', device='cpu').infer(image)
    agreement = depth_agreement(reference[0], engine.infer(image)[0])
    report.check(
        f'{label}: a fresh input meets the bar',
        accuracy_holds(agreement),
        mean_rel_err=f'{agreement["mean_rel_err"]:.2e}',
        delta1=f'{agreement["delta1_agreement"]:.4f}',
    )
    counts = tensorrt_backend.layer_precisions(engine.layer_information())
    if sidecar.precision == 'fp16':
        ok = counts.get('fp16', 0) > 0
    else:
        ok = counts.get('fp16', 0) == 0 and not sidecar.tf32
    report.check(
        f'{label}: inspector layer precisions fit {sidecar.precision}',
        ok,
        layers=counts,
        fp32_kept=sidecar.fp32_layers,
        typing=sidecar.typing,
    )


def build_and_judge(
    report: Report,
    label: str,
    onnx_path: pathlib.Path,
    cache_dir: pathlib.Path,
    precision: str | None,
    *,
    refusal_ok: bool = False,
    min_left_s: float = 60.0,
) -> Any:
    if report.left_s() < min_left_s:
        report.skip(label, f'{report.left_s():.0f} s of budget left')
        return None
    started = time.monotonic()
    try:
        path = tensorrt_builder.ensure_engine(onnx_path, precision=precision, cache_dir=cache_dir)
    except EngineError as e:
        refused = 'refused' in str(e)
        report.record(
            f'{label}: build',
            'pass' if refused and refusal_ok else 'fail',
            outcome='refused' if refused else 'error',
            reason=str(e)[:300],
        )
        return None
    engine = tensorrt_backend.TensorRTEngine(path, device='cuda:0')
    report.check(
        f'{label}: build',
        True,
        precision=engine.sidecar.precision,
        build_s=round(time.monotonic() - started, 1),
        attempts=len(engine.sidecar.parity.get('attempts', [])),
    )
    judge_engine(report, label, onnx_path, engine)
    return engine


def leak_and_latency(report: Report, label: str, engine: Any) -> None:
    if report.left_s() < 30:
        report.skip(f'{label}: {ITERATIONS} iterations', 'no budget left')
        return
    image = np.random.default_rng(0).random((1, 3, *engine.input_hw), dtype=np.float32)
    for _ in range(20):
        engine.infer(image)
    before = _free_device_memory(engine._cuda)
    times = []
    for _ in range(ITERATIONS):
        started = time.perf_counter()
        engine.infer(image)
        times.append(time.perf_counter() - started)
    after = _free_device_memory(engine._cuda)
    p50, p99 = (float(np.percentile(times, q) * 1e3) for q in (50, 99))
    report.check(
        f'{label}: {ITERATIONS} iterations leak no device memory',
        before - after < LEAK_BUDGET_BYTES,
        leaked_bytes=before - after,
    )
    report.record(f'{label}: latency', 'info', p50_ms=round(p50, 3), p99_ms=round(p99, 3))
    report.facts.setdefault('latency_ms', {})[label] = {'p50': p50, 'p99': p99}


def cache_and_refusal(report: Report, onnx_path: pathlib.Path, cache_dir: pathlib.Path) -> None:
    first = tensorrt_builder.ensure_engine(onnx_path, cache_dir=cache_dir)
    stamp = first.stat().st_mtime_ns
    started = time.monotonic()
    engine = load_engine(onnx_path, backend='tensorrt', cache_dir=cache_dir)
    report.check(
        'cache: a second start reuses the engine',
        engine.path == first and first.stat().st_mtime_ns == stamp,
        load_s=round(time.monotonic() - started, 2),
    )
    engine.close()
    sidecar = cache.read_sidecar(first)
    for name, change in (
        ('another GPU name', {'gpu_name': 'NVIDIA Imaginary GPU'}),
        ('another SM count', {'gpu_sm_count': sidecar.gpu_sm_count + 1}),
        ('another TensorRT', {'tensorrt_version': '9.9.9'}),
    ):
        foreign = cache_dir / 'foreign.engine'
        foreign.write_bytes(first.read_bytes())
        cache.write_sidecar(foreign, dataclasses.replace(sidecar, **change))
        try:
            tensorrt_backend.TensorRTEngine(foreign).close()
        except EngineError as e:
            report.check(f'refusal: an engine for {name}', 'built for' in str(e))
        else:
            report.check(f'refusal: an engine for {name}', False, why='it loaded')


_CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from moa_depth_ros.engine import tensorrt_builder
print(tensorrt_builder.ensure_engine(sys.argv[1], precision='fp32', cache_dir=sys.argv[2]))
"""


def concurrent_builds(report: Report, onnx_path: pathlib.Path, work: pathlib.Path) -> None:
    if report.left_s() < 90:
        report.skip('lock: two processes build once', 'no budget left')
        return
    cache_dir = work / 'concurrent-cache'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, '-c', _CHILD, str(onnx_path), str(cache_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=max(report.left_s(), 30)) for child in children]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs if out.strip()}
    builds = sum(err.count('building a fp32 TensorRT engine') for _, err in outputs)
    ok = all(c.returncode == 0 for c in children) and len(paths) == 1 and builds == 1
    if ok:
        path = paths.pop()
        ok = cache.file_sha256(path) == cache.read_sidecar(path).engine_sha256
    report.check('lock: two processes build once', ok, builds=builds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--budget-s', type=float, default=450.0)
    parser.add_argument('--work', help='work directory (default: a temporary one)')
    parser.add_argument('--tiny', action='store_true', help='shrunken towers: a quick smoke')
    args = parser.parse_args(argv)
    report = Report(args.budget_s)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix='moa-depth-gpu-'))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = pathlib.Path(os.environ.get('OUT') or work)
    print('== facts', flush=True)
    facts(report)
    print('== models', flush=True)
    onnx = export_models(work, tiny=args.tiny)
    cache_dir = work / 'cache'
    print('== builds', flush=True)
    for label, name, precision in (('tiny fp16', 'tiny', 'fp16'), ('tiny fp32', 'tiny', 'fp32')):
        engine = build_and_judge(report, label, onnx[name], cache_dir, precision, min_left_s=20)
        if engine is not None:
            engine.close()
    cache_and_refusal(report, onnx['tiny'], cache_dir)
    refuse = tensorrt_builder.BuildOptions(fallback_fp32=False)
    try:
        tensorrt_builder.ensure_engine(onnx['hopeless'], cache_dir=cache_dir, options=refuse)
    except EngineError as e:
        report.check('refusal: an FP16 engine that misses the bar', 'refused' in str(e))
    else:
        report.check('refusal: an FP16 engine that misses the bar', False, why='it was built')
    path = tensorrt_builder.ensure_engine(onnx['hopeless'], cache_dir=cache_dir)
    sidecar = cache.read_sidecar(path)
    report.check(
        'fallback: by default it is rebuilt in FP32 and the sidecar says why',
        sidecar.precision == 'fp32' and bool(sidecar.parity.get('fallback')),
        fallback=sidecar.parity.get('fallback', '')[:120],
    )
    concurrent_builds(report, onnx['tiny_dynamic'], work)
    moa = build_and_judge(
        report, 'MoA-DepthCLIP default (fp16)', onnx['moa_depthclip'], cache_dir, None
    )
    if moa is not None:
        leak_and_latency(report, 'MoA-DepthCLIP fp16', moa)
        moa.close()
    for label, name, precision, refusal_ok in (
        ('DepthCLIP default (fp32)', 'depthclip', None, False),
        ('MoA-DepthCLIP fp32', 'moa_depthclip', 'fp32', False),
        ('DepthCLIP fp16 (within the bar, else FP32)', 'depthclip', 'fp16', False),
    ):
        engine = build_and_judge(
            report, label, onnx[name], cache_dir, precision, refusal_ok=refusal_ok
        )
        if engine is not None:
            if name == 'depthclip' and precision is None:
                leak_and_latency(report, 'DepthCLIP fp32', engine)
            engine.close()
    if len(report.facts['gpus']) > 1 and report.left_s() > 60:
        path = tensorrt_builder.ensure_engine(onnx['tiny'], device='cuda:1', cache_dir=cache_dir)
        built_for = cache.read_sidecar(path).gpu
        wanted = tensorrt_backend.default_cuda_api('cuda:1').device_info()
        report.check('cuda:1: built on and for the second GPU', built_for == wanted)
    else:
        report.skip('cuda:1: built on and for the second GPU', 'one GPU (or no budget left)')
    failed = [c['check'] for c in report.checks if c['status'] == 'fail']
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        'facts': report.facts,
        'checks': report.checks,
        'failed': failed,
        'elapsed_s': round(time.monotonic() - report.started, 1),
    }
    (out_dir / 'gpu_acceptance.json').write_text(json.dumps(result, indent=2, default=str))
    print(
        f'== {len(failed)} failed, {len(report.checks)} checks, {result["elapsed_s"]} s',
        flush=True,
    )
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
