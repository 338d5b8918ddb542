"""``moa-depth info MODEL``: what a model file is, what it carries, and which backend runs it.

Reads headers only (ONNX top-level fields, the safetensors JSON header, the TensorRT
sidecar), so it needs neither torch, onnxruntime nor TensorRT and is instant even for a
350 MB model. Problems (missing or contradictory metadata) are listed and make the command
exit with status 2, after everything readable has been printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import struct
from typing import Any

from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.engine.cache import file_sha256, read_sidecar, sidecar_path
from moa_depth_ros.engine.loader import backend_for_path
from moa_depth_ros.errors import EngineError, ModelMetadataError

# A safetensors header longer than this is not one of ours (guards against reading garbage).
_MAX_SAFETENSORS_HEADER_BYTES = 100 << 20


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, Any]]:
    """Return (``__metadata__``, tensor table) of a safetensors file without loading weights.

    The format is an 8-byte little-endian header length, then that many bytes of JSON.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise EngineError(f'{path}: too short to be a safetensors file')
            (length,) = struct.unpack('<Q', prefix)
            if not 2 <= length <= _MAX_SAFETENSORS_HEADER_BYTES:
                raise EngineError(f'{path}: not a safetensors file (header length {length})')
            header = json.loads(f.read(length).decode('utf-8'))
    except FileNotFoundError as e:
        raise EngineError(f'checkpoint {path!r} does not exist') from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f'{path}: not a safetensors file (header is not JSON): {e}') from e
    if not isinstance(header, dict):
        raise EngineError(f'{path}: not a safetensors file (header is not a JSON object)')
    metadata = header.pop('__metadata__', None) or {}
    return {str(k): str(v) for k, v in metadata.items()}, header


def describe_model_file(path: str | os.PathLike, *, with_sha256: bool = True) -> dict[str, Any]:
    """Return a JSON-able description of a model file; ``problems`` lists what is wrong."""
    path = pathlib.Path(path)
    backend = backend_for_path(path)
    if not path.is_file():
        raise EngineError(f'model file {os.fspath(path)!r} does not exist')
    info: dict[str, Any] = {
        'path': os.fspath(path),
        'backend': backend,
        'size_bytes': path.stat().st_size,
    }
    if with_sha256:
        info['sha256'] = file_sha256(path)
    problems: list[str] = []
    props: dict[str, str] = {}

    if backend == 'onnxruntime':
        from moa_depth_ros.engine.onnx_backend import read_onnx_info

        onnx_info = read_onnx_info(path)
        info['kind'] = 'ONNX model'
        info['onnx'] = {
            'ir_version': onnx_info.ir_version,
            'opsets': onnx_info.opsets,
            'producer': onnx_info.producer,
        }
        props = onnx_info.metadata_props
    elif backend == 'openvino':
        from moa_depth_ros.engine.openvino_backend import read_ir_metadata_props

        info['kind'] = 'OpenVINO INT8 model (IR)'
        try:
            props = read_ir_metadata_props(path)
        except ModelMetadataError as e:
            problems.append(str(e))
    elif backend == 'torch':
        props, tensors = read_safetensors_header(path)
        info['kind'] = 'PyTorch checkpoint (safetensors)'
        info['checkpoint'] = {
            'tensors': len(tensors),
            'parameters': sum(_numel(t.get('shape', [])) for t in tensors.values()),
            'format': props.get('format', '?'),
        }
    else:
        info['kind'] = 'TensorRT engine'
        try:
            sidecar = read_sidecar(path)
        except ModelMetadataError as e:
            problems.append(str(e))
        else:
            info['tensorrt'] = {
                key: value
                for key, value in sidecar.to_dict().items()
                if key not in ('metadata', 'format', 'format_version')
            }
            info['tensorrt']['sidecar'] = os.fspath(sidecar_path(path))
            if info.get('sha256') and info['sha256'] != sidecar.engine_sha256:
                problems.append('engine file does not match the sha256 in its sidecar')
            props = sidecar.metadata.to_dict()

    if props or backend != 'tensorrt':
        try:
            meta = ModelMetadata.from_dict(props, source=os.fspath(path))
        except ModelMetadataError as e:
            problems.append(str(e))
            info['metadata'] = props
        else:
            info['metadata'] = meta.to_dict()
            info['model'] = {
                'name': meta.model_name,
                'input_hw': list(meta.input_hw),
                'depth_range_m': [meta.min_depth_m, meta.max_depth_m],
                'package_version': meta.package_version,
                'canonical_focal_px': meta.canonical_focal_px,
                'canonical_camera': meta.canonical_camera,
            }
    info['problems'] = problems
    return info


