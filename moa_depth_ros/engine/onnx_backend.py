"""The ONNX Runtime backend, and reading an ONNX file's metadata without loading the graph.

``OnnxRuntimeEngine`` runs an exported model with the CUDA execution provider when ONNX
Runtime has one, else the CPU provider, and checks the file against its own metadata
(tensor names, input size) before the first frame. ``read_onnx_info`` reads the top-level
fields of the ONNX protobuf (metadata_props, opset, producer) directly from the wire format,
skipping the graph, so ``moa-depth info`` and the TensorRT builder need neither the ``onnx``
package nor a session.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib
from typing import Any, BinaryIO, Sequence

import numpy as np

from moa_depth_ros.engine.base import INPUT_NAME, OUTPUT_NAMES, DepthEngine, ModelMetadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

_LOG = logging.getLogger(__name__)
CUDA_PROVIDER = 'CUDAExecutionProvider'
CPU_PROVIDER = 'CPUExecutionProvider'

# ModelProto field numbers (onnx/onnx.proto).
_IR_VERSION, _PRODUCER_NAME, _PRODUCER_VERSION = 1, 2, 3
_OPSET_IMPORT, _METADATA_PROPS = 8, 14


@dataclasses.dataclass(frozen=True)
class OnnxFileInfo:
    """Top-level facts of an ONNX file: what ``moa-depth info`` prints."""

    ir_version: int
    producer: str
    opsets: dict[str, int]
    metadata_props: dict[str, str]


def _read_varint(f: BinaryIO) -> int | None:
    shift = result = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift == 0:
                return None
            raise ValueError('truncated varint')
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError('varint longer than 10 bytes')


def _parse_fields(data: bytes) -> dict[int, list[Any]]:
    return _scan_fields(io.BytesIO(data), len(data), wanted=None)


def _scan_fields(f: BinaryIO, end: int, wanted: set[int] | None) -> dict[int, list[Any]]:
    """Read protobuf fields until ``end``; keep ``wanted`` ones, seek past the rest."""
    fields: dict[int, list[Any]] = {}
    while f.tell() < end:
        key = _read_varint(f)
        if key is None:
            break
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError('field number 0')
        if wire_type == 0:
            value: Any = _read_varint(f)
            if value is None:
                raise ValueError('truncated varint')
        elif wire_type == 1:
            value = f.read(8)
        elif wire_type == 5:
            value = f.read(4)
        elif wire_type == 2:
            length = _read_varint(f)
            if length is None or f.tell() + length > end:
                raise ValueError('length-delimited field runs past the end of the file')
            if wanted is not None and number not in wanted:
                f.seek(length, os.SEEK_CUR)
                continue
            value = f.read(length)
        else:
            raise ValueError(f'unsupported wire type {wire_type}')
        if wanted is None or number in wanted:
            fields.setdefault(number, []).append(value)
    return fields


def read_onnx_info(path: str | os.PathLike) -> OnnxFileInfo:
    """Read an ONNX file's ir_version, opsets, producer and metadata_props.

    Raises EngineError for a missing or non-ONNX file; the graph itself is skipped, so this
    is fast even for a 350 MB model.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, 'rb') as f:
            top = _scan_fields(
                f,
                size,
                wanted={_IR_VERSION, _PRODUCER_NAME, _OPSET_IMPORT, _METADATA_PROPS},
            )
        props = {}
        for entry in top.get(_METADATA_PROPS, []):
            kv = _parse_fields(entry)
            key = kv.get(1, [b''])[0].decode('utf-8')
            props[key] = kv.get(2, [b''])[0].decode('utf-8')
        opsets = {}
        for entry in top.get(_OPSET_IMPORT, []):
            kv = _parse_fields(entry)
            opsets[kv.get(1, [b''])[0].decode('utf-8')] = int(kv.get(2, [0])[0])
        ir_version = int(top.get(_IR_VERSION, [0])[0])
        producer = top.get(_PRODUCER_NAME, [b''])[0].decode('utf-8')
    except FileNotFoundError as e:
        raise EngineError(f'ONNX model {path!r} does not exist') from e
    except OSError as e:
        raise EngineError(f'cannot read ONNX model {path!r}: {e}') from e
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise EngineError(f'{path}: not a valid ONNX file (corrupt or truncated): {e}') from e
    if ir_version <= 0 or not opsets:
        raise EngineError(
            f'{path}: not a valid ONNX file (no ir_version or opset_import); '
            f're-export it with `python -m training export`'
        )
    return OnnxFileInfo(
        ir_version=ir_version, producer=producer, opsets=opsets, metadata_props=props
    )


