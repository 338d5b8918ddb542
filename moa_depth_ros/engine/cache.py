"""Engine files on disk: hashing, atomic writes, the TensorRT sidecar and the engine cache.

A TensorRT engine is only valid for the GPU model and TensorRT version that built it, and it
carries none of the network's metadata. So every engine travels with a sidecar JSON file
(``model.engine`` -> ``model.engine.json``) that records what it was built from and for.
The node may build an engine from an ONNX file on first start; it is cached under a key of
(ONNX sha256, TensorRT version, GPU name, precision), so a restart never rebuilds it.

Nothing here imports TensorRT, so all of it is testable on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
from typing import Any, Mapping

from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

# Re-exported: the engine modules and their tests write through these.
from moa_depth_ros.fileio import atomic_write_bytes, atomic_write_text, new_file_mode  # noqa: F401

SIDECAR_FORMAT = 'moa_depth_ros.tensorrt_sidecar'
SIDECAR_FORMAT_VERSION = 1
PRECISIONS = ('fp32', 'fp16')
# Overrides the engine cache directory (the node also exposes it as a parameter).
CACHE_DIR_ENV = 'MOA_DEPTH_ENGINE_CACHE'

PathLike = str | os.PathLike


def file_sha256(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks (engines can be hundreds of MB)."""
    digest = hashlib.sha256()
    try:
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(chunk_bytes), b''):
                digest.update(chunk)
    except OSError as e:
        raise EngineError(f'cannot read {os.fspath(path)!r}: {e}') from e
    return digest.hexdigest()


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


@dataclasses.dataclass(frozen=True)
class EngineSidecar:
    """What a serialized TensorRT engine was built from and for (``<engine>.json``)."""

    tensorrt_version: str
    gpu_name: str
    precision: str
    onnx_sha256: str
    engine_sha256: str
    metadata: ModelMetadata
    # (min, opt, max) batch of the optimisation profile, or None for a static-batch engine.
    batch_profile: tuple[int, int, int] | None = None
    fp32_layers: int = 0
    workspace_bytes: int = 0
    # What the build asked for; differs from ``precision`` when the GPU lacked fast FP16.
    requested_precision: str = ''
    created_utc: str = dataclasses.field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        for name in ('precision', 'requested_precision'):
            value = getattr(self, name)
            if value not in PRECISIONS and not (name == 'requested_precision' and value == ''):
                raise ModelMetadataError(
                    f'sidecar {name} must be one of {list(PRECISIONS)}, got {value!r}'
                )

    def to_dict(self) -> dict[str, Any]:
        """Serialise to the JSON object written next to the engine."""
        return {
            'format': SIDECAR_FORMAT,
            'format_version': SIDECAR_FORMAT_VERSION,
            'tensorrt_version': self.tensorrt_version,
            'gpu_name': self.gpu_name,
            'precision': self.precision,
            'requested_precision': self.requested_precision or self.precision,
            'onnx_sha256': self.onnx_sha256,
            'engine_sha256': self.engine_sha256,
            'batch_profile': list(self.batch_profile) if self.batch_profile else None,
            'fp32_layers': self.fp32_layers,
            'workspace_bytes': self.workspace_bytes,
            'created_utc': self.created_utc,
            'metadata': self.metadata.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = '<sidecar>') -> EngineSidecar:
        """Parse and validate a sidecar object; ``source`` names the file in errors."""
        if data.get('format') != SIDECAR_FORMAT:
            raise ModelMetadataError(
                f'{source}: not a moa_depth_ros engine sidecar (format={data.get("format")!r})'
            )
        version = data.get('format_version')
        if version != SIDECAR_FORMAT_VERSION:
            raise ModelMetadataError(
                f'{source}: sidecar format_version {version!r} is not supported '
                f'(expected {SIDECAR_FORMAT_VERSION}); rebuild the engine'
            )
        required = ('tensorrt_version', 'gpu_name', 'precision', 'onnx_sha256', 'engine_sha256')
        missing = [key for key in (*required, 'metadata') if key not in data]
        if missing:
            raise ModelMetadataError(f'{source}: sidecar lacks {", ".join(missing)}')
        if not isinstance(data['metadata'], Mapping):
            raise ModelMetadataError(f'{source}: sidecar "metadata" must be an object')
        profile = data.get('batch_profile')
        try:
            batch_profile = None if profile is None else tuple(int(v) for v in profile)
        except (TypeError, ValueError) as e:
            raise ModelMetadataError(f'{source}: malformed batch_profile {profile!r}') from e
        if batch_profile is not None and (
            len(batch_profile) != 3
            or not 1 <= batch_profile[0] <= batch_profile[1]
            or batch_profile[1] > batch_profile[2]
        ):
            raise ModelMetadataError(
                f'{source}: batch_profile must be [min, opt, max] with 1 <= min <= opt <= max, '
                f'got {profile!r}'
            )
        return cls(
            tensorrt_version=str(data['tensorrt_version']),
            gpu_name=str(data['gpu_name']),
            precision=str(data['precision']),
            onnx_sha256=str(data['onnx_sha256']),
            engine_sha256=str(data['engine_sha256']),
            metadata=ModelMetadata.from_dict(
                {str(k): str(v) for k, v in data['metadata'].items()}, source=source
            ),
            batch_profile=batch_profile,
            fp32_layers=int(data.get('fp32_layers', 0)),
            workspace_bytes=int(data.get('workspace_bytes', 0)),
            requested_precision=str(data.get('requested_precision', '')),
            created_utc=str(data.get('created_utc', '')),
        )


