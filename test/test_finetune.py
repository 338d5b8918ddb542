"""``python -m training finetune``: RGB-D recordings as a dataset, and the command end to end.

Recordings are real rosbag2 files (MCAP and sqlite3) written with ``rosbags``: the synthetic
ground-robot drive of ``training.data.synthetic_rgbd`` in every depth format, and small
hand-built bags where a test needs exact stamps, frame_ids or sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moa_depth_ros.errors import ConfigError
from training.data.recording import (
    RecordingConfig,
    RegistrationError,
    edge_mask,
    load_recording,
    pair_by_stamp,
    split_blocks,
)
from training.data.synthetic_rgbd import (
    COLOR_TOPIC,
    DEPTH_TOPIC,
    INFO_TOPIC,
    RobotDrive,
    write_rgbd_recording,
)

SMALL_DRIVE = RobotDrive(rooms=1, laps=1, seconds_per_room=4.0, rate_hz=10.0, width=64, height=48)
INPUT_HW = (32, 32)


def _config(bag: Path, **changes) -> RecordingConfig:
    values = {
        'bag': str(bag),
        'image_topic': COLOR_TOPIC,
        'depth_topic': DEPTH_TOPIC,
        'info_topic': INFO_TOPIC,
        'holdout': 0.25,
        'val': 0.1,
        'guard_s': 0.2,
        'keyframe_change': 0.0,
        'progress': False,
    }
    values.update(changes)
    return RecordingConfig(**values)


@pytest.fixture(scope='module')
def recordings(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Write the same drive in every depth format, in MCAP and sqlite3."""
    root = tmp_path_factory.mktemp('recordings')
    formats = ['16UC1', '32FC1', 'compressedDepth png', 'compressedDepth rvl']
    out = {}
    for storage in ('mcap', 'sqlite3'):
        paths = [root / f'{storage}_{fmt.replace(" ", "_")}' for fmt in formats]
        write_rgbd_recording(paths, formats, SMALL_DRIVE, storage=storage)
        out.update({(storage, fmt): path for fmt, path in zip(formats, paths)})
    return out


def test_every_depth_format_and_storage_reads_the_same_labels(recordings):
    reference = load_recording(_config(recordings['mcap', '16UC1']), INPUT_HW)
    assert reference.report['paired'] > 20
    for (storage, fmt), path in recordings.items():
        loaded = load_recording(_config(path), INPUT_HW)
        assert loaded.report['paired'] == reference.report['paired'], (storage, fmt)
        expected_topic = DEPTH_TOPIC + ('/compressedDepth' if 'compressed' in fmt else '')
        assert loaded.report['topics']['depth'] == expected_topic
        for block, frames in reference.frames.items():
            got = loaded.frames[block]
            assert [f.stamp_ns for f in got] == [f.stamp_ns for f in frames]
            for mine, ref in zip(got, frames):
                assert np.array_equal(mine.rgb, ref.rgb)
                # 16UC1 rounds to millimetres, 32FC1 holds the metres (a depth that rounds
                # onto the range or edge thresholds may flip: allow 1 % of the pixels).
                tol = 1e-6 if fmt != '32FC1' else 5.01e-4
                both = (mine.depth_m > 0) & (ref.depth_m > 0)
                assert np.abs(mine.depth_m[both] - ref.depth_m[both]).max() <= tol
                flips = ((mine.depth_m > 0) != (ref.depth_m > 0)).sum()
                assert flips <= (0 if fmt != '32FC1' else 0.01 * ref.depth_m.size)
                np.testing.assert_allclose(mine.K, ref.K)


