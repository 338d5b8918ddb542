"""PyTorch depth models: MoA-DepthCLIP (default), SPACE-CLIP and zero-shot DepthCLIP.

Imports torch and open_clip only; never the engines, training or ROS. Start here::

    model = create_model('moa_depthclip', pretrained='openai')  # or None: random, offline
    model.eval()  # built in training mode, like every nn.Module (BatchNorm, dropout)
    depth_m, confidence = model(image)  # image float32 [N, 3, H, W] RGB in [0, 1]
    save_checkpoint(model, 'model.safetensors')
    model = load_model('model.safetensors')
"""

from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.checkpoint import load_model, read_checkpoint_metadata, save_checkpoint
from moa_depth_ros.model.config import DepthModelConfig
from moa_depth_ros.model.depthclip import DepthCLIP, DepthCLIPConfig
from moa_depth_ros.model.factory import (
    DEFAULT_MODEL,
    MODELS,
    PRESETS,
    build_model,
    create_model,
    preset_config,
)
from moa_depth_ros.model.moa_depthclip import MoADepthCLIP, MoADepthCLIPConfig
from moa_depth_ros.model.space_clip import SpaceCLIP, SpaceCLIPConfig

MODEL_NAMES = tuple(MODELS)

__all__ = [
    'DEFAULT_MODEL',
    'MODELS',
    'MODEL_NAMES',
    'PRESETS',
    'DepthCLIP',
    'DepthCLIPConfig',
    'DepthModel',
    'DepthModelConfig',
    'MoADepthCLIP',
    'MoADepthCLIPConfig',
    'SpaceCLIP',
    'SpaceCLIPConfig',
    'build_model',
    'create_model',
    'load_model',
    'preset_config',
    'read_checkpoint_metadata',
    'save_checkpoint',
]
