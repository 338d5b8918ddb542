"""Parameter specs of depth_node: types, validation reasons, model path resolution."""

from __future__ import annotations

import dataclasses
import os

import pytest

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.pipeline import PipelineConfig
from moa_depth_ros.runtime import params


def test_settings_fields_are_exactly_the_declared_parameters_with_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(params.NodeSettings)}
    assert fields == {spec.name: spec.default for spec in params.SPECS}
    assert params.READ_ONLY == {
        'model_path',
        'backend',
        'device',
        'precision',
        'cpu_threads',
        'cpu_spin_wait',
        'frames_in_flight',
    }
    for spec in params.SPECS:
        assert spec.description.endswith('.'), spec.name
        assert spec.check(spec.default) is None or spec.name == 'model_path', spec.name


@pytest.mark.parametrize(
    ('name', 'value', 'reason'),
    [
        ('cloud_decimation', True, 'cloud_decimation must be an integer'),
        ('cloud_decimation', 2.0, 'cloud_decimation must be an integer'),
        ('publish_cloud', 1, 'publish_cloud must be true or false'),
        ('depth_encoding', 32, 'depth_encoding must be a string'),
        ('min_depth_m', float('nan'), 'min_depth_m must be finite'),
        ('min_depth_m', -0.1, 'min_depth_m must be >= 0'),
        ('cloud_decimation', 17, 'cloud_decimation must be <= 16'),
        ('diagnostics_period_s', 0.05, 'diagnostics_period_s must be >= 0.1'),
        ('backend', 'cuda', 'backend must be one of auto, tensorrt, onnxruntime, openvino, torch'),
        ('device', 'gpu0', 'device must match'),
        ('image_transport', 'theora', 'image_transport must be one of raw, compressed'),
    ],
)
def test_bad_values_are_refused_with_a_reason_naming_field_and_value(name, value, reason):
    spec = params.SPEC_BY_NAME[name]
    assert reason in spec.check(value)
    assert repr(value) in spec.check(value)
    with pytest.raises(ConfigError, match=reason):
        params.NodeSettings.from_values({name: value})


@pytest.mark.parametrize(
    ('name', 'value'),
    [('device', 'cuda:1'), ('device', 'cpu'), ('max_rate_hz', 15), ('cloud_decimation', 16)],
)
def test_good_values_pass(name, value):
    settings = params.NodeSettings.from_values({name: value})
    assert getattr(settings, name) == value
    if params.SPEC_BY_NAME[name].type_name == 'float':
        assert isinstance(getattr(settings, name), float)  # ints become floats


def test_read_only_parameters_change_only_at_start():
    settings = params.NodeSettings.from_values({'model_path': '/m/a.onnx', 'backend': 'torch'})
    with pytest.raises(ConfigError, match='restart the node with backend:=.onnxruntime'):
        settings.updated({'backend': 'onnxruntime'})
    assert settings.updated({'backend': 'torch'}).backend == 'torch'  # unchanged is fine
    with pytest.raises(ConfigError, match="unknown parameter 'cloud'"):
        settings.updated({'cloud': True})


def test_depth_limits_must_leave_a_range():
    # One check, where the model's own limits are known: the pipeline's depth range.
    from test_pipeline import RowDepth

    from moa_depth_ros.frame.pipeline import DepthPipeline

    inverted = params.NodeSettings.from_values({'min_depth_m': 5.0, 'max_depth_m': 2.0})
    with pytest.raises(
        ConfigError,
        match=r'depth range \[5, 2\] m is empty: min_depth_m must be below max_depth_m',
    ):
        DepthPipeline(RowDepth(), PipelineConfig(**inverted.pipeline_kwargs()))
    only_max = params.NodeSettings.from_values({'max_depth_m': 2.0})
    assert only_max.depth_limits_m() == (None, 2.0)
    pipeline = DepthPipeline(RowDepth(), PipelineConfig(**only_max.pipeline_kwargs()))
    with pytest.raises(ConfigError, match='min_depth_m must be below max_depth_m'):
        pipeline.update_config(min_depth_m=2.5)  # set alone, against the other limit
    with pytest.raises(
        ConfigError, match=r"left unset \(0 as a node parameter\) is the model's: \[0.5, 10\] m$"
    ):
        pipeline.update_config(max_depth_m=0.01)  # below the model's own minimum
    assert pipeline.config.max_depth_m == 2.0  # a refused change leaves the config as it was


