"""``python -m training build-engine``: an exported ONNX file to a TensorRT engine + sidecar.

Run it on the target machine (Jetson or desktop GPU), on the GPU that will run the engine
(``--device cuda:N``): an engine only runs on the GPU model and TensorRT version that built
it. Every build is checked against ONNX Runtime FP32 and refused if it misses the accuracy
bar (see ``tensorrt_builder``). The builder itself is
``moa_depth_ros.engine.tensorrt_builder.build_engine`` (the node uses the same code to build
and cache an engine on first start); this module is its command line.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from moa_depth_ros.engine.cache import PRECISIONS, sidecar_path
from moa_depth_ros.engine.tensorrt_builder import BuildOptions, build_engine
from moa_depth_ros.errors import MoaDepthError

__all__ = ['BuildOptions', 'build_engine', 'main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training build-engine',
        description='Build a TensorRT engine (and its sidecar JSON) from an exported ONNX file.',
    )
    parser.add_argument('--onnx', required=True, help='ONNX file from `python -m training export`')
    parser.add_argument(
        '--output', help='engine file to write (default: the ONNX path with .engine)'
    )
    parser.add_argument(
        '--precision',
        choices=('auto', *PRECISIONS),
        default='auto',
        help="auto: the model's default (fp16; fp32 for DepthCLIP)",
    )
    parser.add_argument('--device', default='auto', help='CUDA device to build on: cuda:N')
    parser.add_argument(
        '--tf32', action='store_true', help='let FP32 layers use TF32 (off: FP32 is FP32)'
    )
    parser.add_argument(
        '--no-fp32-fallback',
        action='store_true',
        help='refuse an FP16 engine that misses the accuracy bar instead of building FP32',
    )
    parser.add_argument(
        '--workspace-gib', type=float, default=2.0, help='builder workspace limit in GiB'
    )
    parser.add_argument(
        '--batch',
        type=int,
        nargs=3,
        metavar=('MIN', 'OPT', 'MAX'),
        default=(1, 1, 8),
        help='optimisation profile for a dynamic-batch ONNX (ignored when static)',
    )
    parser.add_argument('--timing-cache', help='timing cache file to read and update')
    parser.add_argument('--verbose', action='store_true', help='verbose TensorRT log')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training build-engine``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    output = pathlib.Path(args.output or pathlib.Path(args.onnx).with_suffix('.engine'))
    try:
        options = BuildOptions(
            precision=args.precision,
            workspace_bytes=int(args.workspace_gib * (1 << 30)),
            batch_profile=tuple(args.batch),
            tf32=args.tf32,
            fallback_fp32=not args.no_fp32_fallback,
            timing_cache=args.timing_cache,
            verbose=args.verbose,
        )
        sidecar = build_engine(args.onnx, output, options, device=args.device)
    except MoaDepthError as e:
        print(f'build-engine: error: {e}', file=sys.stderr)
        return 2
    worst = max(
        (result['mean_rel_err'] or 0.0 for result in sidecar.parity['inputs'].values()),
        default=0.0,
    )
    print(
        f'wrote {output} ({sidecar.precision}, {sidecar.typing.replace("_", " ")}, '
        f'{sidecar.fp32_layers} layers in FP32) for {sidecar.gpu.describe()}, TensorRT '
        f'{sidecar.tensorrt_version}\n'
        f'parity with ONNX Runtime FP32: passed, worst mean relative depth error {worst:.3%}\n'
        + (f'{sidecar.parity["fallback"]}\n' if sidecar.parity.get('fallback') else '')
        + f'sidecar {sidecar_path(output)}'
    )
    return 0
