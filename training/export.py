"""``python -m training export``: a ``.safetensors`` checkpoint to a verified ONNX file.

The exporter itself is ``training.onnx_export.export_onnx`` (re-exported here
for training code and the quickstart, which pass a model object); this module loads the
checkpoint and is the command line. ``--int8`` also writes an int8 dynamically quantized
copy, and only if it stays within the accuracy bar of the FP32 model.
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
    accuracy_holds,
    depth_agreement,
    export_onnx,
    parity_errors,
    quantize_int8,
)

__all__ = [
    'ExportReport',
    'export_checkpoint',
    'export_int8',
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


def export_int8(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    images: Any = None,
    samples: int = 4,
    seed: int = 0,
) -> tuple[pathlib.Path | None, dict[str, float]]:
    """Quantize an exported model to int8 and keep it only if its accuracy holds.

    Runs the FP32 and int8 models on ``images`` (float32 [N,3,H,W] in [0,1]; real frames
    judge best) or else ``samples`` random images; returns (path, or None when rejected,
    and the worst agreement numbers over the images). A rejected variant leaves no file.
    """
    import numpy as np
    import onnxruntime as ort

    onnx_path = pathlib.Path(onnx_path)
    output = pathlib.Path(output or onnx_path.with_name(onnx_path.stem + '.int8.onnx'))
    quantize_int8(onnx_path, output)
    sessions = [
        ort.InferenceSession(os.fspath(p), providers=['CPUExecutionProvider'])
        for p in (onnx_path, output)
    ]
    h, w = (int(d) for d in sessions[0].get_inputs()[0].shape[2:])
    if images is None:
        images = np.random.default_rng(seed).random((samples, 3, h, w), dtype=np.float32)
    worst: dict[str, float] = {}
    for image in np.asarray(images, dtype=np.float32):
        image = image[None]
        ref, got = (s.run(['depth'], {'image': image})[0] for s in sessions)
        numbers = depth_agreement(ref, got)
        worst = {
            'mean_rel_err': max(numbers['mean_rel_err'], worst.get('mean_rel_err', 0.0)),
            'max_rel_err': max(numbers['max_rel_err'], worst.get('max_rel_err', 0.0)),
            'delta1_agreement': min(numbers['delta1_agreement'], worst.get('delta1_agreement', 1)),
        }
    if not accuracy_holds(worst):
        output.unlink()
        return None, worst
    return output, worst


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
        help='also write OUTPUT.int8.onnx (int8 MatMul weights) if its depth stays within '
        '1 %% mean relative error of FP32',
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training export``."""
    args = build_parser().parse_args(argv)
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
    if args.int8:
        path, numbers = export_int8(report.path)
        detail = (
            f'mean rel depth error {numbers["mean_rel_err"]:.3g}, '
            f'max {numbers["max_rel_err"]:.3g}, '
            f'delta1 agreement {numbers["delta1_agreement"]:.4f}'
        )
        if path is None:
            print(f'int8 variant rejected (accuracy below the bar): {detail}')
        else:
            print(f'int8 variant {path}: {detail}')
    return 0
