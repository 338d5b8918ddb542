"""``python -m training quickstart --smoke``: every step of the demo with toy sizes.

The full quickstart (minutes) is ``make demo``; this runs the same code path - render,
train, evaluate against the constant baseline, export ONNX, write and process a rosbag2,
preview - with a toy model, and checks each artefact a user is told about.
"""

from __future__ import annotations

import json
import pathlib

import cv2

from training.__main__ import main


def test_quickstart_smoke_runs_every_step(tmp_path, capsys):
    assert main(['quickstart', '--smoke', '--out-dir', str(tmp_path), '--threads', '1']) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / 'quickstart'
    summary = json.loads((run_dir / 'metrics.json').read_text())

    # Every artefact exists and is printed.
    for key, path in summary['artefacts'].items():
        assert path is not None and pathlib.Path(path).exists(), key
        assert path in out, key
    assert (run_dir / 'depth_bag' / 'metadata.yaml').is_file()
    assert summary['bag']['processed'] == summary['bag']['frames'] > 0

    # The table compares the model (torch and ONNX) with the constant baseline.
    table = (run_dir / 'metrics.txt').read_text()
    assert 'median_scaling=off' in table and 'crop=none' in table
    assert 'MoA-DepthCLIP (onnx)' in table and 'constant' in table
    for metric in ('d1', 'abs_rel'):
        assert abs(summary['model'][metric] - summary['onnx'][metric]) < 1e-3
    assert summary['baseline']['constant_depth_m'] > 0
    targets = summary['targets']
    assert targets['enforced'] is False
    assert targets['max_abs_rel'] == 0.5 * targets['baseline_abs_rel']

    # Every lens of the camera sweep went through the bag tool, with and without the
    # focal-length correction; the correction is a per-image scale, so SILog agrees.
    lenses = summary['cameras']['lenses']
    assert [row['hfov_deg'] for row in lenses] == [45.0, 60.0, 75.0, 90.0, 100.0]
    for row in lenses:
        assert abs(row['corrected']['silog'] - row['uncorrected']['silog']) < 1e-3
        if row['hfov_deg'] != 75.0:  # the canonical lens: nothing to convert
            assert row['corrected']['abs_rel'] != row['uncorrected']['abs_rel']
    assert set(targets['d1_each']) == {'45.0', '60.0', '75.0', '90.0', '100.0'}
    assert '45 deg, corrected' in table and '100 deg, as predicted' in table
    assert summary['cameras']['rooms'] == 'target' and 'held-out target rooms' in table

    # Preview: four labelled panels side by side.
    preview = cv2.imread(str(run_dir / 'preview.png'))
    assert preview is not None
    assert preview.shape[1] > 4 * preview.shape[0]  # four 4:3 panels in a row


def test_the_camera_sweep_keeps_tuning_and_target_rooms_apart():
    from training.data import SYNTHETIC_SEED_RANGES
    from training.quickstart import TARGET_ROOMS, TUNING_ROOMS, CameraSweep

    start, stop = SYNTHETIC_SEED_RANGES['test']

    def seeds(first_room):
        return set(CameraSweep(first_room=first_room).room_seeds())

    assert not seeds(TARGET_ROOMS) & seeds(TUNING_ROOMS)
    assert all(start <= s < stop for s in seeds(TARGET_ROOMS) | seeds(TUNING_ROOMS))
