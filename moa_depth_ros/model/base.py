"""The interface every depth network in this package implements: ``DepthModel``.

``forward(image)`` is the export graph: float32 RGB in [0, 1], NCHW at ``input_hw``, in;
depth in metres and confidence in [0, 1], both [N, 1, H, W], out. Normalisation happens
inside, so every backend (torch, onnxruntime, TensorRT) sees the same function.
``forward_train`` returns the same two maps plus whatever the losses need.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from moa_depth_ros.errors import InvalidImageError
from moa_depth_ros.model.config import DepthModelConfig


class DepthModel(nn.Module, abc.ABC):
    """A monocular metric-depth network with a fixed input size and depth range."""

    #: Architecture name, the key of the model registry and of checkpoint metadata.
    model_name: str = ''

    def __init__(self, config: DepthModelConfig) -> None:
        super().__init__()
        self.config = config
        # Derived from the config, so not saved: a checkpoint holds learned state only.
        self.register_buffer(
            'image_mean', torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            'image_std', torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False
        )

    @property
    def input_hw(self) -> tuple[int, int]:
        """Network input size as (height, width) in pixels."""
        return (int(self.config.input_size[0]), int(self.config.input_size[1]))

    @property
    def min_depth_m(self) -> float:
        return float(self.config.min_depth_m)

    @property
    def max_depth_m(self) -> float:
        return float(self.config.max_depth_m)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map RGB in [0, 1] to the tower's input statistics."""
        self._check_image(image)
        return (image - self.image_mean) / self.image_std

    @abc.abstractmethod
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (depth_m, confidence), each float32 [N, 1, H, W]."""

    @abc.abstractmethod
    def forward_train(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return at least 'depth' and 'confidence' plus the intermediates the losses use."""

    @abc.abstractmethod
    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group (e.g. 'adapters', 'backbone', 'head')."""

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that stay in eval mode while training (frozen BatchNorm statistics)."""
        return []

    def train(self, mode: bool = True) -> DepthModel:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: 'total', 'trainable' and one entry per trainable group."""
        counts = {
            'total': sum(p.numel() for p in self.parameters()),
            'trainable': sum(p.numel() for p in self.parameters() if p.requires_grad),
        }
        for name, params in self.trainable_parameter_groups().items():
            counts[name] = sum(p.numel() for p in params)
        return counts

    def describe(self) -> dict[str, str]:
        """Return the string metadata that travels with exported weights."""
        out = {
            'model_name': self.model_name,
            'input_height': str(self.input_hw[0]),
            'input_width': str(self.input_hw[1]),
            'min_depth_m': repr(self.min_depth_m),
            'max_depth_m': repr(self.max_depth_m),
            'config_json': self.config.to_json(),
            'config_digest': self.config.digest(),
        }
        canonical = self.config.canonical()
        if canonical is not None:
            out['canonical_focal_px'] = repr(canonical.focal_at_input_px(self.input_hw))
            out['canonical_camera'] = canonical.describe(self.input_hw)
        return out

    def _check_image(self, image: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return  # shapes are fixed by the export example; checks would be traced away
        expected = (3, *self.input_hw)
        if image.ndim != 4 or tuple(image.shape[1:]) != expected:
            raise InvalidImageError(
                f'{self.model_name} expects image [N, {expected[0]}, {expected[1]}, '
                f'{expected[2]}], got {list(image.shape)}'
            )
        if not image.is_floating_point():
            raise InvalidImageError(
                f'{self.model_name} expects a float image in [0, 1], got dtype {image.dtype}'
            )
