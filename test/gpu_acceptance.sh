#!/usr/bin/env bash
# GPU acceptance of the TensorRT backend, on a machine with an NVIDIA GPU. One command on a
# fresh machine: `make gpu-acceptance` (= test/gpu_acceptance.sh --install) builds a venv
# for this machine's lane, then runs the checks; without --install it runs in that venv
# (or $PYTHON) and refuses in one line, exit status 2, when anything is missing.
#
# Lanes (--install; the venv is .venv-gpu-LANE, or $GPU_VENV):
#   jetpack6    a Jetson (JetPack 6.1/6.2: TensorRT 10.3 from JetPack's python3-libnvinfer,
#               seen through --system-site-packages) + requirements-gpu-jetpack6.txt
#   cuXX-trtN   a desktop: XX = the CUDA major of the driver (`nvidia-smi`), N = TRT
#               (10 or 11, default 11; `make gpu-acceptance TRT=10` for the weakly typed
#               FP16 path a Jetson runs) + requirements-gpu-cuXX-trtN.txt
# Every lane also installs requirements-train.txt (torch, open_clip_torch, timm, onnx,
# onnxruntime: they export the networks and give the FP32 reference; no downloads, the
# weights are random).
#
# At most 8 minutes (`timeout`; the checks budget 7.5 and skip what does not fit). The
# budget is guarded per TensorRT build: before each one (an FP16 model that misses the bar
# builds up to three times) the run checks it has time for ~1.25x the longest build of that
# model so far, else records the rest as skipped.
#
# Time on a Jetson (an estimate: nothing here has run on one). The checks are ordered by
# importance, so an overrun costs the last, least needed ones, recorded as skipped. Builds
# dominate. Full-size networks: MoA-DepthCLIP (ViT-B/32 at 224x224, ~4.4 GFLOPs) in FP16
# and DepthCLIP (RN50 at 416x544, ~18 GFLOPs: 4.1 at 224x224 scaled by the pixel count) in
# FP32. TensorRT's build time is mostly timing candidate kernels, so it grows with layer
# count and kernel run time: an AGX Orin (~40 dense FP16 tensor TFLOPS, ~5 FP32 TFLOPS, an
# Arm CPU for the builder's own work) runs kernels ~4x (RTX 4090) to ~20x (H100) slower
# than the desktop GPUs on which builds of ViT-B- and ResNet-50-sized networks typically
# take under a minute. Estimate per full-size build on AGX Orin: 1.5-3 min (Orin NX /
# Nano, with a half or a quarter of its GPU: 3-6 min). Iterations: MoA-DepthCLIP FP16 ~5-10 ms,
# DepthCLIP FP32 ~30-40 ms on AGX Orin; the loop is cut to what the budget has left.
#   AGX Orin: facts + export on its CPU ~1 min, the tiny models' eight builds ~1.5 min,
#   MoA-DepthCLIP fp16 build + parity + 1000 iterations 2-3.5 min: the node's default
#   engine is checked in ~5.5 min. DepthCLIP fp32 (~3 min more) runs only when the builds
#   are at the low end: the guard reserves 1.25x the longest full-size build timed so far
#   (2.5 min for the first one on a Jetson). MoA-DepthCLIP fp32 and DepthCLIP fp16 (up to
#   3 builds) do not fit and are reported as skipped. Orin NX / Nano: the tiny checks, and
#   MoA-DepthCLIP fp16 only if its build takes under ~4 min.
#   `gpu_acceptance.json` records every build's seconds ("builds"), so the first real run
#   replaces this estimate; TIMEOUT_S=900 gives a Jetson room for every check.
#
# What it checks, in this order (one PASS/FAIL/SKIP line each with a running tally; exit
# status 1 on any FAIL):
#  1. Facts: Python, TensorRT and its build API (weakly typed 10.x / strongly typed 11.x),
#     cuda-python / cuda-bindings, onnxruntime, onnx, torch; every GPU's name, compute
#     capability, SM count and memory; free device memory.
#  2. A tiny model built in FP16 and FP32: the sidecar's parity with ONNX Runtime FP32 passed,
#     a fresh random input meets the accuracy bar (depth and confidence), the engine inspector
#     shows FP16 layers in the FP16 engine and none in the FP32 one (and the FP32 engine has
#     no TF32).
#  3. Cache reuse: a second start loads the cached engine without rebuilding it.
#  4. Refusal: an engine whose sidecar names another GPU, another SM count or another
#     TensorRT is refused; an FP16 build of a net whose logits pass 65504 is refused with
#     the reason after its retry with the sensitive layers in FP32 (fallback off), and by
#     default rebuilt in FP32 with the reason in its sidecar.
#  5. The lock: two processes starting together on one new cache key build once, and the
#     engine matches its sidecar (each child hands its result back in a file).
#  6. Random-weight MoA-DepthCLIP in its default precision (FP16): parity, inspector, then
#     1000 iterations with no device memory leaked (< 16 MiB drift) and p50/p99 latency.
#  7. Random-weight DepthCLIP in its default precision (FP32, no TF32): parity, inspector,
#     1000 iterations, latency; MoA-DepthCLIP in FP32; DepthCLIP asked in FP16 (an engine
#     within the bar: FP16 if it meets it, else the recorded FP32 fallback).
#  8. With a second GPU: an engine for cuda:1 is built on and recorded for that GPU.
# Results: gpu_acceptance.json in $OUT when set, else in runs/gpu-acceptance/, rewritten
# after every check (a run stopped by its time limit keeps what it did); scratch files
# (models, engines) go to a temporary directory removed at exit.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
refuse() { echo "gpu-acceptance: refused: $*" >&2; exit 2; }

