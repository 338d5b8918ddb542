"""``python -m training export``: a ``.safetensors`` checkpoint to a verified ONNX file.

The exporter itself is ``training.onnx_export.export_onnx`` (re-exported here
for training code and the quickstart, which pass a model object); this module loads the
checkpoint and is the command line. ``--int8 --calibration FRAMES`` also writes the INT8
model for CPUs (``training.quantize``: NNCF post-training quantization calibrated on the
user's frames, an OpenVINO IR ``OUTPUT.int8.xml`` beside the ``.onnx``), and only if its depth
stays within the accuracy bar of the FP32 model on held-out frames of the same source.

The earlier ``--int8`` (ONNX Runtime dynamic quantization of the MatMul weights, an
``.int8.onnx``) is gone from the command: measured on MoA-DepthCLIP here it ran at 55 ms per
frame on ONNX Runtime, the speed of OpenVINO FP32 on the FP32 file and 3x slower than
OpenVINO's INT8 model, and OpenVINO installs wherever ONNX Runtime does on a CPU (x86_64 and
aarch64 wheels). ``training.onnx_export.quantize_int8`` stays for the engines benchmark's
comparison row.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any, Sequence

from moa_depth_ros.engine.cache import file_sha256
from moa_depth_ros.errors import MoaDepthError
from training.onnx_export import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    ExportReport,
    export_onnx,
    parity_errors,
)
from training.quantize import (
    DEFAULT_CALIBRATION_FRAMES,
    calibration_frames,
    quantize_openvino_int8,
)

__all__ = [
    'ExportReport',
    'export_checkpoint',
    'export_onnx',
    'main',
    'parity_errors',
]


# Checkpoint header keys the ONNX already carries under the same name (from the model's
# describe() and the export itself); every other key is provenance, copied as checkpoint_*.
_RESTATED_CHECKPOINT_KEYS = frozenset(
    {
        'format',
        'format_version',
        'model_name',
        'input_height',
        'input_width',
        'min_depth_m',
        'max_depth_m',
        'config_json',
        'config_digest',
        'input_name',
        'output_names',
    }
)


def export_checkpoint(
    checkpoint: str | os.PathLike, output: str | os.PathLike, **kwargs: Any
) -> ExportReport:
    """Load a ``.safetensors`` checkpoint and ``export_onnx`` it (same keyword options).

    The checkpoint's own metadata (training package version, epoch, step, validation
    metric, anything training added) goes into the ONNX as ``checkpoint_<key>``, with the
    checkpoint's sha256 as ``source_checkpoint_sha256``: an engine can be traced back to
    the training run that made it.
    """
    from moa_depth_ros.model import load_model, read_checkpoint_metadata

    checkpoint = pathlib.Path(checkpoint)
    model = load_model(checkpoint, map_location='cpu')
    extra = dict(kwargs.pop('extra_metadata', None) or {})
    extra.setdefault('source_checkpoint_sha256', file_sha256(checkpoint))
    for key, value in read_checkpoint_metadata(checkpoint).items():
        if key not in _RESTATED_CHECKPOINT_KEYS:
            extra.setdefault(f'checkpoint_{key}', value)
    return export_onnx(model, output, extra_metadata=extra, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training export',
        description='Export a checkpoint to ONNX (verified against PyTorch with onnxruntime).',
    )
    parser.add_argument('--checkpoint', required=True, help='trained .safetensors checkpoint')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset (>= 17)')
    parser.add_argument(
        '--dynamic-batch', action='store_true', help='dynamic batch axis (default: batch 1)'
    )
    parser.add_argument(
        '--skip-verify', action='store_true', help='skip the onnxruntime-vs-torch check'
    )
    parser.add_argument(
        '--tolerance',
        type=float,
        default=DEFAULT_TOLERANCE,
        help='max relative error accepted by the check (default %(default)g)',
    )
    parser.add_argument(
        '--int8',
        action='store_true',
        help='also write the INT8 model for CPUs (OpenVINO IR OUTPUT.int8.xml + .bin; NNCF '
        'post-training quantization) if its depth stays within the accuracy bar of FP32 on '
        'held-out calibration frames; needs --calibration',
    )
    parser.add_argument(
        '--calibration',
        metavar='FRAMES',
        help='frames to calibrate --int8 on: a folder of images, a rosbag2 recording '
        '(directory, .mcap, .db3) or a training recipe (.yaml: its training split)',
    )
    parser.add_argument(
        '--calibration-frames',
        type=int,
        default=DEFAULT_CALIBRATION_FRAMES,
        help='frames read from --calibration, spread over it; one in 5 is held out for the '
        'accuracy check (default %(default)s)',
    )
    parser.add_argument(
        '--calibration-topic', help='image topic of a --calibration recording (default: the one)'
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training export``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and not args.calibration:
        parser.error('--int8 needs --calibration FRAMES (images, a recording or a recipe)')
    if args.calibration and not args.int8:
        parser.error('--calibration is for --int8')
    try:
        report = export_checkpoint(
            args.checkpoint,
            args.output,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            verify=not args.skip_verify,
            tolerance=args.tolerance,
        )
    except MoaDepthError as e:
        print(f'export: error: {e}', file=sys.stderr)
        return 2
    print(report.summary())
    if not args.int8:
        return 0
    try:
        frames = calibration_frames(
            args.calibration,
            (int(report.metadata['input_height']), int(report.metadata['input_width'])),
            count=args.calibration_frames,
            image_topic=args.calibration_topic,
        )
        int8 = quantize_openvino_int8(report.path, frames)
    except MoaDepthError as e:
        print(f'export: INT8 error: {e}', file=sys.stderr)
        return 2
    print(int8.summary())
    return 0 if int8.path is not None else 3
