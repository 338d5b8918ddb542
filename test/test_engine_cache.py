"""Engine files on disk: atomic writes, the TensorRT sidecar, cache keys and paths."""

from __future__ import annotations

import json
import os

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


def test_engine_for_another_gpu_is_refused_with_rebuild_command():
    with pytest.raises(EngineError) as info:
        cache.check_sidecar_compatible(
            _sidecar(),
            tensorrt_version='10.3.0',
            gpu_name='NVIDIA RTX 4090',
            engine_path='m.engine',
        )
    message = str(info.value)
    assert "GPU 'NVIDIA Jetson Orin'" in message and 'NVIDIA RTX 4090' in message
    assert 'python -m training build-engine' in message and 'TensorRT 10' not in message


def test_engine_for_another_tensorrt_version_is_refused():
    with pytest.raises(EngineError, match=r'TensorRT 10\.3\.0 \(this machine has 10\.7\.0\)'):
        cache.check_sidecar_compatible(
            _sidecar(), tensorrt_version='10.7.0', gpu_name='NVIDIA Jetson Orin', engine_path='e'
        )
    cache.check_sidecar_compatible(
        _sidecar(), tensorrt_version='10.3.0', gpu_name='NVIDIA Jetson Orin', engine_path='e'
    )


def test_cache_key_depends_on_every_field_and_is_stable():
    base = ('a' * 64, '10.3.0', 'Orin', 'fp16')
    key = cache.engine_cache_key(*base)
    assert key == cache.engine_cache_key(*base)
    for i, other in enumerate(('c' * 64, '10.4.0', 'RTX 4090', 'fp32')):
        changed = list(base)
        changed[i] = other
        assert cache.engine_cache_key(*changed) != key
    with pytest.raises(ConfigError, match='precision'):
        cache.engine_cache_key('a', '10', 'g', 'int3')


def test_cache_dir_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert cache.default_cache_dir() == tmp_path / 'xdg' / 'moa_depth_ros' / 'engines'
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / 'mine'))
    assert cache.default_cache_dir() == tmp_path / 'mine'
    path = cache.cached_engine_path(
        'a' * 64, tensorrt_version='10.3.0', gpu_name='Orin', precision='fp16'
    )
    assert path.parent == tmp_path / 'mine' and path.suffix == '.engine'
    explicit = cache.cached_engine_path(
        'a' * 64, tensorrt_version='10.3.0', gpu_name='Orin', precision='fp16', cache_dir=tmp_path
    )
    assert explicit == tmp_path / path.name


def test_cached_engine_validity(tmp_path):
    engine = tmp_path / 'k.engine'
    key = {
        'onnx_sha256': 'a' * 64,
        'tensorrt_version': '10.3.0',
        'gpu_name': 'Orin',
        'precision': 'fp16',
    }
    assert not cache.cached_engine_is_valid(engine, **key)
    engine.write_bytes(b'engine bytes')
    assert not cache.cached_engine_is_valid(engine, **key)  # no sidecar yet
    sha = cache.file_sha256(engine)
    cache.write_sidecar(engine, _sidecar(engine_sha256=sha, gpu_name='Orin', onnx_sha256='a' * 64))
    assert cache.cached_engine_is_valid(engine, **key)
    assert not cache.cached_engine_is_valid(engine, **{**key, 'gpu_name': 'Xavier'})
    engine.write_bytes(b'engine bytes, truncated or replaced')
    assert not cache.cached_engine_is_valid(engine, **key)


def test_fp32_fallback_engine_still_hits_the_fp16_key(tmp_path):
    engine = tmp_path / 'k.engine'
    engine.write_bytes(b'e')
    side = _sidecar(
        engine_sha256=cache.file_sha256(engine),
        precision='fp32',
        requested_precision='fp16',
        gpu_name='Old GPU',
    )
    cache.write_sidecar(engine, side)
    key = {'onnx_sha256': 'a' * 64, 'tensorrt_version': '10.3.0', 'gpu_name': 'Old GPU'}
    assert cache.cached_engine_is_valid(engine, precision='fp16', **key)
    assert not cache.cached_engine_is_valid(engine, precision='fp32', **key)


def test_timing_cache_path_per_gpu_and_version(tmp_path):
    a = cache.timing_cache_path(tmp_path, '10.3.0', 'Orin')
    assert a.parent == tmp_path
    assert a != cache.timing_cache_path(tmp_path, '10.3.0', 'RTX')
    assert a != cache.timing_cache_path(tmp_path, '10.4.0', 'Orin')


def test_file_sha256_of_missing_file_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match='cannot read'):
        cache.file_sha256(tmp_path / 'nope.onnx')
