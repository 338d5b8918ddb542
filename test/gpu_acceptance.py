"""GPU acceptance of the TensorRT backend; run by test/gpu_acceptance.sh (its header says what).

One process, a time budget (``--budget-s``): the cheap checks first, the full-size builds
after. The budget is guarded per TensorRT build (an FP16 model that misses the bar builds up
to three times), and whatever it leaves no time for is reported as skipped, never as passed.
Prints one line per check with a running tally, and rewrites ``gpu_acceptance.json`` (facts,
checks, builds, latencies) after every line, in ``--out`` (default $OUT, else
runs/gpu-acceptance/ in the repository), so a run stopped by its time limit keeps what it
did. Exit status 1 if any check failed or the run was interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import numpy as np

from moa_depth_ros.engine import cache, load_engine, tensorrt_backend, tensorrt_builder
from moa_depth_ros.engine.accuracy import (
    accuracy_holds,
    confidence_agreement,
    confidence_holds,
    depth_agreement,
)
from moa_depth_ros.errors import EngineError
from moa_depth_ros.fileio import atomic_write_text

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / 'runs' / 'gpu-acceptance'
LEAK_BUDGET_BYTES = 16 << 20  # free device memory may drift by allocator noise, not more
ITERATIONS = 1000
# Seconds a build is assumed to take before one of its size has been timed in this run (a
# Jetson builds the full-size models several times slower: see gpu_acceptance.sh); later
# builds expect 1.25x the longest one of that size timed so far.
FIRST_BUILD_S = {'tiny': 15.0, 'full': 60.0, 'full_jetson': 150.0}


class Report:
    """Checks as they happen: one printed line each, and the JSON rewritten after each."""

    def __init__(self, budget_s: float, path: pathlib.Path | None = None) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.path = path
        self.facts: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []
        self.builds: list[dict[str, Any]] = []
        self.longest_build_s: dict[str, float] = {}  # model size -> longest build seconds
        self.finished = False
        self.save()

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def tally(self) -> dict[str, int]:
        counts = {'pass': 0, 'fail': 0, 'skip': 0}
        for check in self.checks:
            if check['status'] in counts:
                counts[check['status']] += 1
        return counts

    def failed(self) -> list[str]:
        return [c['check'] for c in self.checks if c['status'] == 'fail']

    def save(self) -> None:
        if self.path is None:
            return
        result = {
            'finished': self.finished,
            'elapsed_s': round(time.monotonic() - self.started, 1),
            'budget_s': self.budget_s,
            'tally': self.tally(),
            'failed': self.failed(),
            'facts': self.facts,
            'builds': self.builds,
            'checks': self.checks,
        }
        atomic_write_text(self.path, json.dumps(result, indent=2, default=str))

    def record(self, name: str, status: str, **details: Any) -> None:
        elapsed = round(time.monotonic() - self.started, 1)
        self.checks.append({'check': name, 'status': status, 'at_s': elapsed, **details})
        self.save()
        extra = ', '.join(f'{k}={v}' for k, v in details.items())
        t = self.tally()
        print(
            f'[{status.upper():4}] {name}'
            + (f': {extra}' if extra else '')
            + f'  ({t["pass"]} pass, {t["fail"]} fail, {t["skip"]} skip; {elapsed:.0f} s)',
            flush=True,
        )

    def check(self, name: str, ok: bool, **details: Any) -> bool:
        self.record(name, 'pass' if ok else 'fail', **details)
        return ok

    def skip(self, name: str, why: str) -> None:
        self.record(name, 'skip', why=why)


class OutOfBudget(Exception):
    """Raised before a TensorRT build the time budget has no room for."""


@contextlib.contextmanager
def guarded_builds(
    report: Report, label: str, first_build_s: float, size: str = 'tiny'
) -> Iterator[None]:
    """Check the budget before every TensorRT build ``label`` starts, not once per check.

    ``ensure_engine`` may build up to three times (FP16, FP16 with its sensitive layers in
    FP32, FP32); each build needs ``first_build_s`` until a build of this ``size`` has been
    timed, then 1.25x the longest so far. Every build is recorded (precision, seconds) in
    the JSON's ``builds``.
    """
    original = tensorrt_builder._build_once
    timed: list[float] = []

    def build_once(trt, onnx_path, metadata, options, precision, *, sensitive_fp32):
        longest = report.longest_build_s.get(size)
        need = first_build_s if longest is None else 1.25 * longest
        attempt = f'build {len(timed) + 1} ({precision}' + (
            ', sensitive layers in FP32)' if sensitive_fp32 else ')'
        )
        if report.left_s() < need:
            raise OutOfBudget(
                f'{attempt} needs ~{need:.0f} s, {max(report.left_s(), 0):.0f} s of budget left'
            )
        started = time.monotonic()
        result = original(
            trt, onnx_path, metadata, options, precision, sensitive_fp32=sensitive_fp32
        )
        timed.append(time.monotonic() - started)
        report.longest_build_s[size] = max(report.longest_build_s.get(size, 0.0), timed[-1])
        report.builds.append({'label': label, 'attempt': attempt, 'build_s': round(timed[-1], 1)})
        print(f'       {label}: {attempt} took {timed[-1]:.1f} s', flush=True)
        report.save()
        return result

    tensorrt_builder._build_once = build_once
    try:
        yield
    finally:
        tensorrt_builder._build_once = original


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
        lane=os.environ.get('MOA_GPU_LANE', 'not set (run through gpu_acceptance.sh)'),
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
    got = engine.infer(image)
    agreement = depth_agreement(reference[0], got[0])
    confidence = confidence_agreement(reference[1], got[1])
    report.check(
        f'{label}: a fresh input meets the bar',
        accuracy_holds(agreement) and confidence_holds(confidence),
        mean_rel_err=f'{agreement["mean_rel_err"]:.2e}',
        delta1=f'{agreement["delta1_agreement"]:.4f}',
        confidence_mean_abs_err=f'{confidence["confidence_mean_abs_err"]:.2e}',
    )
    counts = tensorrt_backend.layer_precisions(engine.layer_information())
    if sidecar.precision == 'fp16':
        ok = counts.get('fp16', 0) > 0
    else:
        reduced = sum(counts.get(kind, 0) for kind in ('fp16', 'bf16', 'fp8'))
        ok = reduced == 0 and not sidecar.tf32
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
    size: str = 'full',
    first_build_s: float = FIRST_BUILD_S['full'],
) -> Any:
    """Build (guarded per build), load and judge one engine; None if it was not built."""
    started = time.monotonic()
    try:
        with guarded_builds(report, label, first_build_s, size):
            path = tensorrt_builder.ensure_engine(
                onnx_path, precision=precision, cache_dir=cache_dir
            )
    except OutOfBudget as e:
        report.skip(label, str(e))
        return None
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
    """Up to ``ITERATIONS`` runs: no device memory leaked, and p50/p99 latency.

    The loop is cut to what the budget has left (timed from the warm-up), never below 100
    (else it is skipped).
    """
    name = f'{label}: iterations leak no device memory'
    image = np.random.default_rng(0).random((1, 3, *engine.input_hw), dtype=np.float32)
    started = time.perf_counter()
    for _ in range(20):
        engine.infer(image)
    per_run_s = (time.perf_counter() - started) / 20
    iterations = min(ITERATIONS, int((report.left_s() - 10) / max(per_run_s * 1.2, 1e-6)))
    if iterations < min(100, ITERATIONS):
        report.skip(name, f'{report.left_s():.0f} s left, {per_run_s * 1e3:.1f} ms a run')
        return
    before = _free_device_memory(engine._cuda)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        engine.infer(image)
        times.append(time.perf_counter() - started)
    after = _free_device_memory(engine._cuda)
    p50, p99 = (float(np.percentile(times, q) * 1e3) for q in (50, 99))
    report.check(
        name, before - after < LEAK_BUDGET_BYTES, leaked_bytes=before - after, runs=iterations
    )
    report.record(f'{label}: latency', 'info', p50_ms=round(p50, 3), p99_ms=round(p99, 3))
    report.facts.setdefault('latency_ms', {})[label] = {'p50': p50, 'p99': p99, 'runs': iterations}


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


# A child of the lock check. Its result goes through a file: TensorRT's default logger
# writes to stdout (std::cout in python/src/infer/pyCore.cpp), so stdout is no result channel.
_CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from moa_depth_ros.engine import tensorrt_builder
from moa_depth_ros.fileio import atomic_write_text
path = tensorrt_builder.ensure_engine(sys.argv[1], precision='fp32', cache_dir=sys.argv[2])
atomic_write_text(sys.argv[3], json.dumps({'path': str(path)}))
"""


