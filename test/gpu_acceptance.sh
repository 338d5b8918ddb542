#!/usr/bin/env bash
# GPU acceptance of the TensorRT backend: run as is on a machine with an NVIDIA GPU,
# TensorRT 10.3+ or 11.x, cuda-python (or torch) and this repository's Python environment
# (torch and open_clip export the models; no downloads: weights are random).
# At most 8 minutes (`timeout`; the checks themselves budget 7.5 and skip what does not fit).
#
# What it checks, in this order (one PASS/FAIL/SKIP line each; exit status 1 on any FAIL):
#  1. Facts: Python, TensorRT and its build API (weakly typed 10.x / strongly typed 11.x),
#     cuda-python / cuda-bindings, onnxruntime, onnx, torch; every GPU's name, compute
#     capability, SM count and memory; free device memory.
#  2. A tiny model built in FP16 and FP32: the sidecar's parity with ONNX Runtime FP32 passed,
#     a fresh random input meets the accuracy bar, the engine inspector shows FP16 layers in
#     the FP16 engine and none in the FP32 one (and the FP32 engine has no TF32).
#  3. Cache reuse: a second start loads the cached engine without rebuilding it.
#  4. Refusal: an engine whose sidecar names another GPU, another SM count or another
#     TensorRT is refused; an FP16 build of a net whose logits pass 65504 is refused with
#     the reason after its retry with the sensitive layers in FP32 (fallback off), and by
#     default rebuilt in FP32 with the reason in its sidecar.
#  5. The lock: two processes starting together on one new cache key build once, and the
#     engine matches its sidecar.
#  6. Random-weight MoA-DepthCLIP in its default precision (FP16): parity, inspector, then
#     1000 iterations with no device memory leaked (< 16 MiB drift) and p50/p99 latency.
#  7. Random-weight DepthCLIP in its default precision (FP32, no TF32): parity, inspector,
#     1000 iterations, latency; MoA-DepthCLIP in FP32; DepthCLIP asked in FP16 (an engine
#     within the bar: FP16 if it meets it, else the recorded FP32 fallback).
#  8. With a second GPU: an engine for cuda:1 is built on and recorded for that GPU.
# Results: gpu_acceptance.json in $OUT when set (else in the work directory), and stdout.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/moa-depth-gpu.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export MOA_DEPTH_ENGINE_CACHE="$work/cache"
timeout --signal=INT --kill-after=20 480 "$python" test/gpu_acceptance.py --budget-s 450 --work "$work" "$@"
