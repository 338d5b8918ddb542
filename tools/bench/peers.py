"""Peer networks measured beside ours: Depth-Anything-V2-Small's architecture, random weights.

Depth Anything V2 Small (DINOv2 ViT-S/14 encoder, DPT decoder, 24.8 M parameters) is what
most ROS 2 monocular-depth nodes run today. Its definition comes from transformers
(``DepthAnythingForDepthEstimation`` with the configuration of
depth-anything/Depth-Anything-V2-Small-hf: backbone taps after blocks 3, 6, 9 and 12), built
from the configuration alone with random weights: the time a network takes does not depend
on its weights, and nothing is downloaded.

``PeerDepthNet`` wraps it in our export contract (input ``image`` RGB in [0, 1] at the
peer's input size, ImageNet normalisation inside the graph; outputs ``depth`` and
``confidence`` [N,1,H,W]), so the peer runs through the same exporter, runtimes, pipeline and
frame as our models. Its ``depth`` is the network's relative disparity squashed into the
declared range (a sigmoid, so runtimes' outputs stay comparable) and its ``confidence`` a
constant: the peer is here to be timed, not used.

Sizes: 518x518 (the network's training size) and 392x518 (a 4:3 camera frame at 518 wide,
both multiples of the 14-pixel patch), as the ROS 2 Depth Anything nodes run it.
"""

from __future__ import annotations

from typing import Any

#: Peer entries accepted by ``--models``: name -> input (height, width).
PEERS = {
    'depth_anything_v2_small@518x518': (518, 518),
    'depth_anything_v2_small@392x518': (392, 518),
}
#: The model the peers are compared with in the report (ratio columns).
REFERENCE_MODEL = 'moa_depthclip'
_RANGE_M = (0.1, 20.0)


def is_peer(entry: str) -> bool:
    """Tell whether a ``--models`` entry names a peer network."""
    return entry in PEERS


def peer_digest(entry: str) -> str:
    """Digest of a peer's definition: its entry and the transformers version that defines it."""
    import hashlib

    import transformers

    return hashlib.sha256(f'{entry}|transformers {transformers.__version__}'.encode()).hexdigest()


def depth_anything_v2_small_config() -> Any:
    """Return the transformers configuration of Depth-Anything-V2-Small (no download)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=384,
        num_attention_heads=6,
        num_hidden_layers=12,
        image_size=518,
        patch_size=14,
        out_indices=[3, 6, 9, 12],
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=384,
        neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64,
        head_hidden_size=32,
        depth_estimation_type='relative',
    )


def build_peer(entry: str, seed: int = 0) -> Any:
    """Return ``PeerDepthNet`` for a ``PEERS`` entry, randomly initialised with ``seed``."""
    import torch

    from moa_depth_ros.errors import ConfigError

    if entry not in PEERS:
        raise ConfigError(f'unknown peer {entry!r}; choose from {sorted(PEERS)}')
    torch.manual_seed(seed)
    return _peer_class()(entry, PEERS[entry]).eval()


def _peer_class() -> type:
    import torch
    from transformers import DepthAnythingForDepthEstimation

    class PeerDepthNet(torch.nn.Module):
        """A transformers depth network behind our export contract (see the module doc)."""

        def __init__(self, name: str, input_hw: tuple[int, int]) -> None:
            super().__init__()
            self.model_name = name
            self.input_hw = tuple(input_hw)
            self.net = DepthAnythingForDepthEstimation(depth_anything_v2_small_config())
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            self.register_buffer('mean', mean)
            self.register_buffer('std', std)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pixels = (image - self.mean) / self.std
            disparity = self.net(pixel_values=pixels).predicted_depth.unsqueeze(1)
            low, high = _RANGE_M
            depth = low + (high - low) * torch.sigmoid(disparity)
            return depth, torch.ones_like(depth)

        def describe(self) -> dict[str, str]:
            h, w = self.input_hw
            return {
                'model_name': self.model_name,
                'input_height': str(h),
                'input_width': str(w),
                'min_depth_m': repr(_RANGE_M[0]),
                'max_depth_m': repr(_RANGE_M[1]),
                'peer': 'Depth-Anything-V2-Small architecture (transformers), random weights; '
                'timing only',
            }

    return PeerDepthNet


def configure(parser: Any) -> None:
    """Add the ``export-peer`` command's arguments."""
    parser.add_argument('peer', choices=sorted(PEERS), help='peer network and input size')
    parser.add_argument('output', help='.onnx file to write (verified against PyTorch)')


def run(args: Any) -> int:
    """Export a peer to ONNX for ``moa-depth bench MODEL --peer FILE`` on a robot."""
    import warnings

    from training.onnx_export import export_onnx

    with warnings.catch_warnings():
        # The tracer warns about shape checks in transformers' code; the shapes are fixed.
        warnings.simplefilter('ignore')
        report = export_onnx(build_peer(args.peer), args.output)
    print(report.summary())
    return 0
