"""Typed exceptions shared by every layer of the package.

Each error names the field and the offending value, so a user reading one log line knows
what to fix. The node catches ``MoaDepthError`` per frame: a bad frame costs that frame only.
"""


class MoaDepthError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidImageError(MoaDepthError, ValueError):
    """An image message or array that cannot be decoded (encoding, step, size, data)."""


class CameraInfoError(MoaDepthError, ValueError):
    """A CameraInfo that cannot describe the image (zero focal length, NaN, wrong size)."""


class EngineError(MoaDepthError, RuntimeError):
    """An inference engine that cannot be loaded or run (corrupt, mismatched, missing)."""


class ModelMetadataError(EngineError):
    """A model file whose embedded metadata is missing, incomplete or contradictory."""


class CheckpointError(MoaDepthError, ValueError):
    """A checkpoint that is corrupt, foreign, or would need unpickling to load."""


class ConfigError(MoaDepthError, ValueError):
    """A configuration value (parameter, config file field) that is out of range."""


class BagError(MoaDepthError, ValueError):
    """A recorded bag that cannot be read: damaged, cut short, or not a rosbag2 at all."""
