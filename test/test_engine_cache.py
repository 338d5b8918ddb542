"""Engine files on disk: atomic writes, the TensorRT sidecar, cache keys, paths and the lock."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from moa_depth_ros.engine import cache
from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError

META = ModelMetadata('moa_depthclip', 224, 224, 0.001, 10.0, package_version='0.1.0')


def _sidecar(**changes):
    fields = {
        'tensorrt_version': '10.3.0',
        'gpu_name': 'NVIDIA Jetson Orin',
        'precision': 'fp16',
        'onnx_sha256': 'a' * 64,
        'engine_sha256': 'b' * 64,
        'metadata': META,
        'batch_profile': (1, 1, 4),
        'fp32_layers': 25,
    }
    fields.update(changes)
    return cache.EngineSidecar(**fields)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / 'sub' / 'model.engine'
    cache.atomic_write_bytes(target, b'old')
    cache.atomic_write_bytes(target, b'new contents')
    assert target.read_bytes() == b'new contents'
    assert sorted(p.name for p in target.parent.iterdir()) == ['model.engine']


def test_atomic_writes_are_readable_by_other_users_and_keep_a_chosen_mode(tmp_path):
    # A node running as another user (or in a container) must be able to read the engine
    # and sidecar: mkstemp's 0600 must not leak into the written file.
    previous = os.umask(0o022)
    try:
        engine = cache.atomic_write_bytes(tmp_path / 'model.engine', b'engine')
        sidecar = cache.write_sidecar(engine, _sidecar())
    finally:
        os.umask(previous)
    assert engine.stat().st_mode & 0o777 == 0o644
    assert sidecar.stat().st_mode & 0o777 == 0o644
    os.chmod(engine, 0o640)
    cache.atomic_write_bytes(engine, b'rebuilt')
    assert engine.stat().st_mode & 0o777 == 0o640


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'model.engine'
    target.write_bytes(b'good engine')

    def boom(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError, match='disk full'):
        cache.atomic_write_bytes(target, b'half')
    assert target.read_bytes() == b'good engine'
    assert [p.name for p in tmp_path.iterdir()] == ['model.engine']


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / 'm.engine'
    written = cache.write_sidecar(engine, _sidecar())
    assert written.name == 'm.engine.json'
    data = json.loads(written.read_text())
    assert data['gpu_name'] == 'NVIDIA Jetson Orin'
    assert data['metadata']['input_height'] == '224'
    back = cache.read_sidecar(engine)
    assert back.metadata == META
    assert back.batch_profile == (1, 1, 4)
    assert back.precision == back.requested_precision == 'fp16'


def test_missing_sidecar_says_how_to_rebuild(tmp_path):
    engine = tmp_path / 'm.engine'
    engine.write_bytes(b'x')
    with pytest.raises(ModelMetadataError, match='python -m training build-engine'):
        cache.read_sidecar(engine)


@pytest.mark.parametrize(
    'mutate, message',
    [
        (lambda d: d.update(format='something else'), 'not a moa_depth_ros engine sidecar'),
        (lambda d: d.update(format_version=99), 'format_version 99'),
        (lambda d: d.pop('gpu_name'), 'lacks gpu_name'),
        (lambda d: d['metadata'].pop('max_depth_m'), 'lacks max_depth_m'),
        (lambda d: d['metadata'].update(output_names='d,c'), 'outputs must be named'),
        (lambda d: d.update(batch_profile=[4, 2, 8]), 'batch_profile'),
        (lambda d: d.update(precision='int4'), 'precision'),
    ],
)
def test_bad_sidecars_are_rejected_with_the_field_named(tmp_path, mutate, message):
    engine = tmp_path / 'm.engine'
    data = _sidecar().to_dict()
    mutate(data)
    cache.sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelMetadataError, match=message):
        cache.read_sidecar(engine)


def test_sidecar_that_is_not_json(tmp_path):
    engine = tmp_path / 'm.engine'
    cache.sidecar_path(engine).write_text('{not json')
    with pytest.raises(ModelMetadataError, match='not valid JSON'):
        cache.read_sidecar(engine)


ORIN = cache.GpuInfo('Orin', '8.7', 16, 64 << 30)
ORIN_NANO = cache.GpuInfo('Orin', '8.7', 8, 8 << 30)
PASSED = {'passed': True, 'inputs': {}}


def _gpu_sidecar(gpu=ORIN, **changes):
    fields = {
        'gpu_name': gpu.name,
        'gpu_compute_capability': gpu.compute_capability,
        'gpu_sm_count': gpu.sm_count,
        'gpu_memory_bytes': gpu.total_memory_bytes,
        'parity': PASSED,
    }
    return _sidecar(**{**fields, **changes})


def test_sidecar_v2_round_trips_gpu_facts_build_and_parity(tmp_path):
    engine = tmp_path / 'm.engine'
    side = _gpu_sidecar(
        requested_precision='fp16',
        typing='strongly_typed',
        tf32=False,
        fp32_layer_names=('/norm/LayerNormalization',),
        build_options={'precision': 'fp16', 'batch_profile': [1, 1, 4]},
        package_version='0.1.0',
        parity={'passed': True, 'inputs': {'random': {'mean_rel_err': 1e-4}}},
    )
    cache.write_sidecar(engine, side)
    data = json.loads(cache.sidecar_path(engine).read_text())
    assert data['format_version'] == 2 and data['gpu_sm_count'] == 16
    back = cache.read_sidecar(engine)
    assert back == side and back.gpu == ORIN


def test_version_1_sidecars_are_still_read_but_never_a_cache_hit(tmp_path):
    engine = tmp_path / 'old.engine'
    engine.write_bytes(b'e')
    data = _sidecar(gpu_name='Orin', engine_sha256=cache.file_sha256(engine)).to_dict()
    data['format_version'] = 1
    for key in ('gpu_compute_capability', 'gpu_sm_count', 'gpu_memory_bytes', 'typing', 'tf32'):
        data.pop(key)
    for key in ('fp32_layer_names', 'build_options', 'package_version', 'parity'):
        data.pop(key)
    cache.sidecar_path(engine).write_text(json.dumps(data))
    old = cache.read_sidecar(engine)
    assert old.gpu_name == 'Orin' and old.parity == {}
    key = {'onnx_sha256': 'a' * 64, 'tensorrt_version': '10.3.0', 'precision': 'fp16'}
    # Neither checked against ONNX Runtime nor identified beyond its name: rebuilt.
    assert not cache.cached_engine_is_valid(engine, gpu=cache.GpuInfo('Orin'), **key)


def test_engine_for_another_gpu_is_refused_with_rebuild_command():
    rtx = cache.GpuInfo('NVIDIA RTX 4090', '8.9', 128, 24 << 30)
    with pytest.raises(EngineError) as info:
        cache.check_sidecar_compatible(
            _gpu_sidecar(), tensorrt_version='10.3.0', gpu=rtx, engine_path='m.engine'
        )
    message = str(info.value)
    assert "GPU 'Orin'" in message and 'NVIDIA RTX 4090' in message
    assert 'python -m training build-engine' in message and 'TensorRT 10' not in message


def test_same_name_another_gpu_is_refused():
    # Every Jetson Orin reports "Orin": an engine tuned for an AGX Orin's 16 SMs is not an
    # Orin Nano's.
    with pytest.raises(EngineError, match=r'a Orin with 16 SMs \(this one has 8\)'):
        cache.check_sidecar_compatible(
            _gpu_sidecar(), tensorrt_version='10.3.0', gpu=ORIN_NANO, engine_path='e'
        )
    other_cc = cache.GpuInfo('Orin', '9.0', 16, 64 << 30)
    with pytest.raises(EngineError, match=r'compute capability 8\.7 \(this GPU has 9\.0\)'):
        cache.check_sidecar_compatible(
            _gpu_sidecar(), tensorrt_version='10.3.0', gpu=other_cc, engine_path='e'
        )
    # A version 1 sidecar records the name only: the name is all that can be compared.
    cache.check_sidecar_compatible(
        _sidecar(gpu_name='Orin'), tensorrt_version='10.3.0', gpu=ORIN_NANO, engine_path='e'
    )


def test_engine_for_another_tensorrt_version_is_refused():
    with pytest.raises(EngineError, match=r'TensorRT 10\.3\.0 \(this machine has 10\.7\.0\)'):
        cache.check_sidecar_compatible(
            _gpu_sidecar(), tensorrt_version='10.7.0', gpu=ORIN, engine_path='e'
        )
    cache.check_sidecar_compatible(
        _gpu_sidecar(), tensorrt_version='10.3.0', gpu=ORIN, engine_path='e'
    )


def test_cache_key_depends_on_every_field_and_is_stable():
    base = {
        'onnx_sha256': 'a' * 64,
        'tensorrt_version': '10.3.0',
        'gpu': ORIN,
        'precision': 'fp16',
        'options_fingerprint': cache.build_fingerprint({'workspace_bytes': 1}),
        'package_version': '0.1.0',
    }
    key = cache.engine_cache_key(**base)
    assert key == cache.engine_cache_key(**base)
    others = {
        'onnx_sha256': 'c' * 64,
        'tensorrt_version': '11.0.0',
        'gpu': ORIN_NANO,
        'precision': 'fp32',
        'options_fingerprint': cache.build_fingerprint({'workspace_bytes': 2}),
        'package_version': '0.2.0',
    }
    for name, other in others.items():
        assert cache.engine_cache_key(**{**base, name: other}) != key, name
    for gpu in (
        cache.GpuInfo('Orin', '8.6', 16, 64 << 30),
        cache.GpuInfo('Orin', '8.7', 16, 32 << 30),
    ):
        assert cache.engine_cache_key(**{**base, 'gpu': gpu}) != key
    with pytest.raises(ConfigError, match='precision'):
        cache.engine_cache_key('a', '10', ORIN, 'int3')


def test_build_fingerprint_is_stable_and_order_free():
    a = cache.build_fingerprint({'precision': 'fp16', 'batch_profile': [1, 1, 8]})
    assert a == cache.build_fingerprint({'batch_profile': [1, 1, 8], 'precision': 'fp16'})
    assert a != cache.build_fingerprint({'precision': 'fp16', 'batch_profile': [1, 2, 8]})


def test_cache_dir_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert cache.default_cache_dir() == tmp_path / 'xdg' / 'moa_depth_ros' / 'engines'
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / 'mine'))
    assert cache.default_cache_dir() == tmp_path / 'mine'
    path = cache.cached_engine_path(
        'a' * 64, tensorrt_version='10.3.0', gpu=ORIN, precision='fp16'
    )
    assert path.parent == tmp_path / 'mine' and path.suffix == '.engine'
    explicit = cache.cached_engine_path(
        'a' * 64, tensorrt_version='10.3.0', gpu=ORIN, precision='fp16', cache_dir=tmp_path
    )
    assert explicit == tmp_path / path.name


def test_cached_engine_validity(tmp_path):
    engine = tmp_path / 'k.engine'
    key = {'onnx_sha256': 'a' * 64, 'tensorrt_version': '10.3.0', 'gpu': ORIN, 'precision': 'fp16'}
    assert not cache.cached_engine_is_valid(engine, **key)
    engine.write_bytes(b'engine bytes')
    assert not cache.cached_engine_is_valid(engine, **key)  # no sidecar yet
    sha = cache.file_sha256(engine)
    options = {'precision': 'fp16', 'workspace_bytes': 1 << 30}
    cache.write_sidecar(
        engine,
        _gpu_sidecar(engine_sha256=sha, build_options=options, package_version='0.1.0'),
    )
    assert cache.cached_engine_is_valid(engine, **key)
    fingerprint = cache.build_fingerprint(options)
    assert cache.cached_engine_is_valid(
        engine, **key, options_fingerprint=fingerprint, package_version='0.1.0'
    )
    assert not cache.cached_engine_is_valid(engine, **key, options_fingerprint='f' * 16)
    assert not cache.cached_engine_is_valid(engine, **key, package_version='0.2.0')
    assert not cache.cached_engine_is_valid(engine, **{**key, 'gpu': ORIN_NANO})
    # An engine whose parity check failed (or never ran) is never served from the cache.
    cache.write_sidecar(engine, _gpu_sidecar(engine_sha256=sha, parity={'passed': False}))
    assert not cache.cached_engine_is_valid(engine, **key)
    cache.write_sidecar(engine, _gpu_sidecar(engine_sha256=sha))
    engine.write_bytes(b'engine bytes, truncated or replaced')
    assert not cache.cached_engine_is_valid(engine, **key)


def test_fp32_fallback_engine_still_hits_the_fp16_key(tmp_path):
    engine = tmp_path / 'k.engine'
    engine.write_bytes(b'e')
    side = _gpu_sidecar(
        engine_sha256=cache.file_sha256(engine), precision='fp32', requested_precision='fp16'
    )
    cache.write_sidecar(engine, side)
    key = {'onnx_sha256': 'a' * 64, 'tensorrt_version': '10.3.0', 'gpu': ORIN}
    assert cache.cached_engine_is_valid(engine, precision='fp16', **key)
    assert not cache.cached_engine_is_valid(engine, precision='fp32', **key)


def test_timing_cache_path_per_gpu_and_version(tmp_path):
    a = cache.timing_cache_path(tmp_path, '10.3.0', ORIN)
    assert a.parent == tmp_path
    assert a != cache.timing_cache_path(tmp_path, '10.3.0', ORIN_NANO)
    assert a != cache.timing_cache_path(tmp_path, '10.4.0', ORIN)


_LOCK_CHILD = """
import sys, time
from moa_depth_ros.engine import cache
with cache.engine_lock(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_engine_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    engine = tmp_path / 'sub' / 'k.engine'
    env = {**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, '-c', _LOCK_CHILD, str(engine), '30'],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == 'locked'
        fd = os.open(engine.with_name('k.engine.lock'), os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.kill()  # a builder that dies mid-build must not leave the cache locked
        holder.wait(timeout=30)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    started = time.monotonic()
    with cache.engine_lock(engine) as lock_path:
        assert lock_path.name == 'k.engine.lock'
    assert time.monotonic() - started < 5


def test_file_sha256_of_missing_file_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match='cannot read'):
        cache.file_sha256(tmp_path / 'nope.onnx')
