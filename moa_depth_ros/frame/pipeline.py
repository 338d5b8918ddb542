"""The ROS-agnostic frame pipeline: camera image in -> depth, confidence and points out.

``DepthPipeline`` is what the node and the offline bag tool both run per frame: decode the
image (any encoding ``msgs`` supports), rectify it with its camera model (``rectify``: every
output describes the rectified pinhole camera, K = P[:3, :3], as ROS consumers read it),
resize it once to the network input, run the estimator, bring depth and confidence back once
to the output resolution (the camera's, by default), mark depths outside the configured range
the way REP 117 does (+Inf beyond, -Inf below, NaN for no estimate), and back-project through
the rectified camera's cached ray table. It holds no per-frame state, so a bad frame raises
a typed error and the next frame runs as if nothing happened.

The estimator is anything with ``.input_hw``, ``.depth_range_m`` and
``.infer(float32 [N, 3, H, W] RGB in [0, 1]) -> (depth_m, confidence)`` (a ``DepthEngine`` or a
test stand-in).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional, Protocol, Union

import cv2
import numpy as np

from moa_depth_ros.errors import CameraInfoError, ConfigError, EngineError, InvalidImageError
from moa_depth_ros.frame import geometry, msgs, rectify
from moa_depth_ros.frame.scale import depth_scale

# Depth upsampling choices. NEAREST_EXACT samples pixel centres like LINEAR does, so the
# camera model scaled by CameraModel.scaled matches both (plain NEAREST is shifted by half a
# source pixel).
INTERPOLATIONS = {
    'linear': cv2.INTER_LINEAR,
    'nearest': cv2.INTER_NEAREST_EXACT,
    'cubic': cv2.INTER_CUBIC,
}
#: Depth outside the range: REP 117's +Inf (beyond) / -Inf (too near), or clamped to it.
OUT_OF_RANGE = ('rep117', 'clamp')
STAGES = ('decode', 'preprocess', 'network', 'postprocess', 'cloud')

#: A camera model, None, or a function returning one: called once per frame, before the
#: network (the image is rectified with it), so the node can wait there for the CameraInfo
#: stamped like the image.
CameraSource = Union[geometry.CameraModel, Callable[[], Optional[geometry.CameraModel]], None]


class DepthEstimator(Protocol):
    """What the pipeline needs from an inference engine.

    An estimator may also have ``canonical_focal_px`` (``moa_depth_ros.frame.scale``): its depth is
    then for that focal length at its input, and the pipeline converts it to the camera's.
    """

    input_hw: tuple[int, int]
    depth_range_m: tuple[float, float]

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map float32 [N, 3, H, W] RGB in [0, 1] to (depth_m, confidence) [N, 1, H, W]."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Per-frame settings; every field is validated on construction (ConfigError).

    min_depth_m / max_depth_m: valid depth range; None takes the model's range. Depths outside
        it become +Inf (beyond) and -Inf (below) as REP 117 has it (``out_of_range='rep117'``)
        or are clamped to it (``'clamp'``); NaN is only where the network gives no finite
        value, or the rectified pixel sees no camera pixel.
    cloud / cloud_rgb: build a point cloud (needs a camera model), coloured from the image.
    decimation: keep every n-th pixel of the cloud in both directions; 0 (auto) takes the
        smallest n whose organized cloud fits in ``cloud_budget_bytes``.
    cloud_budget_bytes: the size an auto-decimated cloud stays within.
    organized: H x W cloud with NaN points, or a compact 1 x N cloud of finite points.
    interpolation: depth/confidence upsampling, 'linear', 'nearest' or 'cubic'.
    output_hw: (height, width) of the depth output; None keeps the camera image size.
    focal_correction: convert a model's canonical-camera depth with the frame's focal length
        (``moa_depth_ros.frame.scale``); off, depth is published as the model predicts it.
    flip_average: run the network on the image and on its mirror image and average the two
        predictions (the second mirrored back): the papers' test-time flip. Twice the network
        time per frame, for a small accuracy gain (see ``infer_flip_average``).
    input_rectified: the images are already rectified (image_proc's image_rect): the camera
        is P, D is ignored and nothing is resampled. False (raw images): each frame is
        rectified with its camera model (``rectify.Rectifier``) before the network.
    """

    min_depth_m: float | None = None
    max_depth_m: float | None = None
    cloud: bool = True
    cloud_rgb: bool = True
    decimation: int = 1
    cloud_budget_bytes: int = 320 * 1024
    organized: bool = True
    interpolation: str = 'linear'
    out_of_range: str = 'rep117'
    output_hw: tuple[int, int] | None = None
    focal_correction: bool = True
    flip_average: bool = False
    input_rectified: bool = False

    def __post_init__(self) -> None:
        for name in ('min_depth_m', 'max_depth_m'):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f'{name} must be a number or None, got {value!r}')
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f'{name} must be finite and >= 0, got {value!r}')
        for name in (
            'cloud',
            'cloud_rgb',
            'organized',
            'focal_correction',
            'flip_average',
            'input_rectified',
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f'{name} must be true or false, got {getattr(self, name)!r}')
        d = self.decimation
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ConfigError(f'decimation must be an integer >= 1, or 0 (auto), got {d!r}')
        b = self.cloud_budget_bytes
        if isinstance(b, bool) or not isinstance(b, int) or b < 16:
            raise ConfigError(f'cloud_budget_bytes must be an integer >= 16, got {b!r}')
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f'interpolation must be one of {", ".join(INTERPOLATIONS)}, '
                f'got {self.interpolation!r}'
            )
        if self.out_of_range not in OUT_OF_RANGE:
            raise ConfigError(
                f'out_of_range must be one of {", ".join(OUT_OF_RANGE)}, got {self.out_of_range!r}'
            )
        if self.output_hw is not None:
            hw = tuple(self.output_hw)
            if len(hw) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in hw
            ):
                raise ConfigError(
                    f'output_hw must be None or (height, width) > 0, got {self.output_hw!r}'
                )
            object.__setattr__(self, 'output_hw', hw)


