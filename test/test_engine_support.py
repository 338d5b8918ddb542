"""Shared fixtures of the engine tests: a tiny stand-in depth model, a fake ``tensorrt``.

``TinyDepthNet`` follows the DepthModel contract (forward -> (depth_m, confidence),
model_name, input_hw, depth range, describe()) in a few hundred parameters, with a LayerNorm
and a softmax over depth bins like the real heads.

``make_fake_tensorrt`` and ``FakeCuda`` live in fake_tensorrt.py (re-exported here): a
``tensorrt`` with the TensorRT 10 or 11 API surface whose engines emulate FP16 through
the layers, and a CUDA device in numpy arrays, so every line of the TensorRT code paths
executes on a machine without TensorRT or a GPU.
"""

from __future__ import annotations

import json

from fake_tensorrt import FakeCuda, make_fake_tensorrt
import numpy as np
import torch

__all__ = ['FakeCuda', 'TinyDepthNet', 'make_fake_tensorrt', 'random_image']


class TinyDepthNet(torch.nn.Module):
    """A stand-in DepthModel: conv, LayerNorm, per-pixel softmax over depth bins."""

    model_name = 'tiny_standin'

    def __init__(self, input_hw=(24, 32), min_depth_m=0.25, max_depth_m=8.0, bins=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_hw = tuple(input_hw)
        self.min_depth_m = float(min_depth_m)
        self.max_depth_m = float(max_depth_m)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Conv2d(8, bins, 1)
        centers = torch.linspace(self.min_depth_m, self.max_depth_m, bins).view(1, bins, 1, 1)
        self.register_buffer('bin_centers_m', centers)
        self.register_buffer('mean', torch.tensor([0.48, 0.46, 0.41]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.27, 0.26, 0.28]).view(1, 3, 1, 1))

    def forward(self, image):
        x = (image - self.mean) / self.std
        x = torch.relu(self.stem(x))
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        prob = torch.softmax(self.head(x), dim=1)
        depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
        confidence = prob.amax(dim=1, keepdim=True)
        return depth, confidence

    def describe(self):
        config_json = json.dumps({'input_hw': list(self.input_hw), 'bins': 8}, sort_keys=True)
        return {
            'model_name': self.model_name,
            'input_height': str(self.input_hw[0]),
            'input_width': str(self.input_hw[1]),
            'min_depth_m': repr(self.min_depth_m),
            'max_depth_m': repr(self.max_depth_m),
            'config_json': config_json,
            'config_digest': 'standin-digest',
        }


def random_image(input_hw, batch=1, seed=0):
    """Return a float32 [batch, 3, H, W] image in [0, 1]."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, *input_hw), dtype=np.float32)