def sidecar_path(engine_path: PathLike) -> pathlib.Path:
    """Return the sidecar path of an engine: ``model.engine`` -> ``model.engine.json``."""
    engine_path = pathlib.Path(engine_path)
    return engine_path.with_name(engine_path.name + '.json')


def write_sidecar(engine_path: PathLike, sidecar: EngineSidecar) -> pathlib.Path:
    """Write the sidecar JSON of ``engine_path`` atomically; return its path."""
    return atomic_write_text(
        sidecar_path(engine_path), json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + '\n'
    )


def read_sidecar(engine_path: PathLike) -> EngineSidecar:
    """Read and validate the sidecar of ``engine_path``; ModelMetadataError if absent/bad."""
    path = sidecar_path(engine_path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError as e:
        raise ModelMetadataError(
            f'{os.fspath(engine_path)}: no sidecar {path.name!r} next to the engine, so its '
            f'input size, depth range and target GPU are unknown; rebuild it with '
            f'`python -m training build-engine --onnx MODEL.onnx --output '
            f'{os.fspath(engine_path)}`'
        ) from e
    except OSError as e:
        raise ModelMetadataError(f'cannot read sidecar {os.fspath(path)!r}: {e}') from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelMetadataError(f'{os.fspath(path)}: sidecar is not valid JSON: {e}') from e
    if not isinstance(data, dict):
        raise ModelMetadataError(f'{os.fspath(path)}: sidecar must be a JSON object')
    return EngineSidecar.from_dict(data, source=os.fspath(path))


def rebuild_hint(engine_path: PathLike, onnx_hint: str = 'MODEL.onnx') -> str:
    """Return the command a user runs to rebuild an engine for this machine."""
    return (
        f'rebuild it on this machine with `python -m training build-engine --onnx {onnx_hint} '
        f'--output {os.fspath(engine_path)}`, or give the node the .onnx file with '
        f'backend:=tensorrt to build and cache one on first start'
    )


def check_sidecar_compatible(
    sidecar: EngineSidecar, *, tensorrt_version: str, gpu_name: str, engine_path: PathLike
) -> None:
    """Refuse an engine built for another GPU model or TensorRT version.

    TensorRT engines hold kernels chosen and compiled for one GPU and one TensorRT release;
    deserialising a foreign one fails deep inside TensorRT or, worse, runs wrong kernels.
    """
    problems = []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(
            f'TensorRT {sidecar.tensorrt_version} (this machine has {tensorrt_version})'
        )
    if sidecar.gpu_name != gpu_name:
        problems.append(f'GPU {sidecar.gpu_name!r} (this machine has {gpu_name!r})')
    if problems:
        raise EngineError(
            f'{os.fspath(engine_path)}: engine was built for {" and ".join(problems)}; '
            f'TensorRT engines only run where they were built. '
            + rebuild_hint(
                engine_path, onnx_hint=f'<model with sha256 {sidecar.onnx_sha256[:12]}>'
            )
        )


def default_cache_dir() -> pathlib.Path:
    """Engine cache directory: $MOA_DEPTH_ENGINE_CACHE, else ~/.cache/moa_depth_ros/engines."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return pathlib.Path(override).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    return pathlib.Path(base).expanduser() / 'moa_depth_ros' / 'engines'


def engine_cache_key(
    onnx_sha256: str, tensorrt_version: str, gpu_name: str, precision: str
) -> str:
    """Return the cache key of an engine: what decides whether a cached one can be reused."""
    if precision not in PRECISIONS:
        raise ConfigError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
    fields = [onnx_sha256, tensorrt_version, gpu_name, precision]
    return hashlib.sha256('\n'.join(fields).encode('utf-8')).hexdigest()[:24]


def cached_engine_path(
    onnx_sha256: str,
    *,
    tensorrt_version: str,
    gpu_name: str,
    precision: str,
    cache_dir: PathLike | None = None,
) -> pathlib.Path:
    """Return where the engine for this (ONNX, TensorRT, GPU, precision) lives in the cache."""
    directory = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = engine_cache_key(onnx_sha256, tensorrt_version, gpu_name, precision)
    return directory / f'{key}.engine'


def cached_engine_is_valid(
    engine_path: PathLike,
    *,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    precision: str,
) -> bool:
    """Tell whether a cached engine and its sidecar exist, agree and match the key fields.

    A half-written pair (crash between engine and sidecar), a corrupt sidecar, or a sidecar
    for other inputs all count as a miss, so the caller rebuilds instead of failing.
    """
    engine_path = pathlib.Path(engine_path)
    if not engine_path.is_file():
        return False
    try:
        sidecar = read_sidecar(engine_path)
    except ModelMetadataError:
        return False
    if (
        sidecar.onnx_sha256 != onnx_sha256
        or sidecar.tensorrt_version != tensorrt_version
        or sidecar.gpu_name != gpu_name
        or (sidecar.requested_precision or sidecar.precision) != precision
    ):
        return False
    return file_sha256(engine_path) == sidecar.engine_sha256


def timing_cache_path(
    cache_dir: PathLike | None, tensorrt_version: str, gpu_name: str
) -> pathlib.Path:
    """Return the TensorRT timing-cache file for one (TensorRT version, GPU) pair."""
    directory = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    tag = hashlib.sha256(f'{tensorrt_version}\n{gpu_name}'.encode('utf-8')).hexdigest()[:16]
    return directory / f'timing-{tag}.cache'
