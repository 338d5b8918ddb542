"""``python -m tools.bench frame-stages``: each per-frame stage against the memory floor."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np

from moa_depth_ros.frame import msgs
from tools.bench import __main__ as bench_cli
from tools.bench import frame_stages


def test_the_benchmark_packs_yuyv_like_opencv_and_the_decoder_reads_it_back():
    # OpenCV 4.6 (Jazzy) has no RGB -> YUYV conversion, so the frame benchmark packs it itself.
    rgb = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    packed = frame_stages._yuyv(rgb)
    if hasattr(cv2, 'COLOR_RGB2YUV_YUY2'):
        reference = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2).reshape(6, -1)
        assert np.abs(packed.astype(int) - reference.astype(int)).max() <= 1
    grey = np.repeat(rgb[..., :1], 3, axis=2)  # no chroma: the round trip is exact to rounding
    msg = SimpleNamespace(
        height=6, width=8, encoding='yuv422_yuy2', is_bigendian=0, step=16,
        data=frame_stages._yuyv(grey).tobytes(),
    )  # fmt: skip
    assert np.abs(msgs.decode_image(msg).astype(int) - grey).max() <= 2


def test_frame_benchmark_reports_every_stage():
    report = frame_stages.bench_frame_stages(
        width=64, height=48, input_hw=(16, 16), repeats=3, threads=None
    )
    stages = report['stages']
    for name in (
        'decode rgb8',
        'resize to input',
        'back-project',
        'pack cloud',
        'serialize outputs',
    ):
        assert stages[name]['median_ms'] >= 0 and stages[name]['floor_ms'] > 0
    assert report['total_ms'] > 0
    assert 'sum of stages' in frame_stages.format_report(report)


def test_the_command_prints_the_table_and_refuses_bad_sizes(capsys):
    args = ['frame-stages', '--width', '64', '--height', '48', '--input-size', '16', '16']
    assert bench_cli.main([*args, '--repeats', '3']) == 0
    assert 'sum of stages' in capsys.readouterr().out
    assert bench_cli.main([*args, '--repeats', '0']) == 2
    assert 'must be positive' in capsys.readouterr().err
