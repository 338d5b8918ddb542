"""Camera model, ray tables and back-projection against closed forms and OpenCV's projection."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from moa_depth_ros.errors import CameraInfoError, ConfigError
from moa_depth_ros.frame.geometry import CameraModel, backproject, make_cloud

W, H = 96, 54  # non-square, and neither dimension a multiple of the other
DISTORTIONS = {
    'plumb_bob': (-0.28, 0.09, 0.0012, -0.0007, -0.012),
    'rational_polynomial': (0.35, -0.12, 0.0009, -0.0011, 0.02, 0.62, -0.05, 0.03),
    'equidistant': (0.04, -0.012, 0.003, -0.0006),
}


def camera(model='plumb_bob', d=(), **overrides):
    kwargs = {'width': W, 'height': H, 'fx_px': 70.0, 'fy_px': 68.0, 'cx_px': 47.3, 'cy_px': 26.1}
    kwargs.update(overrides)
    return CameraModel(distortion_model=model, d=d, **kwargs)


def pixel_grid(w=W, h=H):
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return u, v


def opencv_project(cam: CameraModel, points: np.ndarray, model: str, d) -> np.ndarray:
    pts = np.ascontiguousarray(points.reshape(-1, 3), dtype=np.float64)
    zero = np.zeros(3)
    if model == 'equidistant':
        uv, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, cam.k, np.array(d))
    else:
        uv, _ = cv2.projectPoints(pts, zero, zero, cam.k, np.array(d) if d else None)
    return uv.reshape(points.shape[:-1] + (2,))


def ray_table(cam: CameraModel) -> np.ndarray:
    """Return the camera's rays as [H, W, 3] (x/z, y/z, 1), NaN where none exists."""
    x, y, valid = cam.ray_planes()
    return np.stack([x, y, np.ones_like(x) if valid is None else valid], axis=-1)


def test_pinhole_rays_are_the_closed_form():
    cam = camera()
    rays = ray_table(cam)
    u, v = pixel_grid()
    assert rays.shape == (H, W, 3) and rays.dtype == np.float32
    np.testing.assert_allclose(rays[..., 0], (u - 47.3) / 70.0, atol=1e-6)
    np.testing.assert_allclose(rays[..., 1], (v - 26.1) / 68.0, atol=1e-6)
    np.testing.assert_array_equal(rays[..., 2], 1.0)


def test_tilted_plane_back_projects_onto_itself_without_distortion():
    cam = camera()
    u, v = pixel_grid()
    # Plane n . X = c with a tilt in both directions; depth along z in closed form.
    n, c = np.array([0.2, -0.35, 1.0]), 3.0
    depth = c / (n[0] * (u - cam.cx_px) / cam.fx_px + n[1] * (v - cam.cy_px) / cam.fy_px + n[2])
    points = backproject(depth.astype(np.float32), cam)
    assert points.shape == (H, W, 3)
    np.testing.assert_allclose(points @ n, c, rtol=1e-5)
    np.testing.assert_allclose(points[..., 0], (u - cam.cx_px) / cam.fx_px * depth, rtol=1e-5)
    np.testing.assert_allclose(points[..., 2], depth, rtol=1e-6)
    # REP 103 optical frame: right of the principal point is +x, below it is +y.
    assert points[0, -1, 0] > 0 and points[0, -1, 1] < 0 and points[-1, 0, 1] > 0


@pytest.mark.parametrize('model', list(DISTORTIONS))
def test_distorted_plane_at_known_distance_reprojects_onto_every_pixel(model):
    d = DISTORTIONS[model]
    cam = camera(model, d)
    distance_m = 2.5
    points = backproject(np.full((H, W), distance_m, np.float32), cam)
    valid = np.isfinite(points[..., 0])
    assert valid.mean() > 0.95
    np.testing.assert_array_equal(points[..., 2][valid], distance_m)
    # OpenCV's forward projection (an independent implementation of the same lens model)
    # must land every recovered point back on the pixel it came from.
    uv = opencv_project(cam, points[valid], model, d)
    u, v = pixel_grid()
    error_px = np.hypot(uv[:, 0] - u[valid], uv[:, 1] - v[valid])
    assert error_px.max() < 1e-3
    # And distortion really moved the rays away from the pinhole ones.
    pinhole = ray_table(camera())
    assert np.nanmax(np.abs(ray_table(cam)[..., 0] - pinhole[..., 0])) > 0.01