@pytest.mark.parametrize('encoding', ['bgr8', 'rgba8', 'yuv422_yuy2', 'mono16', 'jpeg', 'png'])
def test_colour_encodings_the_node_accepts(recordings, tmp_path, encoding):
    reference = load_recording(_config(recordings['mcap', '16UC1']), INPUT_HW)
    path = tmp_path / encoding
    write_rgbd_recording([path], ['16UC1'], SMALL_DRIVE, colour_encoding=encoding)
    rec = load_recording(_config(path), INPUT_HW)
    assert rec.report['topics']['colour'] == COLOR_TOPIC + (
        '/compressed' if encoding in ('jpeg', 'png') else ''
    )
    got, want = rec.frames['train'][0].rgb.astype(float), reference.frames['train'][0].rgb
    if encoding == 'mono16':
        want = np.repeat(want.astype(float).mean(axis=2, keepdims=True), 3, axis=2)
    # yuv422 shares chroma between two pixels; jpeg is lossy: close, not equal.
    tolerance = {'bgr8': 0, 'rgba8': 0, 'png': 0, 'mono16': 3, 'yuv422_yuy2': 12, 'jpeg': 12}
    tolerance = tolerance[encoding]
    assert np.abs(got - want).mean() <= tolerance
    for block, frames in reference.frames.items():
        for mine, ref in zip(rec.frames[block], frames):
            assert np.array_equal(mine.depth_m, ref.depth_m)


def test_a_truncated_recording_is_read_as_far_as_it_goes(recordings, tmp_path):
    import shutil

    whole = load_recording(_config(recordings['mcap', 'compressedDepth rvl']), INPUT_HW)
    cut = tmp_path / 'cut'
    shutil.copytree(recordings['mcap', 'compressedDepth rvl'], cut)
    (mcap,) = cut.glob('*.mcap')
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])  # the recorder died: no summary, no footer
    (cut / 'metadata.yaml').unlink()
    rec = load_recording(_config(cut), INPUT_HW)
    assert rec.report['recovered'] and 'input recovered' in rec.report['recovered']
    assert 10 < rec.report['paired'] < whole.report['paired']


def test_blocks_are_contiguous_and_the_holdout_is_last(recordings):
    rec = load_recording(_config(recordings['mcap', '16UC1']), INPUT_HW)
    blocks = rec.report['blocks']
    assert blocks['train']['first'] == 0
    assert blocks['train']['stop'] + rec.report['guard_frames'] == blocks['val']['first']
    assert blocks['val']['stop'] + rec.report['guard_frames'] == blocks['holdout']['first']
    assert blocks['holdout']['stop'] == rec.report['paired']
    train = [f.stamp_ns for f in rec.frames['train']]
    val = [f.stamp_ns for f in rec.frames['val']]
    hold = [f.stamp_ns for f in rec.frames['holdout']]
    assert max(train) < min(val) <= max(val) < min(hold)


def test_split_blocks_guards_and_refuses_short_recordings():
    blocks = split_blocks(100, holdout=0.2, val=0.1, guard=3)
    assert blocks == {'train': range(0, 64), 'val': range(67, 77), 'holdout': range(80, 100)}
    with pytest.raises(ConfigError, match='too few'):
        split_blocks(10, holdout=0.2, val=0.1, guard=5)


def test_pairing_is_nearest_within_half_a_period_and_one_to_one():
    colour = [0, 100, 200, 300, 400]
    depth = [3, 98, 160, 330, 335, 900]
    pairs = pair_by_stamp(colour, depth, max_dt_ns=50)
    # 200 has nothing within 50 (160 is 40 away: paired); 300 -> 330, 335 left over; 400 none.
    assert pairs == [(0, 0), (1, 1), (2, 2), (3, 3)]
    # One depth frame, two colour frames near it: the nearer colour frame keeps it.
    assert pair_by_stamp([0, 30], [20], max_dt_ns=50) == [(1, 0)]


def test_unpaired_frames_are_counted(recordings):
    rec = load_recording(_config(recordings['sqlite3', 'compressedDepth rvl']), INPUT_HW)
    r = rec.report
    assert r['colour_frames'] - r['paired'] == r['unpaired_colour']
    assert r['depth_frames'] - r['paired'] == r['unpaired_depth']
    total = int(SMALL_DRIVE.seconds_per_room * SMALL_DRIVE.rate_hz)
    # The drive drops a few frames of each stream: whatever it dropped is unpaired, not lost.
    assert r['paired'] + r['unpaired_colour'] == r['colour_frames'] <= total
    assert r['unpaired_colour'] + r['unpaired_depth'] >= 1