install=0
args=()
for arg in "$@"; do
  if [[ "$arg" == --install ]]; then install=1; else args+=("$arg"); fi
done

lane() {
  if [[ -f /etc/nv_tegra_release ]]; then echo jetpack6; return; fi
  command -v nvidia-smi >/dev/null || refuse "no nvidia-smi: no NVIDIA driver on this machine"
  local cuda
  cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1)"
  [[ -n "$cuda" ]] || refuse "nvidia-smi shows no CUDA version (is the driver loaded?)"
  (( cuda >= 12 )) || refuse "the driver supports CUDA $cuda; TensorRT 10.3+ needs a CUDA 12 or 13 driver (R535 or newer)"
  local trt="${TRT:-11}"
  [[ "$trt" == 10 || "$trt" == 11 ]] || refuse "TRT must be 10 or 11, got '$trt'"
  echo "cu$(( cuda >= 13 ? 13 : 12 ))-trt$trt"
}

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  name="$(lane)"
  venv="${GPU_VENV:-$repo/.venv-gpu-$name}"
  if (( install )); then
    requirements="$repo/requirements-gpu-$name.txt"
    [[ -f "$requirements" ]] || refuse "no $requirements for this machine's lane"
    base="${BASE_PYTHON:-python3}"
    site=()
    if [[ "$name" == jetpack6 ]]; then
      # JetPack's TensorRT is a system package (python3-libnvinfer), not on PyPI for Jetson.
      "$base" -c 'import tensorrt' 2>/dev/null \
        || refuse "JetPack's TensorRT is missing: sudo apt install python3-libnvinfer"
      site=(--system-site-packages)
    fi
    echo "gpu-acceptance: installing lane $name into $venv" >&2
    "$base" -m venv ${site[@]+"${site[@]}"} "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$repo/requirements-train.txt" -r "$requirements"
    "$venv/bin/python" -m pip install --quiet --no-deps -e "$repo"
  fi
  python="$venv/bin/python"
  [[ -x "$python" ]] || refuse "no $python: run \`make gpu-acceptance\` (or $0 --install), or set PYTHON"
fi

cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export MOA_GPU_LANE="${name:-given by PYTHON=$python}"  # recorded in the result's facts
"$python" test/gpu_preflight.py || exit 2
work="$(mktemp -d "${TMPDIR:-/tmp}/moa-depth-gpu.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export MOA_DEPTH_ENGINE_CACHE="$work/cache"
limit="${TIMEOUT_S:-480}"
timeout --signal=INT --kill-after=20 "$limit" \
  "$python" test/gpu_acceptance.py --budget-s "$(( limit - 30 ))" --work "$work" ${args[@]+"${args[@]}"}