def _opencv_4_calib3d(monkeypatch):
    """Give cv2 the Python signatures of OpenCV 4.5/4.6, what ROS installs on Humble/Jazzy.

    There, undistortPoints takes no criteria (the iterative form is undistortPointsIter) and
    fisheye.undistortPoints takes criteria only from 4.6 on. On a real OpenCV 4 (the
    compatibility lane runs 4.6) nothing is patched: the real signatures are the test.
    """
    if int(cv2.__version__.split('.')[0]) < 5:
        return
    real_plain, real_fisheye = cv2.undistortPoints, cv2.fisheye.undistortPoints

    def no_criteria(real, name):
        def call(*args, **kwargs):
            if 'criteria' in kwargs:
                raise TypeError(f"'criteria' is an invalid keyword argument for {name}()")
            return real(*args, **kwargs)

        return call

    def iterative(src, k, d, r, p, criteria):
        return real_plain(src, k, d, R=r, P=p, criteria=criteria)

    monkeypatch.setattr(cv2, 'undistortPoints', no_criteria(real_plain, 'undistortPoints'))
    monkeypatch.setattr(cv2, 'undistortPointsIter', iterative, raising=False)
    monkeypatch.setattr(
        cv2.fisheye, 'undistortPoints', no_criteria(real_fisheye, 'fisheye_undistortPoints')
    )


@pytest.mark.parametrize('model', list(DISTORTIONS))
def test_distorted_rays_come_out_the_same_with_the_opencv_ros_installs(model, monkeypatch):
    _opencv_4_calib3d(monkeypatch)
    d = DISTORTIONS[model]
    cam = camera(model, d, cx_px=47.19)  # a model no other test caches a ray table for
    rays = ray_table(cam)
    valid = np.isfinite(rays[..., 0])
    assert valid.mean() > 0.95
    uv = opencv_project(cam, rays[valid], model, d)
    u, v = pixel_grid()
    assert np.hypot(uv[:, 0] - u[valid], uv[:, 1] - v[valid]).max() < 1e-3


@pytest.mark.parametrize('model', list(DISTORTIONS))
def test_project_matches_opencv(model):
    d = DISTORTIONS[model]
    cam = camera(model, d)
    rng = np.random.default_rng(0)
    points = np.stack(
        [rng.uniform(-1, 1, 200), rng.uniform(-0.6, 0.6, 200), rng.uniform(0.5, 4, 200)], -1
    )
    np.testing.assert_allclose(
        cam.project(points), opencv_project(cam, points, model, d), atol=1e-8
    )


def test_rays_beyond_the_lens_fold_are_nan_not_wrong():
    # r_d = r (1 - 0.5 r^2) peaks at r = sqrt(2/3), r_d = 0.544: no ray reaches farther out.
    cam = CameraModel(
        width=200, height=120, fx_px=100.0, fy_px=100.0, cx_px=99.5, cy_px=59.5,
        distortion_model='plumb_bob', d=(-0.5, 0.0, 0.0, 0.0, 0.0),
    )  # fmt: skip
    rays = ray_table(cam)
    u, v = pixel_grid(200, 120)
    radius = np.hypot((u - 99.5) / 100.0, (v - 59.5) / 100.0)
    invalid = np.isnan(rays[..., 0])
    assert invalid[radius > 0.545].all()
    assert not invalid[radius < 0.54].any()
    assert np.isnan(rays[..., 2][invalid]).all()  # z NaN too, so the points are NaN
    points = backproject(np.full((120, 200), 1.0, np.float32), cam)
    assert np.isnan(points[invalid]).all()