def test_nodesettings_is_generated_from_the_specs_and_engine_arguments_follow_them():
    settings = params.NodeSettings.from_values({'cpu_threads': 3, 'backend': 'onnxruntime'})
    assert settings.engine_kwargs() == {
        'backend': 'onnxruntime',
        'device': 'auto',
        'precision': None,  # 'auto': each backend's own default
        'intra_op_threads': 3,
        'spin_wait': False,
    }
    assert params.NodeSettings(precision='bf16').engine_kwargs()['precision'] == 'bf16'
    assert params.NodeSettings().engine_kwargs()['intra_op_threads'] is None  # 0: default
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.cpu_threads = 1


def test_the_bag_tools_options_are_the_offline_parameters():
    import argparse

    parser = argparse.ArgumentParser()
    params.add_offline_arguments(parser)
    flags = {action.dest: action.option_strings for action in parser._actions if action.dest}
    for spec in params.SPECS:
        assert (spec.name in flags) == spec.offline, spec.name
    assert flags['publish_cloud'] == ['--publish-cloud', '--no-publish-cloud']
    assert flags['cloud_decimation'] == ['--cloud-decimation']
    args = parser.parse_args(
        ['--model-path', '/m.onnx', '--no-publish-cloud', '--min-depth-m', '0.5', '--backend',
         'torch', '--cpu-threads', '2']
    )  # fmt: skip
    settings = params.settings_from_args(args)
    assert (settings.model_path, settings.publish_cloud, settings.min_depth_m) == (
        '/m.onnx',
        False,
        0.5,
    )
    assert (settings.backend, settings.cpu_threads, settings.cloud_rgb) == ('torch', 2, True)
    bad = parser.parse_args(['--model-path', '/m.onnx', '--cloud-decimation', '-1'])
    with pytest.raises(ConfigError, match='cloud_decimation must be >= 0'):
        params.settings_from_args(bad)
    with pytest.raises(SystemExit):
        parser.parse_args(['--model-path', '/m', '--backend', 'gpu'])


def test_pipeline_kwargs_build_a_pipeline_config():
    assert not PipelineConfig(**params.NodeSettings().pipeline_kwargs()).flip_average
    settings = params.NodeSettings.from_values(
        {'min_depth_m': 0.3, 'cloud_decimation': 4, 'cloud_organized': False, 'flip_average': True}
    )
    config = PipelineConfig(**settings.pipeline_kwargs())
    assert config.flip_average  # off by default: it doubles the network time
    assert (config.min_depth_m, config.max_depth_m) == (0.3, None)
    assert (config.decimation, config.organized, config.cloud, config.cloud_rgb) == (
        4,
        False,
        True,
        True,
    )


def test_constraints_describe_choices_ranges_and_read_only():
    assert params.SPEC_BY_NAME['cloud_decimation'].constraints == 'in [0, 16]'  # 0: auto
    assert params.SPEC_BY_NAME['max_rate_hz'].constraints == '>= 0'
    backend = params.SPEC_BY_NAME['backend'].constraints
    assert "'onnxruntime'" in backend and 'read-only: restart the node' in backend
    assert 'matches' in params.SPEC_BY_NAME['device'].constraints


def _fake_prefix(root):
    marker = root / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'moa_depth_ros'
    marker.parent.mkdir(parents=True)
    marker.write_text('')
    return root / 'share' / 'moa_depth_ros'


def test_package_share_is_found_through_the_ament_index(tmp_path):
    other = tmp_path / 'other'
    other.mkdir()
    share = _fake_prefix(tmp_path / 'install')
    env = {'AMENT_PREFIX_PATH': os.pathsep.join(['', str(other), str(tmp_path / 'install')])}
    assert params.find_package_share(environ=env) == share
    assert params.find_package_share(environ={}) is None


def test_model_path_resolution_never_uses_the_working_directory(tmp_path, monkeypatch):
    share = _fake_prefix(tmp_path / 'install')
    (share / 'models').mkdir(parents=True)
    (share / 'models' / 'm.onnx').write_bytes(b'x')
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cwd.onnx').write_bytes(b'x')
    assert params.resolve_model_path('m.onnx', share) == share / 'models' / 'm.onnx'
    assert params.resolve_model_path(str(tmp_path / 'cwd.onnx'), None) == tmp_path / 'cwd.onnx'
    with pytest.raises(ConfigError, match='relative and the moa_depth_ros share'):
        params.resolve_model_path('cwd.onnx', None)
    with pytest.raises(ConfigError, match='no such file'):
        params.resolve_model_path('cwd.onnx', share)
    with pytest.raises(ConfigError, match='model_path is empty'):
        params.resolve_model_path('', share)
    monkeypatch.setenv('HOME', str(tmp_path))
    assert params.resolve_model_path('~/cwd.onnx', None) == tmp_path / 'cwd.onnx'
