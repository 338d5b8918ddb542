"""Engine files on disk: hashing, atomic writes, the TensorRT sidecar and the engine cache.

A TensorRT engine is only valid for the GPU model and TensorRT version that built it, and it
carries none of the network's metadata. So every engine travels with a sidecar JSON file
(``model.engine`` -> ``model.engine.json``) that records what it was built from and for,
and how it compared with ONNX Runtime FP32 after the build. The node may build an engine
from an ONNX file on first start; it is cached under a key of everything that changes the
engine (ONNX sha256, TensorRT version, the GPU's name, compute capability, SM count and
memory, precision, build options, package version), so a restart never rebuilds it and an
Orin Nano never takes an engine tuned for an AGX Orin (both report the name "Orin").
``engine_lock`` serialises builders of one key across processes (two nodes starting at
once build once).

Nothing here imports TensorRT, so all of it is testable on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Iterator, Mapping

from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

# Re-exported: the engine modules and their tests write through these.
from moa_depth_ros.fileio import atomic_write_bytes, atomic_write_text, new_file_mode  # noqa: F401

SIDECAR_FORMAT = 'moa_depth_ros.tensorrt_sidecar'
SIDECAR_FORMAT_VERSION = 2
# Version 1 sidecars (no GPU facts, no parity record) are still read, e.g. by `info`.
READABLE_FORMAT_VERSIONS = (1, 2)
PRECISIONS = ('fp32', 'fp16')
# Overrides the engine cache directory (the node also exposes it as a parameter).
CACHE_DIR_ENV = 'MOA_DEPTH_ENGINE_CACHE'

PathLike = str | os.PathLike
_LOG = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """What identifies a GPU to TensorRT: an engine is tuned for all of these together."""

    name: str
    # 'major.minor'; TensorRT kernels are compiled per compute capability.
    compute_capability: str = ''
    sm_count: int = 0
    total_memory_bytes: int = 0

    def key_fields(self) -> list[str]:
        return [
            self.name,
            self.compute_capability,
            str(self.sm_count),
            str(self.total_memory_bytes),
        ]

    def describe(self) -> str:
        return (
            f'{self.name} (compute {self.compute_capability or "?"}, {self.sm_count} SMs, '
            f'{self.total_memory_bytes / (1 << 30):.1f} GiB)'
        )


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
    gpu_compute_capability: str = ''
    gpu_sm_count: int = 0
    gpu_memory_bytes: int = 0
    # How the engine was built: 'weakly_typed' (TensorRT 10 builder flags) or
    # 'strongly_typed' (types from the ONNX graph, TensorRT 11); TF32 on or off.
    typing: str = ''
    tf32: bool = False
    # Names of the layers (TensorRT 10) or ONNX nodes (TensorRT 11) kept in FP32.
    fp32_layer_names: tuple[str, ...] = ()
    # ``cache.build_fingerprint`` of the options, and the package that built it.
    build_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    package_version: str = ''
    # The post-build comparison with ONNX Runtime FP32 (see tensorrt_builder.check_parity).
    parity: Mapping[str, Any] = dataclasses.field(default_factory=dict)

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
            'gpu_compute_capability': self.gpu_compute_capability,
            'gpu_sm_count': self.gpu_sm_count,
            'gpu_memory_bytes': self.gpu_memory_bytes,
            'typing': self.typing,
            'tf32': self.tf32,
            'fp32_layer_names': list(self.fp32_layer_names),
            'build_options': dict(self.build_options),
            'package_version': self.package_version,
            'parity': dict(self.parity),
        }

    @property
    def gpu(self) -> GpuInfo:
        return GpuInfo(
            self.gpu_name, self.gpu_compute_capability, self.gpu_sm_count, self.gpu_memory_bytes
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = '<sidecar>') -> EngineSidecar:
        """Parse and validate a sidecar object; ``source`` names the file in errors."""
        if data.get('format') != SIDECAR_FORMAT:
            raise ModelMetadataError(
                f'{source}: not a moa_depth_ros engine sidecar (format={data.get("format")!r})'
            )
        version = data.get('format_version')
        if version not in READABLE_FORMAT_VERSIONS:
            raise ModelMetadataError(
                f'{source}: sidecar format_version {version!r} is not supported '
                f'(expected one of {list(READABLE_FORMAT_VERSIONS)}); rebuild the engine'
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
        for name, kind in (('build_options', Mapping), ('parity', Mapping)):
            if not isinstance(data.get(name, {}), kind):
                raise ModelMetadataError(f'{source}: sidecar {name!r} must be an object')
        try:
            numbers = {
                key: int(data.get(key, 0))
                for key in ('fp32_layers', 'workspace_bytes', 'gpu_sm_count', 'gpu_memory_bytes')
            }
        except (TypeError, ValueError) as e:
            raise ModelMetadataError(f'{source}: sidecar has a malformed number: {e}') from e
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
            fp32_layers=numbers['fp32_layers'],
            workspace_bytes=numbers['workspace_bytes'],
            requested_precision=str(data.get('requested_precision', '')),
            created_utc=str(data.get('created_utc', '')),
            gpu_compute_capability=str(data.get('gpu_compute_capability', '')),
            gpu_sm_count=numbers['gpu_sm_count'],
            gpu_memory_bytes=numbers['gpu_memory_bytes'],
            typing=str(data.get('typing', '')),
            tf32=bool(data.get('tf32', False)),
            fp32_layer_names=tuple(str(n) for n in data.get('fp32_layer_names', ())),
            build_options=dict(data.get('build_options', {})),
            package_version=str(data.get('package_version', '')),
            parity=dict(data.get('parity', {})),
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
    sidecar: EngineSidecar, *, tensorrt_version: str, gpu: GpuInfo, engine_path: PathLike
) -> None:
    """Refuse an engine built for another GPU model or TensorRT version.

    TensorRT engines hold kernels chosen and compiled for one GPU and one TensorRT release;
    deserialising a foreign one fails deep inside TensorRT or, worse, runs wrong kernels.
    The name alone does not identify a GPU (every Jetson Orin is "Orin"), so the compute
    capability and SM count are compared too where the sidecar records them.
    """
    problems = []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(
            f'TensorRT {sidecar.tensorrt_version} (this machine has {tensorrt_version})'
        )
    built = sidecar.gpu
    if built.name != gpu.name:
        problems.append(f'GPU {built.name!r} (this machine has {gpu.name!r})')
    elif built.compute_capability and built.compute_capability != gpu.compute_capability:
        problems.append(
            f'compute capability {built.compute_capability} (this GPU has '
            f'{gpu.compute_capability})'
        )
    elif built.sm_count and built.sm_count != gpu.sm_count:
        problems.append(f'a {built.name} with {built.sm_count} SMs (this one has {gpu.sm_count})')
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


def cache_root(cache_dir: PathLike | None) -> pathlib.Path:
    """Return ``cache_dir`` (``~`` expanded) when given, else ``default_cache_dir()``."""
    return pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def build_fingerprint(options: Mapping[str, Any]) -> str:
    """Return a stable digest of build options (JSON, sorted keys) for the cache key."""
    text = json.dumps(dict(options), sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def engine_cache_key(
    onnx_sha256: str,
    tensorrt_version: str,
    gpu: GpuInfo,
    precision: str,
    *,
    options_fingerprint: str = '',
    package_version: str = '',
) -> str:
    """Return the cache key of an engine: everything that decides whether it can be reused."""
    if precision not in PRECISIONS:
        raise ConfigError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
    fields = [
        onnx_sha256,
        tensorrt_version,
        *gpu.key_fields(),
        precision,
        options_fingerprint,
        package_version,
    ]
    return hashlib.sha256('\n'.join(fields).encode('utf-8')).hexdigest()[:24]


def cached_engine_path(
    onnx_sha256: str,
    *,
    tensorrt_version: str,
    gpu: GpuInfo,
    precision: str,
    options_fingerprint: str = '',
    package_version: str = '',
    cache_dir: PathLike | None = None,
) -> pathlib.Path:
    """Return where the engine for this key lives in the cache."""
    directory = cache_root(cache_dir)
    key = engine_cache_key(
        onnx_sha256,
        tensorrt_version,
        gpu,
        precision,
        options_fingerprint=options_fingerprint,
        package_version=package_version,
    )
    return directory / f'{key}.engine'


def cached_engine_is_valid(
    engine_path: PathLike,
    *,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu: GpuInfo,
    precision: str,
    options_fingerprint: str | None = None,
    package_version: str | None = None,
) -> bool:
    """Tell whether a cached engine and its sidecar exist, agree and match the key fields.

    A half-written pair (crash between engine and sidecar), a corrupt sidecar, a sidecar
    for other inputs or from before parity was recorded, or one whose parity check failed
    all count as a miss, so the caller rebuilds instead of failing. ``options_fingerprint``
    and ``package_version``, where given, must match the sidecar's too.
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
        or sidecar.gpu != gpu
        or (sidecar.requested_precision or sidecar.precision) != precision
        or not sidecar.parity.get('passed', False)
        or (
            options_fingerprint is not None
            and build_fingerprint(sidecar.build_options) != options_fingerprint
        )
        or (package_version is not None and sidecar.package_version != package_version)
    ):
        return False
    return file_sha256(engine_path) == sidecar.engine_sha256


def timing_cache_path(
    cache_dir: PathLike | None, tensorrt_version: str, gpu: GpuInfo
) -> pathlib.Path:
    """Return the TensorRT timing-cache file for one (TensorRT version, GPU) pair."""
    directory = cache_root(cache_dir)
    text = '\n'.join([tensorrt_version, *gpu.key_fields()])
    tag = hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]
    return directory / f'timing-{tag}.cache'


@contextlib.contextmanager
def engine_lock(engine_path: PathLike) -> Iterator[pathlib.Path]:
    """Hold an exclusive inter-process lock on ``<engine>.lock`` for the block.

    ``fcntl.flock`` on a lock file beside the engine: the kernel releases it when the
    holder exits or dies, so a crashed builder never leaves the cache locked. The lock file
    itself stays (removing it would race with a process that just opened it).
    """
    engine_path = pathlib.Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = engine_path.with_name(engine_path.name + '.lock')
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise EngineError(
            f'cannot open the engine cache lock {os.fspath(lock_path)!r}: {e}'
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _LOG.warning(
                'another process is building %s; waiting for it (its engine is then reused)',
                engine_path,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock_path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