def read_onnx_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Return the validated ``ModelMetadata`` embedded in an ONNX file's metadata_props."""
    return ModelMetadata.from_dict(read_onnx_info(path).metadata_props, source=os.fspath(path))


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Pick execution providers: CUDA then CPU when CUDA is present, else CPU only."""
    if device == 'cpu':
        return [CPU_PROVIDER]
    if device in ('auto', 'cuda', 'gpu') or device.startswith('cuda:'):
        if CUDA_PROVIDER in available:
            return [CUDA_PROVIDER, CPU_PROVIDER]
        if device == 'auto':
            return [CPU_PROVIDER]
        raise EngineError(
            f'device {device!r} asked for CUDA, but this onnxruntime has only '
            f'{list(available)}; install onnxruntime-gpu or use device:=cpu'
        )
    raise ConfigError(f'device must be auto, cpu, cuda or cuda:N, got {device!r}')


def _static_dim(dim: Any) -> int | None:
    """Return an ONNX Runtime dim as an int when static, None when symbolic."""
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxRuntimeEngine(DepthEngine):
    """An exported ``.onnx`` depth model run by ONNX Runtime."""

    backend = 'onnxruntime'

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = 'auto',
        intra_op_threads: int | None = None,
        spin_wait: bool = False,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise EngineError(f'ONNX model {os.fspath(path)!r} does not exist')
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ConfigError(f'intra_op_threads must be >= 0, got {intra_op_threads}')
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        # ONNX Runtime's worker threads busy-wait for the next run by default. A camera
        # delivers frames tens of milliseconds apart, so on a robot that is a core burnt for
        # ~2 ms less latency per run (measured: 48 vs 8.6 ms of process CPU per frame for the
        # quickstart model at 15 Hz). Off unless asked for.
        spinning = '1' if spin_wait else '0'
        options.add_session_config_entry('session.intra_op.allow_spinning', spinning)
        options.add_session_config_entry('session.inter_op.allow_spinning', spinning)
        self.spin_wait = bool(spin_wait)
        chosen = list(providers or choose_providers(device, ort.get_available_providers()))
        provider_options: list[dict[str, str]] = []
        for name in chosen:
            if name == CUDA_PROVIDER and device.startswith('cuda:'):
                provider_options.append({'device_id': device.split(':', 1)[1]})
            else:
                provider_options.append({})
        try:
            self.session = ort.InferenceSession(
                os.fspath(self.path),
                sess_options=options,
                providers=chosen,
                provider_options=provider_options,
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise EngineError(
                f'{self.path}: ONNX Runtime cannot load the model (corrupt, truncated or not '
                f'ONNX): {type(e).__name__}: {e}'
            ) from e
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(ModelMetadata.from_dict(props, source=os.fspath(self.path)))
        self.providers = list(self.session.get_providers())
        if CUDA_PROVIDER in chosen and CUDA_PROVIDER not in self.providers:
            # ONNX Runtime falls back to the CPU when the CUDA/cuDNN libraries fail to load.
            _LOG.warning('%s: CUDA execution provider unavailable, running on the CPU', self.path)
        self._fixed_batch = self._validate_io()

    def _validate_io(self) -> int | None:
        """Check names and shapes against the metadata; return the static batch, if any."""
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        in_names = [i.name for i in inputs]
        out_names = [o.name for o in outputs]
        if in_names != [INPUT_NAME] or out_names != list(OUTPUT_NAMES):
            raise ModelMetadataError(
                f'{self.path}: the graph must have input {INPUT_NAME!r} and outputs '
                f'{list(OUTPUT_NAMES)} in that order, got inputs {in_names} and outputs '
                f'{out_names}; re-export it with `python -m training export`'
            )
        h, w = self.input_hw
        for tensor, channels in ((inputs[0], 3), (outputs[0], 1), (outputs[1], 1)):
            shape = list(tensor.shape)
            dims = [_static_dim(d) for d in shape[1:]]
            if len(shape) != 4 or any(
                d is not None and d != e for d, e in zip(dims, (channels, h, w))
            ):
                raise ModelMetadataError(
                    f'{self.path}: tensor {tensor.name!r} has shape {shape}, but the metadata '
                    f'says the model is [N, {channels}, {h}, {w}]'
                )
            if tensor.type != 'tensor(float)':
                raise ModelMetadataError(
                    f'{self.path}: tensor {tensor.name!r} must be float32, got {tensor.type}'
                )
        return _static_dim(inputs[0].shape[0])

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model; a static-batch model gets a larger batch one chunk at a time."""
        if self.session is None:
            raise EngineError(f'{self.path}: engine is closed')
        x = self.check_input(image)
        batch = self._fixed_batch
        if batch is None or x.shape[0] == batch:
            depth, confidence = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        elif x.shape[0] % batch == 0:
            parts = [
                self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i : i + batch]})
                for i in range(0, x.shape[0], batch)
            ]
            depth = np.concatenate([p[0] for p in parts], axis=0)
            confidence = np.concatenate([p[1] for p in parts], axis=0)
        else:
            raise EngineError(
                f'{self.path}: model has a static batch of {batch}; got a batch of {x.shape[0]}'
            )
        return (
            np.asarray(depth, dtype=np.float32),
            np.asarray(confidence, dtype=np.float32),
        )

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it when unreferenced). Idempotent."""
        self.session = None

    def describe(self) -> str:
        """One line for logs: model and the execution provider actually used."""
        return f'{super().describe()} [{self.providers[0] if self.providers else "?"}]'
