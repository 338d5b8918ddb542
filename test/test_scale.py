"""Metric depth across cameras: the canonical camera and the conversion, end to end.

What a user notices: the same room through a wider lens comes out at the same metric depth
once the camera's focal length is known; without CameraInfo the model's canonical camera
is assumed (and said); on the training camera the conversion changes nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.geometry import CameraModel
from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig
from moa_depth_ros.frame.scale import CanonicalCamera, depth_scale, focal_at_input_px


def test_focal_at_the_input_follows_the_resize():
    # An even resize scales the focal length with the image.
    assert focal_at_input_px(500.0, 500.0, 640, 480, (48, 64)) == pytest.approx(50.0)
    # An uneven one (640x480 -> 224x224): the geometric mean of the two axes.
    fx_in, fy_in = 500.0 * 224 / 640, 510.0 * 224 / 480
    assert focal_at_input_px(500.0, 510.0, 640, 480, (224, 224)) == pytest.approx(
        math.sqrt(fx_in * fy_in)
    )


def test_canonical_camera_from_a_field_of_view_and_its_validation():
    camera = CanonicalCamera.from_hfov('rooms', 90.0, 64, 48)
    assert camera.fx_px == pytest.approx(32.0) and camera.fy_px == camera.fx_px
    assert camera.focal_at_input_px((48, 64)) == pytest.approx(32.0)
    assert camera.focal_at_input_px((24, 32)) == pytest.approx(16.0)
    assert 'rooms: fx 32, fy 32 px at 64x48, resized to 32x24' == camera.describe((24, 32))
    with pytest.raises(ConfigError, match='positive'):
        CanonicalCamera('x', 0.0, 1.0, 64, 48)
    with pytest.raises(ConfigError, match='missing'):
        CanonicalCamera.from_dict({'name': 'x', 'fx_px': 1.0})
    for hfov in (0.0, 180.0, -10.0):
        with pytest.raises(ConfigError, match='field of view'):
            CanonicalCamera.from_hfov('x', hfov, 64, 48)


class CanonicalDepth:
    """A network that predicts 2 m everywhere for its canonical camera (focal 50 px)."""

    input_hw = (24, 32)
    depth_range_m = (0.5, 10.0)
    canonical_focal_px = 50.0 * 32 / 64  # the canonical camera: fx 50 px at 64x48

    def infer(self, image):
        n = image.shape[0]
        return np.full((n, 1, 24, 32), 2.0, np.float32), np.full((n, 1, 24, 32), 0.9, np.float32)


RGB = np.full((48, 64, 3), 100, np.uint8)


def camera(fx_px):
    return CameraModel(width=64, height=48, fx_px=fx_px, fy_px=fx_px, cx_px=31.5, cy_px=23.5)


def test_depth_is_converted_with_the_frames_focal_length():
    pipe = DepthPipeline(CanonicalDepth())
    same = pipe.process_rgb(RGB, camera(50.0))  # the canonical camera itself: unchanged
    assert same.scale_source == 'camera' and same.depth_scale == pytest.approx(1.0)
    np.testing.assert_allclose(same.depth_m, 2.0)
    wide = pipe.process_rgb(RGB, camera(25.0))  # half the focal length: objects half as big
    assert wide.depth_scale == pytest.approx(0.5)
    np.testing.assert_allclose(wide.depth_m, 1.0)  # so the same picture is half as far
    np.testing.assert_allclose(wide.cloud.xyz[..., 2], 1.0)  # and the cloud with it
    assert depth_scale(camera(25.0), (24, 32), 25.0) == pytest.approx(0.5)


def test_the_model_range_scales_with_the_depth_but_configured_limits_do_not():
    pipe = DepthPipeline(CanonicalDepth(), PipelineConfig(max_depth_m=3.0))
    tele = pipe.process_rgb(RGB, camera(100.0))  # 4 m: beyond the configured 3 m
    assert (tele.depth_m == np.inf).all()  # REP 117: nothing within range
    pipe = DepthPipeline(CanonicalDepth())
    assert pipe.depth_range_m(scale=2.0) == (1.0, 20.0)


def test_a_limit_beyond_what_the_model_predicts_on_this_camera_is_said_per_camera():
    # min_depth_m 6 m: fine for the canonical camera (model range 0.5-10 m) ...
    pipe = DepthPipeline(CanonicalDepth(), PipelineConfig(min_depth_m=6.0))
    assert pipe.camera_depth_range_m(pipe.config, None) == (6.0, 10.0)
    assert pipe.camera_depth_range_m(pipe.config, camera(50.0)) == (6.0, 10.0)
    # ... but a lens of half the focal length halves what the model can reach (5 m).
    with pytest.raises(ConfigError, match=r'\[0\.25, 5\] m on this camera .*x0\.5'):
        pipe.camera_depth_range_m(pipe.config, camera(25.0))
    with pytest.raises(ConfigError, match='on this camera'):  # a frame of it: that frame only
        pipe.process_rgb(RGB, camera(25.0))
    np.testing.assert_allclose(pipe.process_rgb(RGB, camera(100.0)).depth_m, -np.inf)  # 4 m < 6


def test_without_a_camera_the_canonical_camera_is_assumed_and_said():
    pipe = DepthPipeline(CanonicalDepth())
    result = pipe.process_rgb(RGB, None)
    assert result.scale_source == 'assumed canonical' and result.depth_scale == 1.0
    np.testing.assert_allclose(result.depth_m, 2.0)
    misfit = pipe.process_rgb(
        RGB, CameraModel(width=32, height=24, fx_px=9.0, fy_px=9.0, cx_px=15.5, cy_px=11.5)
    )
    assert misfit.scale_source == 'assumed canonical' and misfit.camera_error


def test_the_correction_can_be_switched_off_and_models_without_a_canonical_camera_keep_theirs():
    off = DepthPipeline(CanonicalDepth(), PipelineConfig(focal_correction=False))
    result = off.process_rgb(RGB, camera(25.0))
    assert result.scale_source == 'off'
    np.testing.assert_allclose(result.depth_m, 2.0)

    class Legacy(CanonicalDepth):
        canonical_focal_px = None

    result = DepthPipeline(Legacy()).process_rgb(RGB, camera(25.0))
    assert result.scale_source == 'not recorded'
    np.testing.assert_allclose(result.depth_m, 2.0)
    with pytest.raises(ConfigError, match='focal_correction'):
        PipelineConfig(focal_correction='yes')
