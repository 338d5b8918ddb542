"""``python -m tools.bench all`` (``make bench``) end to end on tiny models."""

from __future__ import annotations

import json

from model_fixtures import TINY_MOA
import pytest
from tiny_model import write_tiny_onnx
import yaml

from moa_depth_ros.errors import ConfigError
from tools.bench import __main__ as cli
from tools.bench import report, suite

README_HEAD = '# Tool\n\nSome text.\n\n## Performance\n\n'
README_TAIL = '\n\n## License\n\nApache-2.0.\n'


def _readme(tmp_path):
    path = tmp_path / 'README.md'
    body = f'{report.MARKER_START}\nNot measured yet.\n{report.MARKER_END}'
    path.write_text(README_HEAD + body + README_TAIL)
    return path


@pytest.mark.slow
def test_quick_bench_runs_end_to_end_with_a_tiny_onnx_model(tmp_path, capsys):
    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    readme = _readme(tmp_path)
    out = tmp_path / 'out'
    rc = cli.main(
        ['all', '--quick', '--models', model, '--backends', 'onnxruntime', 'tensorrt',
         '--load-frames', '120', '--load-rate-hz', '400', '--out', str(out),
         '--readme', str(readme), '--no-live', '--no-train']
    )  # fmt: skip
    assert rc == 0
    results = json.loads((out / 'results.json').read_text())
    (row,) = results['end_to_end']['rows']
    assert row['model'] == 'tiny_test_model' and row['backend'] == 'onnxruntime'
    assert row['frames'] == 20 and row['fps'] > 0 and row['device'] == 'cpu'
    assert set(row['stages']) == {
        'decode',
        'preprocess',
        'network',
        'postprocess',
        'cloud',
        'serialize',
    }
    # A fresh child process: it never imported torch, so it stays far below a torch process.
    assert 0 < row['peak_rss_mib'] < 400
    assert results['floors']['memory']['copy_gbps'] > 0
    assert results['frame_stages']['stages']['back-project']['ratio'] > 0
    loaded = results['load']
    assert loaded['frames'] == 120 and loaded['delivered'] >= 1
    assert loaded['delivered'] + loaded['dropped'] == loaded['submitted']
    whats = {item['what'] for item in results['skipped']}
    assert 'tiny_test_model on torch' not in whats  # torch was not asked for
    if 'tensorrt' in whats:
        reasons = [s['reason'] for s in results['skipped'] if s['what'] == 'tensorrt']
        assert 'not installed' in reasons[0]
    assert 'training throughput' in whats and 'live ROS 2' in whats  # not asked for
    text = readme.read_text()
    assert text.startswith(README_HEAD + report.MARKER_START + '\n')
    assert text.endswith(report.MARKER_END + README_TAIL)
    assert '| tiny_test_model | onnxruntime (cpu) |' in text and 'Not measured yet' not in text
    assert (out / 'results.md').read_text().startswith('# moa_depth_ros benchmark')
    assert 'End to end per frame' in capsys.readouterr().out


def test_a_run_over_its_time_limit_is_reported_with_its_frame_time(tmp_path):
    from tools.bench import e2e

    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    result = e2e.bench_end_to_end(
        [model], ['onnxruntime'], frames=10_000, warmup=2, width=64, height=48,
        cache_dir=tmp_path / 'cache', max_run_s=1e-3,
    )  # fmt: skip
    assert result['rows'] == []
    (skipped,) = result['skipped']
    assert skipped['backend'] == 'onnxruntime' and skipped['warmup_frame_ms'] > 0
    assert 'per frame in warm-up' in skipped['reason'] and '--max-run-minutes' in skipped['reason']


def test_from_results_regenerates_the_readme_section_without_measuring(tmp_path):
    from test_bench_report import _results

    json_path, _ = report.write_results(_results(), tmp_path / 'saved')
    readme = _readme(tmp_path)
    rc = cli.main(
        ['all', '--from-results', str(json_path), '--readme', str(readme),
         '--out', str(tmp_path / 'out')]
    )  # fmt: skip
    assert rc == 0
    text = readme.read_text()
    assert '| moa_depthclip | onnxruntime (cpu) |' in text and 'Test CPU 9000' in text
    assert text.startswith(README_HEAD) and text.endswith(README_TAIL)
    bad = tmp_path / 'bad.json'
    bad.write_text('{"schema": "something else"}')
    assert cli.main(['all', '--from-results', str(bad), '--out', str(tmp_path / 'o')]) == 2


def test_bench_refuses_a_readme_without_markers_before_measuring(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text('# no markers\n')
    rc = cli.main(
        ['all', '--quick', '--no-live', '--readme', str(readme), '--out', str(tmp_path / 'o')]
    )
    assert rc == 2
    assert 'BENCH:START' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()  # failed before measuring anything


def test_bench_rejects_bad_counts(tmp_path):
    args = cli.build_parser().parse_args(['all', '--frames', '0', '--out', str(tmp_path)])
    with pytest.raises(ConfigError, match='--frames'):
        suite.collect(args, log=lambda message: None)


@pytest.mark.slow
def test_training_bench_reports_images_per_second_for_a_recipe_file(tmp_path):
    recipe = tmp_path / 'tiny_recipe.yaml'
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MOA.items()}
    recipe.write_text(
        yaml.safe_dump(
            {'name': 'tiny', 'model': {'name': 'moa_depthclip', 'overrides': overrides}}
        )
    )
    out = tmp_path / 'out'
    rc = cli.main(
        ['all', '--quick', '--no-e2e', '--no-load', '--no-live', '--out', str(out),
         '--train-recipes', str(recipe), '--train-batch', '2', '--train-steps', '2']
    )  # fmt: skip
    assert rc == 0
    results = json.loads((out / 'results.json').read_text())
    (row,) = results['training']['rows']
    assert row['label'] == 'tiny_recipe' and row['model_name'] == 'moa_depthclip'
    assert row['batch'] == 2 and row['input_hw'] == [64, 96] and row['loss'] == 'moa_depthclip'
    assert row['images_per_s'] > 0 and row['step_s']['median'] > 0
    assert 0 < row['trainable_parameters'] < row['parameters']
    assert '| tiny_recipe | moa_depthclip | 64x96 |' in (out / 'results.md').read_text()


def test_training_bench_rejects_an_unknown_recipe():
    from tools.bench import training

    with pytest.raises(ConfigError, match='not_a_recipe'):
        training.train_throughput('not_a_recipe')
