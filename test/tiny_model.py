"""A tiny depth model file for node and bag tests (ONNX built with onnx.helper; no torch).

The graph keeps the export contract (input ``image`` [1, 3, H, W] RGB in [0, 1]; outputs
``depth`` and ``confidence`` [1, 1, H, W]; ModelMetadata in metadata_props) and computes
something a test can predict: with m = mean over the colour channels,

    depth_m    = DEPTH_OFFSET_M + DEPTH_GAIN_M * m
    confidence = m

so a uniform grey image of value v (0..255) gives depth 1 + 4 * v / 255 metres everywhere.
"""

from __future__ import annotations

import os

import numpy as np

DEPTH_OFFSET_M = 1.0
DEPTH_GAIN_M = 4.0


def expected_depth_m(grey_value: float) -> float:
    """Depth the tiny model gives for a uniform image of this 8-bit grey value."""
    return DEPTH_OFFSET_M + DEPTH_GAIN_M * grey_value / 255.0


def write_tiny_onnx(
    path: str | os.PathLike,
    input_hw: tuple[int, int] = (24, 32),
    range_m: tuple[float, float] = (0.5, 10.0),
    model_name: str = 'tiny_test_model',
    canonical_focal_px: float | None = None,
) -> str:
    """Write the tiny model to ``path`` and return the path as a string.

    ``canonical_focal_px``: record a canonical camera (its focal length at the input), so
    runtimes convert the depth with the frame's focal length (``moa_depth_ros.frame.scale``).
    """
    import onnx
    from onnx import TensorProto, helper

    from moa_depth_ros import __version__
    from moa_depth_ros.engine.base import ModelMetadata

    h, w = input_hw
    image = helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, h, w])
    depth = helper.make_tensor_value_info('depth', TensorProto.FLOAT, [1, 1, h, w])
    confidence = helper.make_tensor_value_info('confidence', TensorProto.FLOAT, [1, 1, h, w])
    consts = [
        helper.make_tensor('gain', TensorProto.FLOAT, [], [DEPTH_GAIN_M]),
        helper.make_tensor('offset', TensorProto.FLOAT, [], [DEPTH_OFFSET_M]),
        helper.make_tensor('axes', TensorProto.INT64, [1], np.array([1], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node('ReduceMean', ['image', 'axes'], ['mean'], keepdims=1),
        helper.make_node('Identity', ['mean'], ['confidence']),
        helper.make_node('Mul', ['mean', 'gain'], ['scaled']),
        helper.make_node('Add', ['scaled', 'offset'], ['depth']),
    ]
    graph = helper.make_graph(nodes, 'tiny_depth', [image], [depth, confidence], consts)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 18)], producer_name='moa_depth_ros tests'
    )
    model.ir_version = 8
    metadata = ModelMetadata(
        model_name=model_name,
        input_height=h,
        input_width=w,
        min_depth_m=range_m[0],
        max_depth_m=range_m[1],
        package_version=__version__,
        canonical_focal_px=canonical_focal_px,
        canonical_camera='' if canonical_focal_px is None else 'tiny test camera',
    )
    helper.set_model_props(model, metadata.to_dict())
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))
    return os.fspath(path)