def test_edge_mask_drops_jumps_and_keeps_slopes():
    ramp = np.tile(np.linspace(1.0, 6.0, 40, dtype=np.float32), (10, 1))  # a grazing floor
    assert not edge_mask(ramp, 0.05, 3.0).any()
    step = np.full((10, 40), 4.0, np.float32)
    step[:, 20:] = 1.0
    clean = edge_mask(step, 0.05, 3.0)  # a clean edge: the pixel on each side goes
    assert clean[:, 19].all() and clean[:, 20].all()
    assert not clean[:, :19].any() and not clean[:, 21:].any()
    step[:, 19] = 2.5  # a flying pixel between the two surfaces
    flying = edge_mask(step, 0.05, 3.0)
    assert flying[:, 19].all()
    assert not flying[:, :18].any() and not flying[:, 21:].any()


# ------------------------------------------------------------------ hand-built bags


def _write_bag(
    path: Path,
    *,
    colour_ns,
    depth_ns,
    depth_frame_id='cam',
    depth_wh=(64, 48),
    storage='mcap',
    d=(0.0, 0.0, 0.0, 0.0, 0.0),
    garbage_first=False,
):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from training.data.synthetic_bag import _header, _image_msg

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        c_colour = writer.add_connection(COLOR_TOPIC, 'sensor_msgs/msg/Image', typestore=store)
        c_depth = writer.add_connection(DEPTH_TOPIC, 'sensor_msgs/msg/Image', typestore=store)
        c_info = writer.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=store)
        roi = types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        k = np.array([50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1])
        info = types['sensor_msgs/msg/CameraInfo'](
            header=_header(types, colour_ns[0], 'cam'),
            height=48,
            width=64,
            distortion_model='plumb_bob',
            d=np.array(d, np.float64),
            k=k,
            r=np.eye(3).ravel(),
            p=np.array([50.0, 0, 31.5, 0, 0, 50.0, 23.5, 0, 0, 0, 1, 0]),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
        writer.write(c_info, colour_ns[0], store.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo'))
        if garbage_first:  # a colour message no CDR reader can make sense of
            writer.write(c_colour, colour_ns[0] - 1, b'\x00\x01not a message')
        rng = np.random.default_rng(0)
        events = [(t, 'c') for t in colour_ns] + [(t, 'd') for t in depth_ns]
        for stamp, kind in sorted(events):
            if kind == 'c':
                rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                msg = _image_msg(
                    types, _header(types, stamp, 'cam'), 64, 48, 'rgb8', 192, rgb.reshape(-1)
                )
                writer.write(c_colour, stamp, store.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
            else:
                w, h = depth_wh
                mm = np.full((h, w), 2000, '<u2')
                msg = _image_msg(
                    types,
                    _header(types, stamp, depth_frame_id),
                    w,
                    h,
                    '16UC1',
                    2 * w,
                    mm.view(np.uint8).reshape(-1),
                )
                writer.write(c_depth, stamp, store.serialize_cdr(msg, 'sensor_msgs/msg/Image'))


PERIOD = 100_000_000  # 10 Hz
START = 1_700_000_000_000_000_000


def test_refuses_depth_in_another_frame(tmp_path):
    stamps = [START + i * PERIOD for i in range(40)]
    _write_bag(tmp_path / 'bag', colour_ns=stamps, depth_ns=stamps, depth_frame_id='depth_cam')
    with pytest.raises(RegistrationError) as error:
        load_recording(_config(tmp_path / 'bag'), INPUT_HW)
    message = str(error.value)
    assert '\n' not in message
    assert "'depth_cam'" in message and "'cam'" in message
    assert 'align_depth.enable:=true' in message and 'depth_image_proc register' in message


def test_refuses_depth_at_another_size_and_accepts_a_binning(tmp_path):
    stamps = [START + i * PERIOD for i in range(40)]
    _write_bag(tmp_path / 'odd', colour_ns=stamps, depth_ns=stamps, depth_wh=(48, 36))
    with pytest.raises(RegistrationError, match='48x36, colour 64x48.*align_depth.enable:=true'):
        load_recording(_config(tmp_path / 'odd'), INPUT_HW)
    _write_bag(tmp_path / 'binned', colour_ns=stamps, depth_ns=stamps, depth_wh=(32, 24))
    rec = load_recording(_config(tmp_path / 'binned', edge_jump_rel=0.0), INPUT_HW)
    assert rec.report['depth_binning'] == [2, 2]
    frame = rec.frames['train'][0]
    assert frame.depth_m.shape == (48, 64)  # on the colour grid
    assert np.all(frame.depth_m == np.float32(2.0))


def test_frames_are_rectified_as_the_node_rectifies_them(tmp_path):
    from moa_depth_ros.frame import rectify
    from moa_depth_ros.frame.geometry import CameraModel

    stamps = [START + i * PERIOD for i in range(40)]
    d = (-0.2, 0.05, 0.001, -0.002, 0.0)
    _write_bag(tmp_path / 'bag', colour_ns=stamps, depth_ns=stamps, d=d)
    rec = load_recording(_config(tmp_path / 'bag', edge_jump_rel=0.0), INPUT_HW)
    raw = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # frame 0
    camera = CameraModel(64, 48, 50.0, 50.0, 31.5, 23.5, d=d)
    rect = rectify.Rectifier(camera)
    first = rec.frames['train'][0]
    assert np.array_equal(first.rgb, rect.rectify_image(raw))
    np.testing.assert_allclose(first.K, rect.output.k)
    # Depth: nearest raw pixel, and nothing (0) where the rectified pixel sees no raw one.
    seen = ~rect.invalid if rect.invalid is not None else np.ones((48, 64), bool)
    assert np.all(first.depth_m[seen] == np.float32(2.0))
    assert np.all(first.depth_m[~seen] == 0.0)


def test_an_unreadable_message_is_counted_and_the_rest_still_lines_up(tmp_path):
    stamps = [START + i * PERIOD for i in range(40)]
    _write_bag(tmp_path / 'bag', colour_ns=stamps, depth_ns=stamps, garbage_first=True)
    rec = load_recording(_config(tmp_path / 'bag', edge_jump_rel=0.0), INPUT_HW)
    assert sum(rec.report['undecodable'].values()) == 1
    assert 'cannot deserialize' in next(iter(rec.report['undecodable']))
    assert rec.report['paired'] == 40
    raw = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(rec.frames['train'][0].rgb, raw)  # the first readable frame


def test_pairing_counts_in_a_recording(tmp_path):
    colour = [START + i * PERIOD for i in range(40)]
    # Depth lags by 20 ms; frames 5 and 6 of depth are missing; two extra depth frames sit
    # between colour frames, further than half a period from any unclaimed colour frame.
    depth = [t + 20_000_000 for i, t in enumerate(colour) if i not in (5, 6)]
    depth += [colour[10] + 60_000_000, colour[20] + 70_000_000]
    _write_bag(tmp_path / 'bag', colour_ns=colour, depth_ns=sorted(depth), storage='sqlite3')
    rec = load_recording(_config(tmp_path / 'bag'), INPUT_HW)
    assert rec.report['paired'] == 38
    assert rec.report['unpaired_colour'] == 2
    assert rec.report['unpaired_depth'] == 2


def test_missing_topics_name_what_the_bag_has(tmp_path):
    stamps = [START + i * PERIOD for i in range(40)]
    _write_bag(tmp_path / 'bag', colour_ns=stamps, depth_ns=stamps)
    with pytest.raises(ConfigError, match='no depth topic.*/camera/color/image_raw'):
        load_recording(
            _config(tmp_path / 'bag', depth_topic='/camera/depth/image_rect_raw'), (32, 32)
        )


# ------------------------------------------------------------------ the command


@pytest.fixture(scope='module')
def tiny_base(tmp_path_factory) -> Path:
    from test_train import TINY_MODEL

    from moa_depth_ros.model import create_model, save_checkpoint

    path = tmp_path_factory.mktemp('base') / 'base.safetensors'
    model = create_model(
        'moa_depthclip',
        **TINY_MODEL,
        min_depth_m=0.1,
        max_depth_m=16.0,
        canonical_camera={'name': 't', 'fx_px': 20.0, 'fy_px': 20.0, 'width': 32, 'height': 32},
    )
    save_checkpoint(model, path)
    return path


def _argv(bag: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [
        'finetune',
        '--bag',
        str(bag),
        '--image-topic',
        COLOR_TOPIC,
        '--depth-topic',
        DEPTH_TOPIC,
        '--info-topic',
        INFO_TOPIC,
        '--base',
        str(base),
        '--output',
        str(out),
        '--holdout',
        '0.25',
        '--val',
        '0.1',
        '--threads',
        '1',
        '--no-progress',
        '--set',
        'batch_size=4',
        '--set',
        'data.dataset.recording.guard_s=0.2',
        '--set',
        'tensorboard=false',
        *extra,
    ]


def test_finetune_end_to_end_through_main(recordings, tiny_base, tmp_path, capsys):
    from moa_depth_ros.engine import load_engine
    from training.__main__ import main

    out = tmp_path / 'run'
    argv = _argv(recordings['mcap', 'compressedDepth png'], tiny_base, out, '--steps', '4')
    rc = main(argv)
    metrics = json.loads((out / 'metrics.json').read_text())
    assert rc == (1 if metrics['worse_on'] else 0)
    for name in ('model.safetensors', 'model.onnx', 'metrics.txt', 'finetune.json', 'command.txt'):
        assert (out / name).is_file(), name
    assert metrics['train_steps'] == 4
    for key in ('d1', 'abs_rel', 'rmse'):
        assert np.isfinite(metrics['base'][key]) and np.isfinite(metrics['finetuned'][key])
    assert metrics['holdout_frames'] == metrics['recording']['blocks']['holdout']['keyframes']
    recipe = json.loads((out / 'finetune.json').read_text())
    assert recipe['config']['model']['init_checkpoint'] == str(tiny_base.absolute())
    assert recipe['config']['data']['dataset']['dataset'] == 'recording'
    assert 'finetune --bag' in (out / 'command.txt').read_text()
    engine = load_engine(out / 'model.onnx', backend='onnxruntime', device='cpu')
    engine.close()
    text = capsys.readouterr().out
    assert 'unpaired' in text and 'held-out d1' in text

    # Resume: the finished run continues from its state file and trains no further.
    assert main([*argv, '--resume']) in (0, 1)
    again = json.loads((out / 'metrics.json').read_text())
    assert again['train_steps'] == 4


def test_the_verdict_ignores_float_noise_and_names_what_got_worse():
    from training.finetune import worse_metrics

    base = {'d1': 0.80, 'abs_rel': 0.200}
    assert worse_metrics(base, {'d1': 0.799, 'abs_rel': 0.201}) == []  # torch vs ONNX noise
    assert worse_metrics(base, {'d1': 0.79, 'abs_rel': 0.19}) == ['d1']
    assert worse_metrics(base, {'d1': 0.85, 'abs_rel': 0.21}) == ['abs_rel']
    assert worse_metrics(base, {'d1': 0.70, 'abs_rel': 0.30}) == ['d1', 'abs_rel']


def test_a_worse_model_exits_1_and_says_so(recordings, tiny_base, tmp_path, capsys):
    from training.__main__ import main

    # A base that has learnt the recording (a random one has nothing to lose), then a
    # fine-tuning run at a learning rate that wrecks it.
    learnt = tmp_path / 'learnt'
    bag = recordings['sqlite3', '16UC1']
    main([*_argv(bag, tiny_base, learnt, '--steps', '60'), '--set', 'optim.lr=2e-3'])
    before = json.loads((learnt / 'metrics.json').read_text())['finetuned']
    out = tmp_path / 'worse'
    harmful = ['--set', 'optim.lr=0.5', '--set', 'ema_decay=0.0', '--set', 'optim.warmup_steps=0']
    rc = main([*_argv(bag, learnt / 'model.safetensors', out, '--steps', '8'), *harmful])
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['base']['d1'] == pytest.approx(before['d1'], abs=1e-3)
    assert metrics['worse_on'], metrics
    assert rc == 1
    assert 'WORSE than its base' in capsys.readouterr().err
    assert (out / 'model.onnx').is_file()  # written, but not claimed as an improvement


def test_unregistered_depth_is_exit_status_2(tmp_path, tiny_base, capsys):
    from training.__main__ import main

    stamps = [START + i * PERIOD for i in range(40)]
    _write_bag(tmp_path / 'bag', colour_ns=stamps, depth_ns=stamps, depth_frame_id='other')
    assert main(_argv(tmp_path / 'bag', tiny_base, tmp_path / 'out')) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'align_depth.enable:=true' in err