@dataclasses.dataclass
class FrameResult:
    """Everything one frame produced.

    rgb: uint8 [H, W, 3], the image the network saw at input resolution: the decoded image
        rectified with its camera (as it came without a camera, or when it is declared
        rectified; for rgb8 messages then a read-only view of the message buffer).
    depth_m: float32 [h, w] metres along the optical axis of the rectified camera, output
        resolution; REP 117: +Inf beyond the range, -Inf below it, NaN no estimate.
    confidence: float32 [h, w] in [0, 1]; 0 where depth is not a finite in-range value.
    cloud: the point cloud, or None (disabled, or no camera model).
    camera: the rectified pinhole camera matching ``depth_m`` (D = 0, R = I, K = P[:3, :3],
        scaled to the output), or None.
    timings_ms: milliseconds per stage: decode, preprocess (rectification and resize),
        network, postprocess, cloud.
    camera_error: why the camera passed in was not used ('' when it was, or when none was
        given): a calibration for another image size costs the cloud, never the depth.
    depth_scale: the factor applied to the network's depth (rectified camera focal /
        canonical focal at the network input; 1.0 when not converted).
    scale_source: 'camera' (converted with the frame's camera), 'assumed canonical' (a model
        with a canonical camera, but no usable camera for this frame), 'off' (the correction
        is switched off) or 'not recorded' (the model has no canonical camera).
    range_m: the (min, max) depth kept in ``depth_m``: the configured limits, else the
        model's range converted like its depth.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    confidence: np.ndarray
    cloud: geometry.PointCloud | None
    camera: geometry.CameraModel | None
    timings_ms: dict[str, float]
    camera_error: str = ''
    depth_scale: float = 1.0
    scale_source: str = 'not recorded'
    range_m: tuple[float, float] = (0.0, float('inf'))


@dataclasses.dataclass(frozen=True)
class InferredFrame:
    """A frame between the network and its outputs (``DepthPipeline.infer_msg`` -> ``finish``).

    rgb: the image the network saw (see ``FrameResult.rgb``).
    camera: the rectified camera of ``rgb`` at its size, or None.
    rectifier: what rectified ``rgb`` (its invalid-pixel mask is needed at output size), or
        None.
    depth_raw, confidence_raw: the estimator's outputs, as it returned them.
    config: the settings this frame runs with, from its start to its outputs.
    timings_ms: decode, preprocess and network so far.
    camera_error: see ``FrameResult.camera_error``.
    """

    rgb: np.ndarray
    camera: geometry.CameraModel | None
    rectifier: rectify.Rectifier | None
    depth_raw: Any
    confidence_raw: Any
    config: PipelineConfig
    timings_ms: dict[str, float]
    camera_error: str = ''


# ------------------------------------------------------------------------------ stage functions


def check_rgb(rgb: Any) -> np.ndarray:
    """Validate a uint8 RGB [H, W, 3] image (typed error otherwise); no copy."""
    if not isinstance(rgb, np.ndarray):
        raise InvalidImageError(f'image must be a numpy array, got {type(rgb).__name__}')
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidImageError(f'image must be uint8 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImageError(f'image must not be empty, got shape {rgb.shape}')
    return rgb


def resize_to_input(image: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Resize an [H, W, C] image (uint8 or float32) to the network input ``(h, w)``.

    The one resize between a camera image and the network: the node, the bag tool, training
    data and evaluation all call it, so a model is trained and scored on what a robot feeds it.

    Downscaling averages the pixels each network pixel covers, so it does not alias: exact
    2x box halvings (OpenCV's fast integer INTER_AREA path) while the image is at least twice
    the input size, then INTER_LINEAR for the last factor below 2. On a VGA frame this matches
    one-step INTER_AREA to within a quarter of a grey level and is ~8x faster (1.3 -> 0.15 ms).
    Upscaling is INTER_LINEAR. An image already at the input size is returned as it is.
    """
    h, w = input_hw
    rgb = image

    def halvable(current: np.ndarray) -> bool:
        rows, cols = current.shape[:2]
        return rows >= 2 * h and cols >= 2 * w and rows % 2 == 0 and cols % 2 == 0

    while halvable(rgb):
        rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] != (h, w):
        # A factor >= 2 can remain only for odd sizes: exact (slow) INTER_AREA for those.
        far = rgb.shape[0] >= 2 * h or rgb.shape[1] >= 2 * w
        shrinking = rgb.shape[0] >= h and rgb.shape[1] >= w
        rgb = cv2.resize(
            rgb, (w, h), interpolation=cv2.INTER_AREA if far and shrinking else cv2.INTER_LINEAR
        )
    return rgb


