"""The frame pipeline with an analytic stand-in network: resolution, range, clouds, bad input."""

from __future__ import annotations

import dataclasses
import os
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from moa_depth_ros.errors import ConfigError, EngineError, InvalidImageError
from moa_depth_ros.frame import msgs, rectify
from moa_depth_ros.frame.geometry import CameraModel
from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig, preprocess
from moa_depth_ros.runtime import memory

W, H = 80, 60  # camera image, non-square and larger than the network input


class RowDepth:
    """Stand-in network: depth grows down the rows, 1 m at the top to 5 m at the bottom.

    Confidence is 0.8 everywhere; every input it was given is kept in ``inputs``.
    """

    def __init__(self, input_hw=(24, 32), depth_range_m=(0.5, 10.0)):
        self.input_hw = input_hw
        self.depth_range_m = depth_range_m
        self.inputs = []

    def infer(self, image):
        self.inputs.append(image)
        h, w = self.input_hw
        depth = np.repeat(np.linspace(1.0, 5.0, h, dtype=np.float32)[:, None], w, axis=1)
        return depth[None, None], np.full((1, 1, h, w), 0.8, np.float32)


class ConstantDepth(RowDepth):
    def __init__(self, depth_m, **kw):
        super().__init__(**kw)
        self.depth_m = depth_m

    def infer(self, image):
        self.inputs.append(image)
        shape = (1, 1) + tuple(self.input_hw)
        return np.full(shape, self.depth_m, np.float32), np.full(shape, 0.5, np.float32)


def pinhole(width=W, height=H):
    return CameraModel(width=width, height=height, fx_px=60.0, fy_px=62.0, cx_px=39.5, cy_px=29.5)


def rgb_msg(rgb, encoding='rgb8'):
    image = rgb if encoding == 'rgb8' else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return SimpleNamespace(
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=image.tobytes(),
    )


RED = np.zeros((H, W, 3), np.uint8)
RED[..., 0] = 255


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_network_gets_rgb_in_unit_range_at_its_input_size(encoding):
    net = RowDepth()
    DepthPipeline(net).process_msg(rgb_msg(RED, encoding))
    (image,) = net.inputs
    assert image.shape == (1, 3, 24, 32) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, 0], 1.0)
    np.testing.assert_allclose(image[0, 1:], 0.0)


def test_depth_comes_back_at_camera_resolution_with_the_network_layout():
    result = DepthPipeline(RowDepth()).process_rgb(RED, pinhole())
    depth = result.depth_m
    assert depth.shape == (H, W) and depth.dtype == np.float32
    assert result.confidence.shape == (H, W)
    np.testing.assert_allclose(result.confidence, 0.8)
    # Rows increase, columns are constant, values stay within the network's 1..5 m.
    assert np.all(np.diff(depth[:, 0]) >= 0) and depth[-1, 0] > depth[0, 0] + 3
    np.testing.assert_allclose(depth, np.repeat(depth[:, :1], W, axis=1), rtol=1e-6)  # SIMD
    assert depth.min() >= 1.0 and depth.max() <= 5.0
    assert result.camera == rectify.rectified_camera(pinhole())  # D = 0 written out
    assert set(result.timings_ms) == {'decode', 'preprocess', 'network', 'postprocess', 'cloud'}