def child_results(paths: list[pathlib.Path]) -> list[dict[str, Any] | None]:
    """Read each child's result file; None where a child wrote none (or garbage)."""
    results = []
    for path in paths:
        try:
            results.append(json.loads(path.read_text(encoding='utf-8')))
        except (OSError, ValueError):
            results.append(None)
    return results


def concurrent_builds(report: Report, onnx_path: pathlib.Path, work: pathlib.Path) -> None:
    need = 3 * FIRST_BUILD_S['tiny']
    if report.left_s() < need:
        report.skip('lock: two processes build once', f'{report.left_s():.0f} s of budget left')
        return
    cache_dir = work / 'concurrent-cache'
    paths = [str(REPO), str(REPO / 'test'), *filter(None, [os.environ.get('PYTHONPATH')])]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(paths)}
    result_files = [work / f'lock-child-{i}.json' for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, '-c', _CHILD, str(onnx_path), str(cache_dir), str(result)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for result in result_files
    ]
    outputs = [child.communicate(timeout=max(report.left_s(), 30)) for child in children]
    results = child_results(result_files)
    paths = {r['path'] for r in results if r}
    builds = sum(err.count('building a fp32 TensorRT engine') for _, err in outputs)
    ok = all(c.returncode == 0 for c in children) and len(paths) == 1 and builds == 1
    if ok:
        path = paths.pop()
        ok = cache.file_sha256(path) == cache.read_sidecar(path).engine_sha256
    report.check(
        'lock: two processes build once',
        ok,
        builds=builds,
        returncodes=[c.returncode for c in children],
        **({} if ok else {'stderr': outputs[0][1][-300:] + outputs[1][1][-300:]}),
    )