def preprocess(rgb: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB with ``resize_to_input``; return float32 [1, 3, h, w] in [0, 1]."""
    h, w = input_hw
    rgb = resize_to_input(rgb, input_hw)
    nchw = np.empty((1, 3, h, w), dtype=np.float32)
    np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=nchw[0], casting='unsafe')
    return nchw


def infer_flip_average(
    estimator: DepthEstimator, nchw: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``estimator`` on ``nchw`` and its mirror image; return the averaged planes [h, w].

    The test-time flip of the papers' evaluation (SPACE-CLIP's ``final_eval_flip_tta``): the
    prediction for the mirrored input is mirrored back and averaged with the plain one, depth
    and confidence alike. The official code averages after upsampling to the ground truth;
    linear upsampling with pixel centres commutes with mirroring, so averaging first is the
    same. Each pass's depth is what the model outputs (SPACE-CLIP clamps it to its range), so
    where only one of the two fell outside the range the average differs from the official
    average-then-clamp.
    """
    input_hw = tuple(nchw.shape[-2:])
    depth, confidence = _unpack(estimator.infer(nchw))
    # Copies: an engine may hand out the same output buffers on its next call.
    depth = _plane(depth, 'depth', input_hw).copy()
    confidence = _plane(confidence, 'confidence', input_hw).copy()
    mirrored = np.ascontiguousarray(nchw[..., ::-1])
    depth_m, confidence_m = _unpack(estimator.infer(mirrored))
    depth += _plane(depth_m, 'depth', input_hw)[:, ::-1]
    confidence += _plane(confidence_m, 'confidence', input_hw)[:, ::-1]
    depth *= np.float32(0.5)
    confidence *= np.float32(0.5)
    return depth, confidence


def _unpack(outputs: Any) -> tuple[Any, Any]:
    try:
        depth, confidence = outputs
    except (TypeError, ValueError) as e:
        raise EngineError(
            f'estimator infer() must return (depth, confidence), got {type(outputs).__name__}'
        ) from e
    return depth, confidence


def _plane(value: Any, name: str, input_hw: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value)
    squeezed = array.reshape(array.shape[-2:]) if array.ndim >= 2 else array
    if array.ndim < 2 or array.size != squeezed.size or squeezed.shape != tuple(input_hw):
        raise EngineError(
            f'estimator {name} must be [1, 1, {input_hw[0]}, {input_hw[1]}], '
            f'got {list(array.shape)}'
        )
    return np.ascontiguousarray(squeezed, dtype=np.float32)


def postprocess(
    depth_small: np.ndarray,
    confidence_small: np.ndarray,
    output_hw: tuple[int, int],
    range_m: tuple[float, float],
    interpolation: str = 'linear',
    out_of_range: str = 'rep117',
) -> tuple[np.ndarray, np.ndarray]:
    """Resize network depth/confidence [h, w] to ``output_hw`` and apply the depth range.

    Returns float32 (depth_m, confidence). ``out_of_range='rep117'``: finite depth beyond
    ``range_m`` is +Inf ("nothing within range", which Nav2 and depthimage_to_laserscan use to
    clear free space), below it -Inf ("too close"), and NaN is left for what the network gives
    no finite value; ``'clamp'`` clamps finite depth to the range. Confidence is clipped to
    [0, 1] and 0 wherever depth is not a finite value in range.
    """
    h, w = output_hw
    flag = INTERPOLATIONS[interpolation]
    lo, hi = range_m
    if out_of_range == 'clamp':
        depth_small = np.clip(depth_small, lo, hi)  # NaN stays NaN
    confidence_small = np.clip(confidence_small, 0.0, 1.0)
    # Linear and nearest upsampling only take convex combinations of the network's values, so
    # if those are finite and in range, every output pixel is too and no mask is needed.
    if flag != cv2.INTER_CUBIC and np.isfinite(depth_small).all():
        if lo <= float(depth_small.min()) and float(depth_small.max()) <= hi:
            return _resize(depth_small, h, w, flag), _resize(confidence_small, h, w, flag)
    depth = _resize(depth_small, h, w, flag)
    confidence = _resize(confidence_small, h, w, flag)
    if out_of_range == 'clamp':
        valid = cv2.inRange(depth, -3.4e38, 3.4e38)  # NaN (and Inf) stay invalid
        depth = np.clip(depth, lo, hi, out=depth)
    else:
        valid = cv2.inRange(depth, lo, hi)
    depth_m = np.full((h, w), np.nan, dtype=np.float32)
    if out_of_range == 'rep117':
        finite = np.isfinite(depth)  # the network's NaN / Inf stay "no estimate"
        depth_m[finite & (depth > hi)] = np.inf
        depth_m[finite & (depth < lo)] = -np.inf
    cv2.copyTo(depth, valid, depth_m)
    confidence_out = np.zeros((h, w), dtype=np.float32)
    cv2.copyTo(np.clip(confidence, 0.0, 1.0, out=confidence), valid, confidence_out)
    return depth_m, confidence_out


def _resize(plane: np.ndarray, h: int, w: int, flag: int) -> np.ndarray:
    if plane.shape == (h, w):
        return plane.copy()
    return cv2.resize(plane, (w, h), interpolation=flag)


# ------------------------------------------------------------------------------------ pipeline


class DepthPipeline:
    """Camera frame in -> depth, confidence and point cloud out (see the module docstring)."""

    def __init__(self, estimator: DepthEstimator, config: PipelineConfig | None = None) -> None:
        try:
            h, w = (int(v) for v in estimator.input_hw)
            lo, hi = (float(v) for v in estimator.depth_range_m)
        except (AttributeError, TypeError, ValueError) as e:
            raise EngineError(
                f'estimator {type(estimator).__name__} must have input_hw (h, w) and '
                f'depth_range_m (min, max): {e}'
            ) from e
        if h <= 0 or w <= 0 or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise EngineError(
                f'estimator {type(estimator).__name__} has input_hw ({h}, {w}) and '
                f'depth_range_m ({lo}, {hi}); need positive sizes and min < max'
            )
        if not callable(getattr(estimator, 'infer', None)):
            raise EngineError(f'estimator {type(estimator).__name__} has no infer() method')
        canonical = getattr(estimator, 'canonical_focal_px', None)
        if canonical is not None and not (
            isinstance(canonical, (int, float)) and math.isfinite(canonical) and canonical > 0
        ):
            raise EngineError(
                f'estimator {type(estimator).__name__} has canonical_focal_px {canonical!r}; '
                f'need a positive focal length or None'
            )
        self.canonical_focal_px = None if canonical is None else float(canonical)
        self.estimator = estimator
        self.input_hw = (h, w)
        self.model_range_m = (lo, hi)
        if config is not None and not isinstance(config, PipelineConfig):
            raise ConfigError(f'config must be a PipelineConfig, got {type(config).__name__}')
        config = config or PipelineConfig()
        self.depth_range_m(config)
        self.config = config

    def update_config(self, **changes: Any) -> PipelineConfig:
        """Replace config fields (validated; ConfigError leaves the old config in place)."""
        known = {f.name for f in dataclasses.fields(PipelineConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f'unknown pipeline setting(s) {", ".join(unknown)}; '
                f'known: {", ".join(sorted(known))}'
            )
        config = dataclasses.replace(self.config, **changes)
        self.depth_range_m(config)
        # One attribute assignment: a frame running concurrently sees the old or the new config.
        self.config = config
        return config

    def depth_range_m(
        self, config: PipelineConfig | None = None, scale: float = 1.0
    ) -> tuple[float, float]:
        """Return the (min, max) depth kept in the output: the config's, else the model's.

        ``scale`` converts the model's range like its depth (canonical to this camera). This
        is the one check that the limits leave a range (ConfigError). The pipeline runs it
        at scale 1 on every new config, and the node on every parameter change with the scale
        of the camera it has. One limit set beyond what the model can predict on a camera
        (say min_depth_m 5 where the model reaches 3 m) empties the range only for frames of
        that camera: each such frame is then this error, before its outputs.
        """
        config = config or self.config
        model_lo, model_hi = (v * scale for v in self.model_range_m)
        lo = model_lo if config.min_depth_m is None else config.min_depth_m
        hi = model_hi if config.max_depth_m is None else config.max_depth_m
        if lo >= hi:
            model = f'[{model_lo:g}, {model_hi:g}] m'
            if scale != 1.0:
                native_lo, native_hi = self.model_range_m
                model += (
                    f' on this camera (its [{native_lo:g}, {native_hi:g}] m converted with the '
                    f'focal length, x{scale:.4g})'
                )
            raise ConfigError(
                f'depth range [{lo:g}, {hi:g}] m is empty: min_depth_m must be below '
                f'max_depth_m, and a limit left unset (0 as a node parameter) is the '
                f"model's: {model}"
            )
        return (float(lo), float(hi))

    def camera_depth_range_m(
        self, config: PipelineConfig, camera: geometry.CameraModel | None
    ) -> tuple[float, float]:
        """``depth_range_m`` for frames of ``camera`` (None: the canonical camera is assumed).

        ``camera`` is the input's (raw or rectified) model; the scale is its rectified focal
        length's, as for its frames.
        """
        if camera is not None:
            camera = rectify.rectified_camera(camera)
        return self.depth_range_m(config, self._depth_scale(camera, config)[0])

    def process_msg(
        self,
        image_msg: msgs.CameraImageMessage,
        camera: CameraSource = None,
        config: PipelineConfig | None = None,
    ) -> FrameResult:
        """Decode a sensor_msgs/Image or CompressedImage (rclpy or rosbags) and process it.

        ``config`` overrides ``self.config`` for this frame (a caller that keeps its own
        immutable snapshot of settings and config passes it here).
        """
        return self.finish(self.infer_msg(image_msg, camera, config))

    def process_rgb(
        self,
        rgb: np.ndarray,
        camera: CameraSource = None,
        config: PipelineConfig | None = None,
    ) -> FrameResult:
        """Process a uint8 RGB [H, W, 3] image; ``camera`` should describe an H x W image.

        ``camera`` may be a function returning the camera model, called before the network
        (see ``CameraSource``).
        """
        return self.finish(self.infer_rgb(rgb, camera, config))

    def infer_msg(
        self,
        image_msg: msgs.CameraImageMessage,
        camera: CameraSource = None,
        config: PipelineConfig | None = None,
    ) -> InferredFrame:
        """Run the first half of ``process_msg``: decode, rectify, resize, the network.

        ``finish`` makes the outputs of what this returns. The halves let a caller run the
        network of one frame while another thread finishes the previous one (the node's
        ``frames_in_flight``); the estimator is only ever called here.
        """
        start = time.perf_counter()
        rgb = msgs.decode_camera_image(image_msg)
        return self._infer(rgb, camera, (time.perf_counter() - start) * 1e3, config)

    def infer_rgb(
        self,
        rgb: np.ndarray,
        camera: CameraSource = None,
        config: PipelineConfig | None = None,
    ) -> InferredFrame:
        """Run the first half of ``process_rgb`` (see ``infer_msg``)."""
        return self._infer(rgb, camera, 0.0, config)

    def _infer(
        self,
        rgb: np.ndarray,
        camera: CameraSource,
        decode_ms: float,
        config: PipelineConfig | None = None,
    ) -> InferredFrame:
        if config is None:
            config = self.config  # read once: update_config may swap it mid-frame
        elif not isinstance(config, PipelineConfig):
            raise ConfigError(f'config must be a PipelineConfig, got {type(config).__name__}')
        timings = dict.fromkeys(STAGES, 0.0)
        timings['decode'] = decode_ms
        rgb = check_rgb(rgb)
        height, width = rgb.shape[:2]
        self.depth_range_m(config)  # limits that cross whatever the camera: before the network
        # The network sees the rectified image, so the camera is needed before it runs.
        camera, camera_error = _resolve_camera(camera, width, height)

        start = time.perf_counter()
        rectifier = None
        if camera is not None:
            rectifier = rectify.Rectifier(camera, config.input_rectified)
            rgb = rectifier.rectify_image(rgb)
            camera = rectifier.output
        nchw = preprocess(rgb, self.input_hw)
        timings['preprocess'] = _ms_since(start)

        start = time.perf_counter()
        if config.flip_average:
            depth_raw, confidence_raw = infer_flip_average(self.estimator, nchw)
        else:
            depth_raw, confidence_raw = _unpack(self.estimator.infer(nchw))
        timings['network'] = _ms_since(start)
        return InferredFrame(
            rgb=rgb,
            camera=camera,
            rectifier=rectifier,
            depth_raw=depth_raw,
            confidence_raw=confidence_raw,
            config=config,
            timings_ms=timings,
            camera_error=camera_error,
        )

    def finish(self, frame: InferredFrame) -> FrameResult:
        """Run the second half of ``process_msg``: scale, range, upsample, cloud (no network).

        Uses only ``frame`` and this pipeline's fixed model facts, so it may run on another
        thread than ``infer_msg`` while that one runs the network on the next frame.
        """
        rgb, camera, rectifier, config = frame.rgb, frame.camera, frame.rectifier, frame.config
        timings = dict(frame.timings_ms)
        height, width = rgb.shape[:2]
        output_hw = config.output_hw or (height, width)
        scale, scale_source = self._depth_scale(camera, config)
        range_m = self.depth_range_m(config, scale)
        start = time.perf_counter()
        depth_small = _plane(frame.depth_raw, 'depth', self.input_hw)
        if scale != 1.0:  # a new array: the estimator's output buffer is not ours to change
            depth_small = depth_small * np.float32(scale)
        confidence_small = _plane(frame.confidence_raw, 'confidence', self.input_hw)
        depth_m, confidence = postprocess(
            depth_small,
            confidence_small,
            output_hw,
            range_m,
            config.interpolation,
            config.out_of_range,
        )
        out_camera = None if camera is None else camera.scaled(output_hw[1], output_hw[0])
        unseen = None if rectifier is None else rectifier.invalid_at(output_hw[1], output_hw[0])
        if unseen is not None:  # rectified pixels outside the raw image: no estimate
            depth_m[unseen] = np.nan
            confidence[unseen] = 0.0
        timings['postprocess'] = _ms_since(start)

        cloud = None
        if config.cloud and out_camera is not None:
            start = time.perf_counter()
            cloud_rgb = None
            if config.cloud_rgb:
                cloud_rgb = rgb
                if output_hw != (height, width):
                    cloud_rgb = cv2.resize(
                        rgb, (output_hw[1], output_hw[0]), interpolation=cv2.INTER_AREA
                    )
            decimation = config.decimation or geometry.decimation_for_budget(
                output_hw[1],
                output_hw[0],
                16 if config.cloud_rgb else 12,
                config.cloud_budget_bytes,
            )
            cloud = geometry.make_cloud(
                depth_m,
                out_camera,
                rgb=cloud_rgb,
                decimation=decimation,
                organized=config.organized,
            )
            timings['cloud'] = _ms_since(start)
        return FrameResult(
            rgb=rgb,
            depth_m=depth_m,
            confidence=confidence,
            cloud=cloud,
            camera=out_camera,
            timings_ms=timings,
            camera_error=frame.camera_error,
            depth_scale=scale,
            scale_source=scale_source,
            range_m=range_m,
        )

    def _depth_scale(
        self, camera: geometry.CameraModel | None, config: PipelineConfig
    ) -> tuple[float, str]:
        if self.canonical_focal_px is None:
            return 1.0, 'not recorded'
        if not config.focal_correction:
            return 1.0, 'off'
        if camera is None:
            return 1.0, 'assumed canonical'
        return depth_scale(camera, self.input_hw, self.canonical_focal_px), 'camera'


def _resolve_camera(
    camera: CameraSource, width: int, height: int
) -> tuple[geometry.CameraModel | None, str]:
    """Return the camera model for a width x height image, or (None, why it does not fit)."""
    if callable(camera) and not isinstance(camera, geometry.CameraModel):
        camera = camera()
    if camera is None:
        return None, ''
    if not isinstance(camera, geometry.CameraModel):
        raise ConfigError(f'camera must be a CameraModel, got {type(camera).__name__}')
    try:
        camera.check_size(width, height)
    except CameraInfoError as e:
        return None, str(e)
    return camera, ''


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
