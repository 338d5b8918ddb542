"""Inference backends behind one interface (``DepthEngine``).

``load_engine(path, backend='auto')`` picks the backend from the file type: ``.engine`` /
``.plan`` TensorRT, ``.onnx`` ONNX Runtime, ``.safetensors`` PyTorch. Backends import their
heavy dependencies lazily, so the node never imports torch unless the torch backend is chosen.
"""

from moa_depth_ros.engine.base import DepthEngine, ModelMetadata
from moa_depth_ros.engine.loader import BACKENDS, backend_for_path, load_engine

__all__ = ['BACKENDS', 'DepthEngine', 'ModelMetadata', 'backend_for_path', 'load_engine']
