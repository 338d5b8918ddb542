"""Export a ``DepthModel`` to a verified ONNX file, and derive an int8 variant from it.

The exported graph is the model's ``forward()``: input ``image`` float32 [N,3,H,W] in [0,1],
outputs ``depth`` and ``confidence`` float32 [N,1,H,W]; static shape unless
``dynamic_batch``. metadata_props carry ``ModelMetadata`` plus the config digest/json and
opset, so the runtime never guesses sizes or ranges. Opset >= 17 keeps LayerNorm a single
node, which TensorRT can then pin to FP32 in an FP16 engine.

Success is reported only after ``onnx.checker`` passes and ONNX Runtime reproduces the
PyTorch outputs on random input; files are written atomically, so a failed export leaves
no file behind. torch and onnx are imported inside the functions. Used by
``python -m training export``, the quickstart and the development benchmarks
(``tools/bench``); the installed runtime package never imports it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Mapping
import warnings

import numpy as np

from moa_depth_ros import __version__
from moa_depth_ros.engine.accuracy import (  # noqa: F401  (re-exported for training.export)
    ACCURACY_BAR,
    accuracy_holds,
    depth_agreement,
    parity_errors,
)
from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, metadata_from_description
from moa_depth_ros.engine.cache import file_sha256
from moa_depth_ros.errors import ConfigError, EngineError
from moa_depth_ros.fileio import atomic_output

MIN_OPSET = 17
DEFAULT_OPSET = 17
# FP32 parity bound between PyTorch and ONNX Runtime, relative to each output's scale.
DEFAULT_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export produced and how closely ONNX Runtime matched PyTorch."""

    path: pathlib.Path
    opset: int
    dynamic_batch: bool
    metadata: dict[str, str]
    onnx_sha256: str
    size_bytes: int
    verified: bool
    # Parity on random input (None when verification was skipped).
    depth_max_abs_err_m: float | None = None
    depth_rel_err: float | None = None
    confidence_max_abs_err: float | None = None
    confidence_rel_err: float | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """Human-readable multi-line report for the command line."""
        lines = [
            f'exported {self.metadata.get("model_name")} to {self.path}',
            f'  opset {self.opset}, input {INPUT_NAME} '
            f'[{"N" if self.dynamic_batch else 1},3,{self.metadata.get("input_height")},'
            f'{self.metadata.get("input_width")}], outputs {", ".join(OUTPUT_NAMES)}',
            f'  {self.size_bytes / 1e6:.1f} MB, sha256 {self.onnx_sha256}',
        ]
        if self.verified:
            lines.append(
                f'  verified: onnx.checker ok; onnxruntime vs torch depth max abs '
                f'{self.depth_max_abs_err_m:.3g} m (rel {self.depth_rel_err:.3g}), confidence '
                f'max abs {self.confidence_max_abs_err:.3g} (rel {self.confidence_rel_err:.3g})'
            )
        else:
            lines.append('  NOT verified (--skip-verify)')
        lines.append(f'  took {self.seconds:.1f} s')
        return '\n'.join(lines)


def _metadata_props(
    model: Any, opset: int, dynamic_batch: bool, extra: Mapping[str, str] | None
) -> dict[str, str]:
    import torch

    info = {
        'opset': str(opset),
        'dynamic_batch': 'true' if dynamic_batch else 'false',
        'exporter': f'torch.onnx (TorchScript) {torch.__version__}',
    }
    info.update({k: str(v) for k, v in (extra or {}).items()})
    meta = metadata_from_description(
        model.describe(), package_version=__version__, extra=info, source=type(model).__name__
    )
    if tuple(model.input_hw) != meta.input_hw:
        raise ConfigError(
            f'model.input_hw {tuple(model.input_hw)} disagrees with describe() {meta.input_hw}'
        )
    return meta.to_dict()


def _torch_export(model: Any, dummy: Any, path: str, opset: int, dynamic_batch: bool) -> None:
    import torch

    axes = None
    if dynamic_batch:
        axes = {name: {0: 'batch'} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _onnxruntime_outputs(path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, sess_options=options, providers=['CPUExecutionProvider'])
    depth, confidence = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
    return depth, confidence


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    extra_metadata: Mapping[str, str] | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export a ``DepthModel`` to ONNX at ``path`` and verify it before reporting success.

    Raises ConfigError for an opset below 17, EngineError when the checker or the
    onnxruntime-vs-torch comparison fails (relative error above ``tolerance``); then no
    file is written.
    """
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ConfigError(
            f'opset must be >= {MIN_OPSET} (LayerNormalization as one node, kept in FP32 by '
            f'TensorRT), got {opset}'
        )
    started = time.monotonic()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    props = _metadata_props(model, opset, dynamic_batch, extra_metadata)
    h, w = int(props['input_height']), int(props['input_width'])
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    generator = torch.Generator().manual_seed(seed)
    batch = 2 if dynamic_batch else 1
    image = torch.rand((batch, 3, h, w), generator=generator)

    try:
        with atomic_output(path) as tmp_name:
            with torch.no_grad():
                _torch_export(model, image[:1].to(device), tmp_name, opset, dynamic_batch)
                reference = tuple(t.float().cpu().numpy() for t in model(image.to(device)))
            proto = onnx.load(tmp_name)
            del proto.metadata_props[:]
            for key, value in props.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            try:
                onnx.checker.check_model(proto, full_check=True)
            except onnx.checker.ValidationError as e:
                raise EngineError(f'{path}: exported graph fails onnx.checker: {e}') from e
            onnx.save(proto, tmp_name)
            del proto
            errors = {}
            if verify:
                got = _onnxruntime_outputs(tmp_name, image.numpy())
                errors = parity_errors(reference, got)
                worst = max(errors['depth_rel'], errors['confidence_rel'])
                if not worst <= tolerance:
                    raise EngineError(
                        f'{path}: onnxruntime disagrees with torch: depth rel error '
                        f'{errors["depth_rel"]:.3g}, confidence rel error '
                        f'{errors["confidence_rel"]:.3g} (tolerance {tolerance:g}); not written'
                    )
    finally:
        model.train(was_training)
    return ExportReport(
        path=path,
        opset=opset,
        dynamic_batch=dynamic_batch,
        metadata=props,
        onnx_sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        verified=verify,
        depth_max_abs_err_m=errors.get('depth_max_abs'),
        depth_rel_err=errors.get('depth_rel'),
        confidence_max_abs_err=errors.get('confidence_max_abs'),
        confidence_rel_err=errors.get('confidence_rel'),
        seconds=time.monotonic() - started,
    )


def quantize_int8(
    onnx_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    op_types: tuple[str, ...] = ('MatMul',),
) -> pathlib.Path:
    """Write an int8 dynamically quantized copy of an exported model (weights int8).

    Only ``op_types`` are quantized: MatMul (the ViT's attention and MLP weights) maps to
    ONNX Runtime's VNNI int8 GEMM; quantizing Conv gives ConvInteger, which is slower than
    FP32 on x86. metadata_props are carried over plus ``quantization``; atomic write.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from moa_depth_ros.engine.onnx_backend import read_onnx_info

    props = dict(read_onnx_info(onnx_path).metadata_props)
    props['quantization'] = f'int8 dynamic ({", ".join(op_types)} weights, QInt8)'
    output_path = pathlib.Path(output_path)
    with atomic_output(output_path) as tmp_name:
        quantize_dynamic(
            model_input=os.fspath(onnx_path),
            model_output=tmp_name,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types),
        )
        proto = onnx.load(tmp_name)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, tmp_name)
    return output_path
