"""Metric depth across cameras: the canonical camera a model predicts for, and the conversion.

A monocular network learns metric scale for the focal length it was trained with: an object
of size S at depth Z spans f * S / Z pixels, so the same picture from a camera with another
focal length means another depth. As Metric3D does, a model here is trained and predicts in
the space of one *canonical camera*: training labels are ``depth * f_canonical / f_image``
and a prediction becomes metric depth as ``depth * f_image / f_canonical``, with both focal
lengths in pixels of the network input, i.e. after the image is resized to it.

When the resize changes the aspect ratio, the horizontal and vertical focal lengths scale
differently and an object's image shrinks unevenly. The focal length used is then the
geometric mean ``sqrt(fx_in * fy_in)``: it follows the object's image *area*, the cue that
does not depend on the object's orientation, and equals fx = fy for an even resize.

Pure Python; the model config, the runtime pipeline and training share these functions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from moa_depth_ros.errors import ConfigError


def focal_at_input_px(
    fx_px: float, fy_px: float, width: int, height: int, input_hw: tuple[int, int]
) -> float:
    """Return the focal length (px) of a width x height image once resized to ``input_hw``."""
    in_h, in_w = input_hw
    return math.sqrt(float(fx_px) * in_w / float(width) * float(fy_px) * in_h / float(height))


@dataclasses.dataclass(frozen=True)
class CanonicalCamera:
    """The camera a model's depth is defined for, as its training data had it.

    ``fx_px``, ``fy_px``: focal lengths in pixels at the camera's own ``width`` x ``height``;
    ``name`` says where they come from (the dataset's camera, a rendered field of view).
    """

    name: str
    fx_px: float
    fy_px: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx_px, self.fy_px, self.width, self.height)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f'canonical_camera needs numbers, got {dataclasses.asdict(self)}')
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ConfigError(
                f'canonical_camera focal lengths and size must be positive, got '
                f'fx_px={self.fx_px}, fy_px={self.fy_px}, size {self.width}x{self.height}'
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CanonicalCamera:
        """Build from a config mapping (name, fx_px, fy_px, width, height)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = sorted(known - set(values))
        if unknown or missing:
            raise ConfigError(
                f'canonical_camera needs exactly {sorted(known)}; unknown {unknown}, '
                f'missing {missing}'
            )
        return cls(**dict(values))

    @classmethod
    def from_hfov(cls, name: str, hfov_deg: float, width: int, height: int) -> CanonicalCamera:
        """Build a pinhole camera with square pixels and this horizontal field of view."""
        if not 0.0 < float(hfov_deg) < 180.0:
            raise ConfigError(f'field of view must be in (0, 180) degrees, got {hfov_deg!r}')
        fx = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(name=name, fx_px=fx, fy_px=fx, width=width, height=height)

    def focal_at_input_px(self, input_hw: tuple[int, int]) -> float:
        """Return the canonical focal length (px) at the network input."""
        return focal_at_input_px(self.fx_px, self.fy_px, self.width, self.height, input_hw)

    def describe(self, input_hw: tuple[int, int]) -> str:
        """How the canonical focal length was derived (travels with the model)."""
        in_h, in_w = input_hw
        return (
            f'{self.name}: fx {self.fx_px:.4g}, fy {self.fy_px:.4g} px at '
            f'{self.width}x{self.height}, resized to {in_w}x{in_h}'
        )


def depth_scale(camera: Any, input_hw: tuple[int, int], canonical_focal_px: float) -> float:
    """Return the factor from canonical to metric depth for frames of ``camera``.

    ``camera`` is a ``geometry.CameraModel`` describing the image as it arrives (before the
    pipeline resizes it to ``input_hw``).
    """
    f_input = focal_at_input_px(camera.fx_px, camera.fy_px, camera.width, camera.height, input_hw)
    return f_input / float(canonical_focal_px)