@pytest.mark.parametrize('model', ['none', 'plumb_bob'])
def test_binning_and_roi_match_the_full_resolution_rays(model):
    d = () if model == 'none' else DISTORTIONS['plumb_bob']
    full = SimpleNamespace(
        width=320, height=240, distortion_model='plumb_bob', d=list(d),
        k=[260.0, 0, 161.0, 0, 250.0, 118.0, 0, 0, 1], r=[1, 0, 0, 0, 1, 0, 0, 0, 1],
        p=[0.0] * 12, binning_x=0, binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False),
    )  # fmt: skip
    binned = SimpleNamespace(**vars(full))
    binned.binning_x, binned.binning_y = 2, 4
    binned.roi = SimpleNamespace(x_offset=40, y_offset=16, width=200, height=160, do_rectify=True)
    cam_full = CameraModel.from_camera_info(full)
    cam = CameraModel.from_camera_info(binned)
    assert cam.size == (100, 40)
    u, v = pixel_grid(100, 40)
    # Pixel (u, v) of the binned ROI image is pixel (2u + 40, 4v + 16) of the full image.
    expected = ray_table(cam_full)[(4 * v + 16).astype(int), (2 * u + 40).astype(int)]
    np.testing.assert_allclose(ray_table(cam), expected, atol=2e-6)
    assert cam.p[0] == pytest.approx(130.0) and cam.p[2] == pytest.approx((161 - 40) / 2)


def test_scaled_model_follows_cv2_resize_pixel_centres():
    cam = camera()
    half = cam.scaled(48, 27)
    assert half.size == (48, 27)
    u, v = pixel_grid(48, 27)
    # cv2.resize: a pixel at x' in the small image samples x = (x' + 0.5) / s - 0.5.
    u_src, v_src = (u + 0.5) * 2 - 0.5, (v + 0.5) * 2 - 0.5
    np.testing.assert_allclose(ray_table(half)[..., 0], (u_src - cam.cx_px) / cam.fx_px, atol=1e-6)
    np.testing.assert_allclose(ray_table(half)[..., 1], (v_src - cam.cy_px) / cam.fy_px, atol=1e-6)
    assert half.p[5] == pytest.approx(cam.fy_px / 2) and half.d == cam.d
    assert cam.scaled(W, H) is cam


def test_camera_info_fields_rebuild_the_same_model():
    cam = camera('equidistant', DISTORTIONS['equidistant']).scaled(64, 36)
    fields = cam.to_camera_info_fields()
    assert (fields['width'], fields['height'], fields['distortion_model']) == (
        64, 36, 'equidistant',
    )  # fmt: skip
    assert len(fields['k']) == 9 and len(fields['p']) == 12 and len(fields['r']) == 9
    msg = SimpleNamespace(**{k: v for k, v in fields.items() if k != 'roi'})
    msg.roi = SimpleNamespace(**fields['roi'])
    assert CameraModel.from_camera_info(msg) == cam


def info(**overrides):
    msg = SimpleNamespace(
        width=64, height=48, distortion_model='plumb_bob', d=[0.0] * 5,
        k=[50.0, 0, 32, 0, 50.0, 24, 0, 0, 1], r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1], p=[0.0] * 12,
        binning_x=0, binning_y=0, roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0),
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ('overrides', 'words'),
    [
        ({'k': [0.0, 0, 32, 0, 50, 24, 0, 0, 1]}, ['fx', '0.0']),
        ({'k': [50.0, 0, float('nan'), 0, 50, 24, 0, 0, 1]}, ['k[2]', 'nan']),
        ({'k': [50.0, 0, 32, 0, float('inf'), 24, 0, 0, 1]}, ['k[4]', 'inf']),
        ({'k': [50.0, 0, 32]}, ['k', '9', '3']),
        ({'width': 0, 'height': 0}, ['0x0']),
        ({'d': [0.1, 0.2, float('nan'), 0, 0]}, ['d[2]', 'nan']),
        ({'distortion_model': 'equidistant', 'd': [0.1, 0, 0, 0, 0.3]}, ['equidistant', '5']),
        ({'distortion_model': 'mystery', 'd': [0.1]}, ["'mystery'"]),
        ({'roi': SimpleNamespace(x_offset=40, y_offset=0, width=40, height=10)}, ['roi', '64x48']),
    ],
)
def test_bad_camera_info_raises_naming_field_and_value(overrides, words):
    with pytest.raises(CameraInfoError) as error:
        CameraModel.from_camera_info(info(**overrides))
    for word in words:
        assert word in str(error.value)