def _numel(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _short(key: str, value: Any) -> Any:
    """One line for a sidecar field: the parity record summarised, long name lists cut."""
    if key == 'parity' and isinstance(value, dict):
        if not value:
            return 'not recorded (an engine from before parity checks: rebuild it)'
        worst = max(
            (
                (result.get('mean_rel_err') or 0.0, name)
                for name, result in (value.get('inputs') or {}).items()
                if isinstance(result, dict)
            ),
            default=(0.0, '-'),
        )
        confidence = max(
            (
                result.get('confidence_mean_abs_err') or 0.0
                for result in (value.get('inputs') or {}).values()
                if isinstance(result, dict) and 'confidence_mean_abs_err' in result
            ),
            default=None,
        )
        verdict = 'passed' if value.get('passed') else 'FAILED'
        return (
            f'{verdict} against {value.get("reference", "?")}: worst mean relative depth error '
            f'{worst[0]:.3%} ({worst[1]} input)'
            + ('' if confidence is None else f', worst mean confidence error {confidence:.4f}')
            + f', {len(value.get("attempts") or [])} build(s)'
        )
    if isinstance(value, list) and len(value) > 4:
        return f'{", ".join(map(str, value[:4]))}, ... ({len(value)} in all)'
    return value


def format_description(info: dict[str, Any]) -> str:
    """Render ``describe_model_file`` output as aligned text lines."""
    backend = info['backend']
    if backend == 'onnxruntime':  # what backend auto does with an .onnx file (engine.choice)
        from moa_depth_ros.engine.choice import openvino_installed

        if openvino_installed():
            backend += ' or openvino (backend auto: the faster here, measured once)'
    lines = [f'{info["path"]}: {info.get("kind", "?")} -> backend {backend}']
    size_mb = info['size_bytes'] / 1e6
    lines.append(
        f'  {"size":<22} {size_mb:.1f} MB'
        + (f', sha256 {info["sha256"]}' if 'sha256' in info else '')
    )
    model = info.get('model')
    if model:
        h, w = model['input_hw']
        lo, hi = model['depth_range_m']
        lines.append(f'  {"model":<22} {model["name"]}, input {w}x{h} (WxH), {lo:g}-{hi:g} m')
        lines.append(f'  {"exported by":<22} moa_depth_ros {model["package_version"] or "?"}')
        focal = model.get('canonical_focal_px')
        scale = (
            f'depth for {model["canonical_camera"]} ({focal:.4g} px at the input), converted '
            f"with each frame's CameraInfo"
            if focal
            else 'no canonical camera recorded: depth as the model predicts it'
        )
        lines.append(f'  {"metric scale":<22} {scale}')
    for section in ('onnx', 'checkpoint', 'tensorrt'):
        for key, value in (info.get(section) or {}).items():
            lines.append(f'  {key:<22} {_short(key, value)}')
    for key, value in sorted((info.get('metadata') or {}).items()):
        if key == 'config_json':
            value = value if len(value) <= 72 else value[:69] + '...'
        lines.append(f'  {"meta." + key:<22} {value}')
    for problem in info.get('problems', []):
        lines.append(f'  PROBLEM: {problem}')
    return '\n'.join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help='.onnx, .engine/.plan or .safetensors file')
    parser.add_argument('--json', action='store_true', help='print JSON instead of text')
    parser.add_argument('--no-sha256', action='store_true', help='skip hashing the file')


def run(args: argparse.Namespace) -> int:
    info = describe_model_file(args.model, with_sha256=not args.no_sha256)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(format_description(info))
    return 2 if info['problems'] else 0