def hopeless_builds(report: Report, onnx_path: pathlib.Path, cache_dir: pathlib.Path) -> None:
    """Check an FP16 build that cannot meet the bar: refused if asked, else built in FP32."""
    name = 'refusal: an FP16 engine that misses the bar'
    refuse = tensorrt_builder.BuildOptions(fallback_fp32=False)
    try:
        with guarded_builds(report, 'hopeless, refused', FIRST_BUILD_S['tiny']):
            tensorrt_builder.ensure_engine(onnx_path, cache_dir=cache_dir, options=refuse)
    except OutOfBudget as e:
        report.skip(name, str(e))
    except EngineError as e:
        report.check(name, 'refused' in str(e))
    else:
        report.check(name, False, why='it was built')
    name = 'fallback: by default it is rebuilt in FP32 and the sidecar says why'
    try:
        with guarded_builds(report, 'hopeless, fallback', FIRST_BUILD_S['tiny']):
            path = tensorrt_builder.ensure_engine(onnx_path, cache_dir=cache_dir)
    except OutOfBudget as e:
        report.skip(name, str(e))
        return
    sidecar = cache.read_sidecar(path)
    report.check(
        name,
        sidecar.precision == 'fp32' and bool(sidecar.parity.get('fallback')),
        fallback=sidecar.parity.get('fallback', '')[:120],
    )