def test_size_mismatch_names_both_sizes():
    with pytest.raises(CameraInfoError, match='96x54.*640x480'):
        camera().check_size(640, 480)
    with pytest.raises(CameraInfoError, match='96x54'):
        backproject(np.ones((H, W + 1), np.float32), camera())


def test_ray_table_is_computed_once_and_shared():
    cam = camera('plumb_bob', DISTORTIONS['plumb_bob'])
    planes = cam.ray_planes()
    assert cam.ray_planes() is planes
    # An equal model (e.g. rebuilt from the next CameraInfo message) hits the same cache entry.
    assert camera('plumb_bob', DISTORTIONS['plumb_bob']).ray_planes() is planes
    with pytest.raises(ValueError):
        planes[0][0, 0] = 1.0  # shared, so read-only


def test_decimated_organized_cloud_keeps_every_nth_pixel_on_a_non_square_image():
    cam = camera('plumb_bob', DISTORTIONS['plumb_bob'])
    u, v = pixel_grid()
    depth = (1.0 + u / W + 2 * v / H).astype(np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = (u % 256).astype(np.uint8)
    rgb[..., 1] = (v % 256).astype(np.uint8)
    cloud = make_cloud(depth, cam, rgb=rgb, decimation=5)
    assert cloud.organized and cloud.xyz.shape == (11, 20, 3)  # ceil(54/5) x ceil(96/5)
    full = backproject(depth, cam)
    np.testing.assert_array_equal(cloud.xyz, full[::5, ::5])
    np.testing.assert_array_equal(cloud.rgb[..., 0], u[::5, ::5])
    np.testing.assert_array_equal(cloud.rgb[..., 1], v[::5, ::5])


def test_invalid_depth_blanks_points_and_compact_cloud_drops_them():
    cam = camera()
    u, _ = pixel_grid()
    depth = (0.5 + 5.0 * u / (W - 1)).astype(np.float32)  # 0.5 .. 5.5 m across the columns
    depth[3, 7] = np.nan
    inside = (depth >= 1.0) & (depth <= 4.0)
    depth[~inside] = np.nan  # what the pipeline's depth range leaves for the cloud
    cloud = make_cloud(depth, cam)
    z = cloud.xyz[..., 2]
    assert np.isnan(z[~inside]).all() and np.isfinite(z[inside]).all()
    compact = make_cloud(depth, cam, rgb=np.zeros((H, W, 3), np.uint8), organized=False)
    assert not compact.organized and compact.xyz.shape == (int(inside.sum()), 3)
    assert compact.rgb.shape == (int(inside.sum()), 3)
    assert np.isfinite(compact.xyz).all()


def test_bad_decimation_is_a_config_error():
    with pytest.raises(ConfigError, match='decimation'):
        make_cloud(np.ones((H, W), np.float32), camera(), decimation=0)


def test_camera_model_cache_converts_each_calibration_once():
    from types import SimpleNamespace

    from moa_depth_ros.frame.geometry import CameraModelCache

    def info(fx=70.0, **changes):
        fields = {
            'height': H, 'width': W, 'distortion_model': 'plumb_bob', 'd': [0.0] * 5,
            'k': [fx, 0.0, 47.3, 0.0, 68.0, 26.1, 0.0, 0.0, 1.0], 'r': [], 'p': [0.0] * 12,
            'binning_x': 0, 'binning_y': 0,
            'roi': SimpleNamespace(x_offset=0, y_offset=0, height=0, width=0),
        }  # fmt: skip
        return SimpleNamespace(**{**fields, **changes})

    cache = CameraModelCache()
    assert cache.update(None) == (None, '')
    model, error = cache.update(info())
    assert error == '' and model.fx_px == 70.0
    assert cache.update(info())[0] is model  # the same calibration, resent: not converted again
    assert cache.update(info(fx=71.0))[0].fx_px == 71.0
    bad = info(k=[0.0] * 9)
    model, error = cache.update(bad)
    assert model is None and 'not calibrated' in error and cache.error == error
    assert cache.update(bad) == (None, '')  # the same bad calibration is reported once
