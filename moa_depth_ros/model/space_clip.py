"""SPACE-CLIP (arXiv 2601.17657): a frozen CLIP ViT-B/16 read by a dual-pathway decoder.

Same architecture as the official ``SPACECLIP`` (github.com/taewan2002/space-clip):

- hidden_states[0] are the tokens after ln_pre, hidden_states[k] the output of block k-1;
  the class token is dropped from every tap. Global context = ln_post(class token) of the
  last block (HF's ``pooler_output``).
- Semantic pathway: taps ``main_path_indices`` (12, 9, 6, 3), each modulated by FiLM
  (gamma, beta from Linear-ReLU-Linear on the global context), projected by a 1x1 conv to
  ``decoder_channels`` and decoded by ``MainDecoderBlock``s with gated skips.
- Structural pathway: taps ``structural_path_indices`` (2, 1, 0), unmodulated; the first
  tap's raw tokens start the pathway, whose stages feed the main blocks' structural skips.
- Head: conv-BN-ReLU-conv-ReLU metric depth; auxiliary heads on the first three stages.

The same decoder reads a frozen SigLIP tower (preset ``space_clip_siglip``, the official
``configs/nyu_siglip.yaml``): a timm ViT without class token, so no tap is sliced, and the
global context is its attention-pool head (HF's ``pooler_output`` for SigLIP). ``vit_taps``
hides the difference; other towers are a ConfigError.

The decoder's module names are the official ones (``film_param_generators``,
``main_path_projections``, ``main_decoder_blocks``, ...) so official decoder weights load
by name; the backbone is open_clip's or timm's (``training/convert_space_clip.py`` converts
Hugging Face CLIP and SigLIP keys).
``forward`` clamps depth to [min_depth_m, max_depth_m] as the official evaluation does;
``forward_train`` returns the raw ReLU output the official losses see. SPACE-CLIP has no
uncertainty output: confidence is 1 where the raw prediction fell inside the range and 0
where it had to be clamped.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.clip_backbone import (
    build_clip,
    build_vision_tower,
    is_vit_cfg,
    tokens_to_map,
)
from moa_depth_ros.model.config import DepthModelConfig, check_index_list
from moa_depth_ros.model.space_clip_blocks import (
    FiLMLayer,
    MainDecoderBlock,
    StructuralPathwayBlock,
    aux_depth_head,
    depth_head,
)
from moa_depth_ros.model.timm_tower import (
    build_timm_tower,
    is_timm_cfg,
    load_timm_tower_weights,
)
from moa_depth_ros.model.vit_taps import ViTTaps, vit_taps


@dataclasses.dataclass(frozen=True)
class SpaceCLIPConfig(DepthModelConfig):
    """SPACE-CLIP hyper-parameters; field names and defaults follow configs/nyu.yaml."""

    clip_model: str = 'ViT-B-16'
    min_depth_m: float = 0.001
    max_depth_m: float = 10.0
    main_path_indices: tuple[int, ...] = (12, 9, 6, 3)
    structural_path_indices: tuple[int, ...] = (2, 1, 0)
    use_film: bool = True
    use_structural_pathway: bool = True
    use_multiscale_supervision: bool = True
    film_param_hidden_dim: int = 256
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32)
    decoder_dropout: float = 0.1


class SpaceCLIP(DepthModel):
    """Frozen CLIP ViT + FiLM-conditioned semantic pathway + structural pathway."""

    model_name = 'space_clip'

    def __init__(
        self, config: SpaceCLIPConfig, *, pretrained: str | None = None, build_text: bool = True
    ) -> None:
        # build_text is accepted for a uniform constructor: SPACE-CLIP uses no text at all.
        super().__init__(config)
        self.backbone = self._build_backbone(config, self.input_hw, pretrained)
        for param in self.backbone.parameters():
            param.requires_grad = False
        taps = self.taps
        self._check_config(config, taps.depth)
        width = taps.width
        channels = tuple(config.decoder_channels)
        if config.use_film:
            self.film_layer = FiLMLayer()
            self.film_param_generators = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(width, config.film_param_hidden_dim),
                    nn.ReLU(inplace=True),
                    nn.Linear(config.film_param_hidden_dim, 2 * width),
                )
                for _ in config.main_path_indices
            )
        self.main_path_projections = nn.ModuleList(nn.Conv2d(width, c, 1) for c in channels)
        num_struct = len(config.structural_path_indices) if config.use_structural_pathway else 0
        if config.use_structural_pathway:
            self.structural_path_projections = nn.ModuleList(
                nn.Conv2d(width, c, 1) for c in channels[:num_struct]
            )
            self.structural_decoder_blocks = nn.ModuleList(
                StructuralPathwayBlock(channels[i - 1] if i else width, channels[i], channels[i])
                for i in range(num_struct)
            )
        self.main_decoder_blocks = nn.ModuleList(
            MainDecoderBlock(
                channels[i - 1] if i else channels[0],
                channels[i],
                channels[i] if i < num_struct else 0,
                channels[i],
                dropout=config.decoder_dropout,
            )
            for i in range(len(channels))
        )
        self.depth_prediction_head = depth_head(channels[-1])
        self.aux_depth_heads = nn.ModuleList()
        if config.use_multiscale_supervision:
            self.aux_depth_heads.extend(aux_depth_head(c) for c in channels[:-1])

    @staticmethod
    def _build_backbone(
        config: SpaceCLIPConfig, input_hw: tuple[int, int], pretrained: str | None
    ) -> nn.Module:
        clip_cfg = config.resolved_clip_cfg()
        if is_timm_cfg(clip_cfg):
            if config.clip_quick_gelu:
                raise ConfigError(
                    f'clip_model={config.clip_model!r} is a timm (SigLIP) tower, which uses '
                    f'tanh GELU; set clip_quick_gelu to false'
                )
            visual = build_timm_tower(clip_cfg, input_hw)
            if pretrained is not None:
                load_timm_tower_weights(visual, config.clip_model, pretrained)
            return visual
        if not is_vit_cfg(clip_cfg):
            raise ConfigError(
                f'SPACE-CLIP needs a ViT tower, got clip_model={config.clip_model!r}'
            )
        if pretrained is not None:
            # The text tower is loaded with the weights file and dropped right away.
            visual = build_clip(
                clip_cfg, input_hw, clip_model=config.clip_model, pretrained=pretrained
            ).visual
        else:
            visual = build_vision_tower(clip_cfg, input_hw)
        visual.proj = None  # HF's CLIPVisionModel has no projection either
        return visual

    @property
    def taps(self) -> ViTTaps:
        """The reader of the backbone's hidden states and pooled context."""
        return vit_taps(self.backbone)

    @staticmethod
    def _check_config(config: SpaceCLIPConfig, depth: int) -> None:
        check_index_list(config.main_path_indices, 'main_path_indices', 0, depth)
        check_index_list(config.structural_path_indices, 'structural_path_indices', 0, depth)
        channels = config.decoder_channels
        if len(channels) != len(config.main_path_indices):
            raise ConfigError(
                f'decoder_channels {channels!r} needs one entry per main_path_indices '
                f'{config.main_path_indices!r}'
            )
        if config.use_structural_pathway and len(config.structural_path_indices) > len(channels):
            raise ConfigError(
                f'structural_path_indices {config.structural_path_indices!r} has more '
                f'levels than decoder_channels {channels!r}'
            )

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def _run(self, image: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        cfg = self.config
        taps = self.taps
        grid = taps.grid_hw
        hidden = taps.hidden_states(self.normalize(image))
        # HF's pooler_output: ln_post(class token) for CLIP, the attention pool for SigLIP.
        pooled = taps.pooled(hidden[-1]) if cfg.use_film else None
        main_feats = []
        for i, index in enumerate(cfg.main_path_indices):
            patches = taps.patch_tokens(hidden[index])
            if cfg.use_film:
                film = self.film_param_generators[i](pooled)
                # Slices rather than chunk(): chunk becomes an opset-18 Split in some exports.
                gamma, beta = film[:, : patches.shape[-1]], film[:, patches.shape[-1] :]
                patches = self.film_layer(patches, gamma, beta)
            main_feats.append(self.main_path_projections[i](tokens_to_map(patches, grid)))
        if cfg.use_structural_pathway:
            struct_maps = [
                tokens_to_map(taps.patch_tokens(hidden[i]), grid)
                for i in cfg.structural_path_indices
            ]
            struct_skips = [
                proj(m) for proj, m in zip(self.structural_path_projections, struct_maps)
            ]
            struct_x = struct_maps[0]
        main_x = main_feats[0]
        stages = []
        for i, block in enumerate(self.main_decoder_blocks):
            struct_refined = None
            if cfg.use_structural_pathway and i < len(self.structural_decoder_blocks):
                struct_x = self.structural_decoder_blocks[i](struct_x, struct_skips[i])
                struct_refined = struct_x
            main_x = block(main_x, main_feats[i], struct_refined)
            stages.append(main_x)
        raw = _resize(self.depth_prediction_head(main_x), self.input_hw)
        aux = [_resize(head(f), self.input_hw) for head, f in zip(self.aux_depth_heads, stages)]
        inside = (raw >= self.min_depth_m) & (raw <= self.max_depth_m)
        return {'depth': raw, 'confidence': inside.to(raw.dtype), 'aux': aux}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._run(image)
        return out['depth'].clamp(self.min_depth_m, self.max_depth_m), out['confidence']

    def forward_train(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw depth (what the official losses see), confidence, and 'aux' maps (input size).

        The official NYU/KITTI configs weight the aux maps 0.10, 0.05 and 0.00.
        """
        return self._run(image)

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = {id(p) for p in self.backbone.parameters()}
        return {
            'head': [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]
        }


def _resize(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    # Unconditional: a same-size bilinear resize is the identity (see _match_size).
    return F.interpolate(x, size=out_hw, mode='bilinear', align_corners=False)