def test_cloud_of_a_constant_depth_is_the_closed_form_plane():
    result = DepthPipeline(ConstantDepth(2.0)).process_rgb(RED, pinhole())
    xyz = result.cloud.xyz
    assert result.cloud.organized and xyz.shape == (H, W, 3)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    np.testing.assert_allclose(xyz[..., 2], 2.0)
    np.testing.assert_allclose(xyz[..., 0], (u - 39.5) / 60.0 * 2.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(xyz[..., 1], (v - 29.5) / 62.0 * 2.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.cloud.rgb, RED)
    fields = msgs.encode_cloud(result.cloud)
    assert (fields.height, fields.width, fields.point_step) == (H, W, 16)


def test_no_camera_means_no_cloud():
    result = DepthPipeline(RowDepth()).process_rgb(RED)
    assert result.cloud is None and result.camera is None
    assert result.depth_m.shape == (H, W)


def test_configured_range_marks_depth_as_rep117_and_zeroes_confidence():
    # REP 117: too near is -Inf, nothing within range is +Inf (what Nav2's inf_is_valid and
    # depthimage_to_laserscan clear free space with), NaN is kept for "no estimate".
    pipe = DepthPipeline(RowDepth(), PipelineConfig(min_depth_m=2.0, max_depth_m=4.0))
    result = pipe.process_rgb(RED, pinhole())
    depth, conf = result.depth_m, result.confidence
    outside = ~np.isfinite(depth)
    assert (depth[0] == -np.inf).all() and (depth[-1] == np.inf).all()
    assert not outside[H // 2].any() and not np.isnan(depth).any()
    assert depth[~outside].min() >= 2.0 and depth[~outside].max() <= 4.0
    np.testing.assert_array_equal(conf[outside], 0.0)
    np.testing.assert_allclose(conf[~outside], 0.8)
    assert np.isnan(result.cloud.xyz[outside]).all()


def test_clamp_mode_keeps_every_pixel_inside_the_range():
    pipe = DepthPipeline(RowDepth(), PipelineConfig(min_depth_m=2.0, max_depth_m=4.0))
    pipe.update_config(out_of_range='clamp')
    depth = pipe.process_rgb(RED).depth_m
    assert np.isfinite(depth).all() and depth.min() == 2.0 and depth.max() == 4.0


def test_network_output_outside_its_range_is_inf_and_non_finite_is_nan():
    net = ConstantDepth(20.0, depth_range_m=(0.5, 10.0))
    result = DepthPipeline(net).process_rgb(RED)
    assert (result.depth_m == np.inf).all() and (result.confidence == 0).all()
    net = ConstantDepth(0.1, depth_range_m=(0.5, 10.0))
    assert (DepthPipeline(net).process_rgb(RED).depth_m == -np.inf).all()
    for value in (np.nan, np.inf):  # the network gives no finite value: no estimate
        result = DepthPipeline(ConstantDepth(value)).process_rgb(RED, pinhole())
        assert np.isnan(result.depth_m).all() and (result.confidence == 0).all()
        assert np.isnan(result.cloud.xyz).all()


def test_nearest_upsampling_only_returns_network_values():
    pipe = DepthPipeline(RowDepth(), PipelineConfig(interpolation='nearest'))
    depth = pipe.process_rgb(RED).depth_m
    network_values = np.linspace(1.0, 5.0, 24, dtype=np.float32)
    assert np.isin(np.unique(depth), network_values).all()


def test_output_size_scales_depth_camera_and_cloud():
    pipe = DepthPipeline(RowDepth(), PipelineConfig(output_hw=(30, 40), decimation=2))
    result = pipe.process_rgb(RED, pinhole())
    assert result.depth_m.shape == (30, 40)
    assert result.camera.size == (40, 30)
    assert result.camera.fx_px == pytest.approx(30.0)
    assert result.cloud.xyz.shape == (15, 20, 3) and result.cloud.rgb.shape == (15, 20, 3)


def test_unorganized_cloud_holds_only_finite_points():
    pipe = DepthPipeline(RowDepth(), PipelineConfig(organized=False, min_depth_m=2.0))
    cloud = pipe.process_rgb(RED, pinhole()).cloud
    assert not cloud.organized and cloud.xyz.ndim == 2
    assert np.isfinite(cloud.xyz).all() and (cloud.xyz[:, 2] >= 2.0).all()


def test_compressed_images_go_through_the_same_pipeline():
    ok, png = cv2.imencode('.png', cv2.cvtColor(RED, cv2.COLOR_RGB2BGR))
    assert ok
    net = RowDepth()
    result = DepthPipeline(net).process_msg(
        SimpleNamespace(format='png', data=png.tobytes()), pinhole()
    )
    np.testing.assert_array_equal(result.rgb, RED)
    np.testing.assert_allclose(net.inputs[0][0, 0], 1.0)
    with pytest.raises(InvalidImageError, match='neither a sensor_msgs/Image'):
        DepthPipeline(net).process_msg(SimpleNamespace(data=png.tobytes()), pinhole())


def test_bad_frames_raise_typed_errors_and_the_next_frame_works():
    pipe = DepthPipeline(RowDepth())
    good = rgb_msg(RED)
    bad_frames = [
        (InvalidImageError, 'rgb16', SimpleNamespace(**{**vars(good), 'encoding': 'rgb16'})),
        (InvalidImageError, 'step', SimpleNamespace(**{**vars(good), 'step': 10})),
        (InvalidImageError, 'data', SimpleNamespace(**{**vars(good), 'data': b'\0' * 99})),
        (InvalidImageError, 'height', SimpleNamespace(**{**vars(good), 'height': 0})),
    ]
    for error, word, msg in bad_frames:
        with pytest.raises(error, match=word):
            pipe.process_msg(msg, pinhole())
        assert pipe.process_msg(good, pinhole()).depth_m.shape == (H, W)
    assert pipe.process_msg(good, pinhole()).cloud is not None


def test_a_camera_for_another_image_size_costs_the_cloud_not_the_depth():
    pipe = DepthPipeline(RowDepth())
    result = pipe.process_msg(rgb_msg(RED), pinhole(40, 30))
    assert result.depth_m.shape == (H, W) and np.isfinite(result.depth_m).all()
    assert result.cloud is None and result.camera is None
    assert re.search(r'40x30.*80x60', result.camera_error)
    assert pipe.process_msg(rgb_msg(RED), pinhole()).camera_error == ''


def test_a_camera_function_is_asked_once_before_the_network_rectifies_with_it():
    order = []

    class Logged(RowDepth):
        def infer(self, image):
            order.append('network')
            return super().infer(image)

    def camera():
        order.append('camera')
        return pinhole()

    result = DepthPipeline(Logged()).process_msg(rgb_msg(RED), camera)
    assert order == ['camera', 'network'] and result.cloud is not None
    assert DepthPipeline(Logged()).process_msg(rgb_msg(RED), lambda: None).cloud is None


def test_estimator_with_wrong_output_shape_is_an_engine_error():
    class Wrong(RowDepth):
        def infer(self, image):
            return np.zeros((1, 1, 5, 5), np.float32), np.zeros((1, 1, 5, 5), np.float32)

    with pytest.raises(EngineError, match=r'\[1, 1, 5, 5\]'):
        DepthPipeline(Wrong()).process_rgb(RED)
    with pytest.raises(EngineError, match='depth_range_m'):
        DepthPipeline(SimpleNamespace(input_hw=(8, 8), infer=lambda x: x))


@pytest.mark.parametrize(
    ('changes', 'word'),
    [
        ({'decimation': -1}, 'decimation'),
        ({'decimation': 1.5}, 'decimation'),
        ({'cloud_budget_bytes': 8}, 'cloud_budget_bytes'),
        ({'input_rectified': 1}, 'input_rectified'),
        ({'min_depth_m': 5.0, 'max_depth_m': 2.0}, 'min_depth_m'),
        ({'max_depth_m': float('nan')}, 'max_depth_m'),
        ({'interpolation': 'bicubic'}, "'bicubic'"),
        ({'out_of_range': 'drop'}, "'drop'"),
        ({'output_hw': (0, 10)}, 'output_hw'),
        ({'colour': True}, 'colour'),
        ({'flip_average': 1}, 'flip_average'),
    ],
)
def test_invalid_settings_are_refused_and_leave_the_config_unchanged(changes, word):
    pipe = DepthPipeline(RowDepth())
    before = pipe.config
    with pytest.raises(ConfigError, match=word):
        pipe.update_config(**changes)
    assert pipe.config is before
    assert pipe.process_rgb(RED).depth_m.shape == (H, W)


def _glibc() -> bool:
    try:
        return os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
    except (ValueError, OSError, AttributeError):
        return False


def test_freed_frame_buffers_are_kept_only_where_glibc_runs_and_the_user_did_not_choose(
    monkeypatch,
):
    def no_libc(*args):
        raise AssertionError('the C library must not be touched')

    # The user's glibc settings win, and nothing is loaded to find that out.
    monkeypatch.setattr(memory.ctypes, 'CDLL', no_libc)
    applied, how = memory.retain_freed_memory({'MALLOC_TRIM_THRESHOLD_': '131072'})
    assert not applied and 'MALLOC_TRIM_THRESHOLD_' in how
    tunables = {'GLIBC_TUNABLES': 'glibc.malloc.mmap_threshold=65536'}
    assert memory.retain_freed_memory(tunables) == (
        False,
        'allocator left as configured by GLIBC_TUNABLES',
    )
    # musl, macOS, Windows: left alone.
    monkeypatch.setattr(memory, '_glibc_version', lambda: None)
    assert memory.retain_freed_memory({}) == (False, 'allocator left as it is (not glibc)')


@pytest.mark.skipif(not _glibc(), reason='needs glibc (mallopt thresholds are glibc options)')
def test_on_glibc_freed_frame_buffers_are_kept_for_reuse():
    applied, how = memory.retain_freed_memory({})
    assert applied, how
    assert '256 MiB' in how and 'MALLOC_TRIM_THRESHOLD_' in how


@pytest.mark.parametrize('size', [(120, 160), (121, 161)])  # even: 2x halvings; odd: INTER_AREA
def test_downscaling_to_the_network_averages_instead_of_aliasing(size):
    stripes = np.zeros(size + (3,), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: any point sampling aliases to black or white
    image = preprocess(stripes, (24, 32))
    assert image.shape == (1, 3, 24, 32)
    assert np.abs(image - 0.5).max() < 0.1


class ContentDepth(RowDepth):
    """Stand-in network whose output depends on the image and on the column (not mirror-symmetric).

    Like an engine with bound output buffers, it hands out the same two arrays on every call.
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        h, w = self.input_hw
        self._depth = np.empty((1, 1, h, w), np.float32)
        self._confidence = np.empty((1, 1, h, w), np.float32)

    def infer(self, image):
        self.inputs.append(image.copy())
        w = self.input_hw[1]
        columns = np.linspace(0.0, 1.0, w, dtype=np.float32)
        self._depth[0, 0] = 1.0 + 3.0 * image[0, 0] + 2.0 * columns
        self._confidence[0, 0] = 0.25 + 0.5 * image[0, 1] * columns
        return self._depth, self._confidence


def test_flip_average_is_the_mean_of_the_plain_and_the_mirrored_back_prediction():
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    config = PipelineConfig(out_of_range='clamp', output_hw=(24, 32))
    plain_net, flip_net = ContentDepth(), ContentDepth()
    plain = DepthPipeline(plain_net, config).process_rgb(rgb)
    flipped = DepthPipeline(flip_net, config).process_rgb(np.ascontiguousarray(rgb[:, ::-1]))
    averaged_net = ContentDepth()
    pipe = DepthPipeline(averaged_net, dataclasses.replace(config, flip_average=True))
    averaged = pipe.process_rgb(rgb)

    # The second pass sees exactly the mirror image of the first's input.
    first, second = averaged_net.inputs
    np.testing.assert_array_equal(second, first[..., ::-1])
    want_depth = 0.5 * (plain.depth_m + flipped.depth_m[:, ::-1])
    want_confidence = 0.5 * (plain.confidence + flipped.confidence[:, ::-1])
    np.testing.assert_allclose(averaged.depth_m, want_depth, rtol=1e-6)
    np.testing.assert_allclose(averaged.confidence, want_confidence, rtol=1e-6)
    assert not np.allclose(averaged.depth_m, plain.depth_m)  # the flip changed something
    assert len(plain_net.inputs) == 1  # off by default: one network run per frame


# -- one rectified grid, and a cloud navigation receives ---------------------------------------


def distorted(width=W, height=H):
    """Return a plumb_bob camera whose P (the rectified camera) differs from K."""
    return CameraModel(
        width=width,
        height=height,
        fx_px=60.0,
        fy_px=62.0,
        cx_px=39.5,
        cy_px=29.5,
        distortion_model='plumb_bob',
        d=(-0.2, 0.05, 0.001, -0.001, 0.0),
        p=(55.0, 0.0, 40.0, 0.0, 0.0, 57.0, 30.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    )


def test_the_network_sees_the_rectified_image_and_depth_is_on_the_rectified_camera():
    rgb = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    net = RowDepth()
    result = DepthPipeline(net).process_rgb(rgb, distorted())
    expected = preprocess(rectify.Rectifier(distorted()).rectify_image(rgb), net.input_hw)
    np.testing.assert_array_equal(net.inputs[0], expected)
    assert result.camera == rectify.rectified_camera(distorted())
    assert (result.camera.fx_px, result.camera.distortion_kind) == (55.0, 'none')


def test_declared_rectified_input_is_not_resampled_and_scales_with_p():
    class Canonical(RowDepth):
        canonical_focal_px = 20.0

    rgb = np.random.default_rng(2).integers(0, 255, (H, W, 3), dtype=np.uint8)
    net = Canonical()
    config = PipelineConfig(input_rectified=True)
    result = DepthPipeline(net, config).process_rgb(rgb, distorted())
    np.testing.assert_array_equal(net.inputs[0], preprocess(rgb, net.input_hw))  # as it came
    # The metric scale is P's focal length (55, 57 px), not K's (60, 62).
    assert result.depth_scale == pytest.approx(np.sqrt(55.0 * 32 / W * 57.0 * 24 / H) / 20.0)
    assert np.isfinite(result.depth_m).all()  # nothing unseen: no second undistortion


@pytest.mark.parametrize(
    ('width', 'height', 'cloud_rgb', 'points'),
    [(640, 480, True, (120, 160)), (1280, 720, True, (103, 183)), (1280, 720, False, (120, 214))],
)
def test_the_default_cloud_fits_the_budget_a_best_effort_reader_receives(
    width, height, cloud_rgb, points
):
    # cloud_decimation 0 (auto): the smallest decimation within 320 KiB, below Fast DDS's
    # 512 KiB shared-memory segment (an organized VGA xyz+rgb cloud is 4.9 MB).
    config = PipelineConfig(decimation=0, cloud_rgb=cloud_rgb)
    rgb = np.zeros((height, width, 3), np.uint8)
    cloud = DepthPipeline(RowDepth(), config).process_rgb(rgb, pinhole(width, height)).cloud
    assert cloud.xyz.shape[:2] == points
    assert cloud.xyz.shape[0] * cloud.xyz.shape[1] * (16 if cloud_rgb else 12) <= 320 * 1024
