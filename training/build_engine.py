"""``python -m training build-engine``: an exported ONNX file to a TensorRT engine + sidecar.

Run it on the target machine (Jetson or desktop GPU): an engine only runs on the GPU model
and TensorRT version that built it. The builder itself is
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
    parser.add_argument('--precision', choices=PRECISIONS, default='fp16')
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
            timing_cache=args.timing_cache,
            verbose=args.verbose,
        )
        sidecar = build_engine(args.onnx, output, options)
    except MoaDepthError as e:
        print(f'build-engine: error: {e}', file=sys.stderr)
        return 2
    print(
        f'wrote {output} ({sidecar.precision}, {sidecar.fp32_layers} layers kept in FP32) for '
        f'{sidecar.gpu_name}, TensorRT {sidecar.tensorrt_version}\n'
        f'sidecar {sidecar_path(output)}'
    )
    return 0
