"""Rectification against OpenCV's own maps, and the byte-bounded caches of maps and rays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from moa_depth_ros.frame import geometry, rectify
from moa_depth_ros.frame.geometry import ByteBoundedCache, CameraModel

W, H = 96, 54  # non-square
DISTORTIONS = {
    'plumb_bob': (0.08, -0.12, 0.0012, -0.0007, 0.0),
    'rational_polynomial': (0.35, -0.12, 0.0009, -0.0011, 0.02, 0.62, -0.05, 0.03),
    'equidistant': (0.04, -0.012, 0.003, -0.0006),
}
# A rectified camera a little narrower than the raw one, as camera_calibration's alpha 0 gives.
P = (66.0, 0.0, 48.2, 0.0, 0.0, 65.0, 27.4, 0.0, 0.0, 0.0, 1.0, 0.0)


def raw_camera(model='plumb_bob', p=P, **overrides):
    kwargs = {
        'width': W,
        'height': H,
        'fx_px': 70.0,
        'fy_px': 68.0,
        'cx_px': 47.3,
        'cy_px': 26.1,
        'distortion_model': model,
        'd': DISTORTIONS[model],
        'p': p,
    }
    kwargs.update(overrides)
    return CameraModel(**kwargs)


@pytest.mark.parametrize('model', list(DISTORTIONS))
def test_maps_are_opencvs_init_undistort_rectify_map(model):
    cam = raw_camera(model)
    maps = rectify.Rectifier(cam).maps
    new_k = np.array(P).reshape(3, 4)[:, :3]
    init = cv2.fisheye.initUndistortRectifyMap if model == 'equidistant' else None
    init = init or cv2.initUndistortRectifyMap
    map_x, map_y = init(cam.k, np.array(cam.d), np.eye(3), new_k, (W, H), cv2.CV_32FC1)
    seen = np.ones((H, W), bool) if maps.invalid is None else ~maps.invalid
    assert seen.mean() > 0.8
    np.testing.assert_allclose(maps.map_x[seen], map_x[seen], atol=1e-3)
    np.testing.assert_allclose(maps.map_y[seen], map_y[seen], atol=1e-3)
    # Unseen pixels are exactly those whose source lies outside the raw image.
    outside = (map_x < 0) | (map_x > W - 1) | (map_y < 0) | (map_y > H - 1)
    np.testing.assert_array_equal(~seen, outside)


def test_the_rectified_camera_is_p_with_no_distortion():
    out = rectify.Rectifier(raw_camera()).output
    assert (out.fx_px, out.fy_px, out.cx_px, out.cy_px) == (66.0, 65.0, 48.2, 27.4)
    assert out.d == (0.0,) * 5 and out.r == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert out.p == P and out.distortion_kind == 'none'
    fields = out.to_camera_info_fields()
    assert fields['d'] == [0.0] * 5 and fields['k'] == [66.0, 0, 48.2, 0, 65.0, 27.4, 0, 0, 1]


@pytest.mark.parametrize('model', list(DISTORTIONS))
def test_a_rectified_pixel_shows_the_raw_pixel_its_ray_hits(model):
    cam = raw_camera(model)
    rect = rectify.Rectifier(cam)
    # A raw image whose values are its own column (float) and row (nearest, depth-like).
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    columns = rect.rectify_image(u)
    rows = rect.rectify_depth(v + 1.0) - 1.0
    out = rect.output
    # The ray of each rectified pixel, projected by the raw lens model: where it must sample.
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack(
        [(uu - out.cx_px) / out.fx_px, (vv - out.cy_px) / out.fy_px, np.ones_like(uu)], -1
    )
    expected = cam.project(rays)
    seen = ~rect.invalid if rect.invalid is not None else np.ones((H, W), bool)
    np.testing.assert_allclose(columns[seen], expected[..., 0][seen], atol=0.05)
    np.testing.assert_array_equal(rows[seen], np.round(expected[..., 1][seen]))  # nearest
    assert np.isnan(rect.rectify_depth(np.ones((H, W), np.float32))[~seen]).all()


def test_an_undistorted_camera_whose_p_is_k_passes_images_through():
    cam = CameraModel(width=W, height=H, fx_px=70.0, fy_px=68.0, cx_px=47.3, cy_px=26.1)
    rect = rectify.Rectifier(cam)
    image = np.zeros((H, W, 3), np.uint8)
    assert rect.identity and rect.rectify_image(image) is image and rect.maps is None


def test_declared_rectified_input_is_not_resampled_and_its_camera_is_p():
    cam = raw_camera()  # D non-zero, as image_proc's image_rect keeps its camera's camera_info
    rect = rectify.Rectifier(cam, input_rectified=True)
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert rect.identity and rect.rectify_image(image) is image and rect.invalid is None
    assert rect.output == rectify.rectified_camera(cam)
    assert rect.output.fx_px == 66.0  # P's, not K's 70


def test_a_stereo_rotation_converts_depth_to_the_rectified_axis():
    angle = np.radians(5.0)
    r = (np.cos(angle), 0.0, np.sin(angle), 0.0, 1.0, 0.0, -np.sin(angle), 0.0, np.cos(angle))
    cam = raw_camera(r=r)
    rect = rectify.Rectifier(cam)
    # A wall at z_raw = 2 m in the raw frame: in the rectified frame each point is R @ X.
    rectified = rect.rectify_depth(np.full((H, W), 2.0, np.float32))
    out = rect.output
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    ray_rect = np.stack(
        [(uu - out.cx_px) / out.fx_px, (vv - out.cy_px) / out.fy_px, np.ones_like(uu)], -1
    )
    ray_raw = ray_rect @ np.array(r).reshape(3, 3)  # R^T applied to row vectors
    expected = 2.0 / ray_raw[..., 2]  # z_rect / z_raw along the ray
    seen = np.isfinite(rectified)
    assert seen.mean() > 0.5
    np.testing.assert_allclose(rectified[seen], expected[seen], rtol=1e-5)


def test_unsupported_sizes_are_typed_errors():
    from moa_depth_ros.errors import CameraInfoError

    with pytest.raises(CameraInfoError, match='96x54 image but the image is 10x10'):
        rectify.Rectifier(raw_camera()).rectify_image(np.zeros((10, 10, 3), np.uint8))


# -- byte-bounded caches ------------------------------------------------------------------------


def test_the_cache_stays_under_its_byte_budget_and_evicts_the_least_recently_used():
    cache = ByteBoundedCache(10_000, 'test')
    table = lambda n: (np.zeros(n, np.uint8), None)  # noqa: E731
    cache.get('a', lambda: table(4000))
    cache.get('b', lambda: table(4000))
    cache.get('a', lambda: table(1))  # a hit: 'a' is now the most recent
    cache.get('c', lambda: table(4000))  # 12000 > 10000: 'b' goes
    assert 'a' in cache and 'c' in cache and 'b' not in cache and cache.nbytes == 8000
    huge = cache.get('d', lambda: table(20_000))  # returned, never kept
    assert huge[0].nbytes == 20_000 and 'd' not in cache and cache.nbytes == 8000


def test_ray_tables_and_rectification_maps_are_bounded_in_bytes(monkeypatch):
    # A zooming camera (every frame a new calibration) must not grow the node: before, the
    # ray tables were 16 entries whatever their size (16 x 4K tables = 1.2 GB).
    for cache in (geometry.RAY_TABLE_CACHE, rectify.RECTIFY_MAP_CACHE):
        assert isinstance(cache, ByteBoundedCache) and cache.max_bytes <= 256 * 2**20
    monkeypatch.setattr(geometry, 'RAY_TABLE_CACHE', ByteBoundedCache(400_000, 'rays'))
    monkeypatch.setattr(rectify, 'RECTIFY_MAP_CACHE', ByteBoundedCache(600_000, 'maps'))
    for i in range(40):
        cam = raw_camera(fx_px=70.0 + i * 0.01)
        cam.ray_planes()
        rectify.Rectifier(cam).rectify_image(np.zeros((H, W, 3), np.uint8))
    for cache in (geometry.RAY_TABLE_CACHE, rectify.RECTIFY_MAP_CACHE):
        assert 0.5 * cache.max_bytes < cache.nbytes <= cache.max_bytes
        assert (raw_camera(fx_px=70.0), 1) not in cache and raw_camera(fx_px=70.0) not in cache
    newest = raw_camera(fx_px=70.39)
    assert (newest, 1) in geometry.RAY_TABLE_CACHE and newest in rectify.RECTIFY_MAP_CACHE