def run_checks(report: Report, work: pathlib.Path, tiny: bool) -> None:
    """Every check, most important first: what the budget cuts off is the least needed."""
    print('== facts', flush=True)
    facts(report)
    report.save()
    print('== models', flush=True)
    onnx = export_models(work, tiny=tiny)
    cache_dir = work / 'cache'
    print('== builds', flush=True)
    for label, precision in (('tiny fp16', 'fp16'), ('tiny fp32', 'fp32')):
        engine = build_and_judge(
            report,
            label,
            onnx['tiny'],
            cache_dir,
            precision,
            size='tiny',
            first_build_s=FIRST_BUILD_S['tiny'],
        )
        if engine is not None:
            engine.close()
    cache_and_refusal(report, onnx['tiny'], cache_dir)
    hopeless_builds(report, onnx['hopeless'], cache_dir)
    concurrent_builds(report, onnx['tiny_dynamic'], work)
    size = 'tiny' if tiny else 'full'
    first_build_s = FIRST_BUILD_S['tiny'] if tiny else FIRST_BUILD_S['full']
    if not tiny and any(gpu.get('compute_capability') == '8.7' for gpu in report.facts['gpus']):
        first_build_s = FIRST_BUILD_S['full_jetson']  # Orin (sm_87): builds are slower
    full = {'size': size, 'first_build_s': first_build_s}
    moa = build_and_judge(
        report, 'MoA-DepthCLIP default (fp16)', onnx['moa_depthclip'], cache_dir, None, **full
    )
    if moa is not None:
        leak_and_latency(report, 'MoA-DepthCLIP fp16', moa)
        moa.close()
    for label, name, precision in (
        ('DepthCLIP default (fp32)', 'depthclip', None),
        ('MoA-DepthCLIP fp32', 'moa_depthclip', 'fp32'),
        ('DepthCLIP fp16 (within the bar, else FP32)', 'depthclip', 'fp16'),
    ):
        engine = build_and_judge(report, label, onnx[name], cache_dir, precision, **full)
        if engine is not None:
            if name == 'depthclip' and precision is None:
                leak_and_latency(report, 'DepthCLIP fp32', engine)
            engine.close()
    label = 'cuda:1: built on and for the second GPU'
    if len(report.facts['gpus']) < 2:
        report.skip(label, 'one GPU')
        return
    try:
        with guarded_builds(report, label, FIRST_BUILD_S['tiny']):
            path = tensorrt_builder.ensure_engine(
                onnx['tiny'], device='cuda:1', cache_dir=cache_dir
            )
    except OutOfBudget as e:
        report.skip(label, str(e))
        return
    built_for = cache.read_sidecar(path).gpu
    wanted = tensorrt_backend.default_cuda_api('cuda:1').device_info()
    report.check(label, built_for == wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--budget-s', type=float, default=450.0)
    parser.add_argument('--work', help='work directory (default: a temporary one)')
    parser.add_argument(
        '--out', help=f'where gpu_acceptance.json goes (default: $OUT, else {DEFAULT_OUT})'
    )
    parser.add_argument('--tiny', action='store_true', help='shrunken towers: a quick smoke')
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out or os.environ.get('OUT') or DEFAULT_OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(args.budget_s, out_dir / 'gpu_acceptance.json')
    print(f'== results: {report.path} (rewritten after every check)', flush=True)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix='moa-depth-gpu-'))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_checks(report, work, args.tiny)
    except KeyboardInterrupt:  # `timeout --signal=INT` in gpu_acceptance.sh
        report.record('run', 'fail', why='stopped by its time limit before the last check')
    except Exception as e:  # a crash is a result too: record it, then show it
        report.record('run', 'fail', why=f'crashed: {type(e).__name__}: {str(e)[:300]}')
        raise
    else:
        report.finished = True
    finally:
        report.save()
        t = report.tally()
        print(
            f'== {t["fail"]} failed, {t["pass"]} passed, {t["skip"]} skipped in '
            f'{time.monotonic() - report.started:.0f} s; {report.path}',
            flush=True,
        )
    return 1 if report.failed() else 0


if __name__ == '__main__':
    sys.exit(main())
