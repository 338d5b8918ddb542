"""MoA-DepthCLIP (arXiv 2604.01118): a CLIP ViT with Mixture-of-Adapters and a hybrid head.

- Backbone: open_clip ``ViT-B-32-quickgelu`` (224x224 -> 7x7 tokens), frozen except the
  last ``trainable_last_blocks`` transformer blocks.
- ``MixtureOfAdapters`` after the blocks in ``adapter_after_blocks`` (0-indexed; default
  2, 5, 8, 11), each trainable.
- Global semantic context c: the ``scene_prompts`` through the CLIP text tower, each
  L2-normalised, averaged; computed once at construction and kept as the buffer
  ``context_embedding``, so inference never needs the text tower. The mean is not
  re-normalised (the paper does not say; its norm, < 1, only scales the weights of the
  first decoder conv that read it, which are learned anyway). c does not depend on
  the image: concatenated on the channel axis it acts as a learned, prompt-initialised bias
  of the decoder's first conv, which is what the paper describes.
- ``TokenDecoder`` (moa_decoder.py) and ``HybridDepthHead`` (heads.py): our documented
  choices for the parts the paper leaves open.
- Not in the paper, for towers trained from scratch (the CPU quickstart): an optional
  convolutional stem in place of the patchify conv (``conv_stem_channels``; Xiao et al.
  2021), whose finer feature maps also feed the decoder. Off by default; it cannot be
  combined with pretrained CLIP weights. With ``trainable_last_blocks`` equal to the
  tower's depth the whole tower trains, patch and positional embeddings included.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model.adapters import MixtureOfAdapters, gate_entropy
from moa_depth_ros.model.base import DepthModel
from moa_depth_ros.model.clip_backbone import (
    ConvStem,
    build_clip,
    build_vision_tower,
    encode_prompts,
    install_conv_stem,
    is_vit_cfg,
    vit_block,
    vit_depth,
    vit_embed_patches,
    vit_grid,
    vit_tokens,
)
from moa_depth_ros.model.config import DepthModelConfig, check_index_list
from moa_depth_ros.model.heads import HybridDepthHead
from moa_depth_ros.model.moa_decoder import TokenDecoder

# Our choice of scenes: NYU Depth V2's indoor categories plus KITTI-like outdoor scenes.
SCENE_PROMPTS = (
    'a photo of a kitchen',
    'a photo of a bedroom',
    'a photo of a living room',
    'a photo of a bathroom',
    'a photo of a dining room',
    'a photo of an office',
    'a photo of a classroom',
    'a photo of a library',
    'a photo of a bookstore',
    'a photo of a corridor',
    'a photo of a street',
    'a photo of a road',
)


@dataclasses.dataclass(frozen=True)
class MoADepthCLIPConfig(DepthModelConfig):
    """MoA-DepthCLIP hyper-parameters; defaults are the paper's NYU Depth V2 setting."""

    clip_model: str = 'ViT-B-32-quickgelu'
    adapter_after_blocks: tuple[int, ...] = (2, 5, 8, 11)
    num_experts: int = 4
    adapter_bottleneck: int = 64
    gate_hidden: int = 128
    gate_temperature: float = 2.0
    trainable_last_blocks: int = 4
    scene_prompts: tuple[str, ...] = SCENE_PROMPTS
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32)
    #: Blocks whose (adapted) tokens feed the decoder stages as skips, deepest first.
    decoder_skip_blocks: tuple[int, ...] = (8, 5, 2)
    num_bins: int = 128
    bin_spacing: str = 'log'
    fusion: str = 'learned'
    head_hidden_channels: int = 64
    #: Channels of a convolutional stem replacing the patchify conv: log2(patch_size)
    #: stride-2 conv3x3-BN-ReLU layers, then a 1x1 conv to the tower width. Empty (the
    #: paper, and required with pretrained weights): CLIP's own patch embedding.
    conv_stem_channels: tuple[int, ...] = ()


class MoADepthCLIP(DepthModel):
    """CLIP ViT + Mixture-of-Adapters + token decoder + hybrid bins/regression head."""

    model_name = 'moa_depthclip'

    def __init__(
        self,
        config: MoADepthCLIPConfig,
        *,
        pretrained: str | None = None,
        build_text: bool = True,
    ) -> None:
        super().__init__(config)
        clip_cfg = config.resolved_clip_cfg()
        if not is_vit_cfg(clip_cfg):
            raise ConfigError(
                f'MoA-DepthCLIP needs a ViT tower, got clip_model={config.clip_model!r}'
            )
        if config.conv_stem_channels and pretrained is not None:
            raise ConfigError(
                'conv_stem_channels replaces the patch embedding that pretrained CLIP weights '
                'hold; use conv_stem_channels=() with pretrained weights'
            )
        if build_text:
            clip = build_clip(
                clip_cfg, self.input_hw, clip_model=config.clip_model, pretrained=pretrained
            )
            context = encode_prompts(clip, config.scene_prompts).mean(dim=0)
            visual = clip.visual
        else:
            visual = build_vision_tower(clip_cfg, self.input_hw)
            context = torch.zeros(int(clip_cfg['embed_dim']))  # filled by load_state_dict
        # Only the patch tokens are used: the pooled-embedding parts would be dead weight.
        visual.proj = None
        visual.ln_post = nn.Identity()
        self.backbone = visual
        self.register_buffer('context_embedding', context)
        stem = (
            install_conv_stem(visual, config.conv_stem_channels)
            if config.conv_stem_channels
            else None
        )

        depth = vit_depth(visual)
        width = int(visual.conv1.out_channels)
        check_index_list(config.adapter_after_blocks, 'adapter_after_blocks', 0, depth - 1)
        check_index_list(config.decoder_skip_blocks, 'decoder_skip_blocks', 0, depth - 1)
        last = config.trainable_last_blocks
        if not 0 <= last <= depth:
            raise ConfigError(f'trainable_last_blocks must be in [0, {depth}], got {last}')
        self.adapters = nn.ModuleDict(
            {
                str(block): MixtureOfAdapters(
                    width,
                    num_experts=config.num_experts,
                    bottleneck=config.adapter_bottleneck,
                    gate_hidden=config.gate_hidden,
                    temperature=config.gate_temperature,
                )
                for block in sorted(config.adapter_after_blocks)
            }
        )
        self.decoder = TokenDecoder(
            width,
            context.numel(),
            channels=tuple(config.decoder_channels),
            num_skips=len(config.decoder_skip_blocks),
            map_skip_channels=_stem_skip_channels(stem, len(config.decoder_channels)),
        )
        self.head = HybridDepthHead(
            self.decoder.out_channels,
            num_bins=config.num_bins,
            min_depth_m=config.min_depth_m,
            max_depth_m=config.max_depth_m,
            bin_spacing=config.bin_spacing,
            fusion=config.fusion,
            hidden_channels=config.head_hidden_channels,
        )
        self._freeze_backbone(config.trainable_last_blocks)

    def _freeze_backbone(self, trainable_last_blocks: int) -> None:
        blocks = self.backbone.transformer.resblocks
        if trainable_last_blocks == len(blocks):
            # The whole tower trains (from scratch): embeddings and stem too.
            for param in self.backbone.parameters():
                param.requires_grad = True
            return
        for param in self.backbone.parameters():
            param.requires_grad = False
        for block in blocks[len(blocks) - trainable_last_blocks :]:
            for param in block.parameters():
                param.requires_grad = True

    def _run(self, image: torch.Tensor, with_logits: bool) -> dict[str, torch.Tensor]:
        pixels = self.normalize(image)
        stem_maps: list[torch.Tensor] = []
        if isinstance(self.backbone.conv1, ConvStem):
            patch_map, stem_maps = self.backbone.conv1.features(pixels)
            tokens = vit_embed_patches(self.backbone, patch_map)
        else:
            tokens = vit_tokens(self.backbone, pixels)
        skip_tokens: dict[int, torch.Tensor] = {}
        gates: list[torch.Tensor] = []
        for index, block in enumerate(self.backbone.transformer.resblocks):
            tokens = vit_block(block, tokens)
            adapter = self.adapters[str(index)] if str(index) in self.adapters else None
            if adapter is not None:
                tokens, gate = adapter(tokens)
                gates.append(gate)
            if index in self.config.decoder_skip_blocks:
                skip_tokens[index] = tokens[:, 1:]
        skips = [skip_tokens[b] for b in self.config.decoder_skip_blocks]
        features = self.decoder(
            tokens[:, 1:],
            skips,
            self.context_embedding,
            vit_grid(self.backbone),
            _stem_skips(stem_maps, len(self.config.decoder_channels)),
        )
        out = self.head(features, self.input_hw, with_logits=with_logits)
        out['gates'] = gates
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._run(image, with_logits=False)
        return out['depth'], out['confidence']

    def forward_train(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Depth, confidence, bin logits/centres, regression and gate statistics.

        'gate_entropy' is the mean over adapters and tokens (nats; log K is uniform);
        'gates' holds each adapter's [N, L, K] weights. Log the entropy to see whether the
        experts specialise: nothing in the loss pushes them to.
        """
        out = self._run(image, with_logits=True)
        gates = out['gates']
        if gates:
            out['gate_entropy'] = torch.stack([gate_entropy(g) for g in gates]).mean()
        else:
            out['gate_entropy'] = image.new_zeros(())
        return out

    def depth_to_bin_index(self, depth_m: torch.Tensor) -> torch.Tensor:
        """Nearest bin index for ground-truth depths (the cross-entropy target)."""
        return self.head.depth_to_bin_index(depth_m)

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            'adapters': [p for p in self.adapters.parameters() if p.requires_grad],
            'backbone': [p for p in self.backbone.parameters() if p.requires_grad],
            'head': [
                p for p in (*self.decoder.parameters(), *self.head.parameters()) if p.requires_grad
            ],
        }


def _stem_skip_index(stage: int, num_stem_layers: int) -> int:
    """Index of the stem map (finest first) with decoder stage ``stage``'s output resolution.

    Stage i doubles the token grid i + 1 times; stem map j is 2 ** (L - j - 1) times the
    token grid, so they match where j = L - i - 2 (negative: no stem map is that fine).
    """
    return num_stem_layers - stage - 2


def _stem_skip_channels(stem: ConvStem | None, num_stages: int) -> tuple[int, ...]:
    if stem is None:
        return ()
    layers = len(stem.channels)
    return tuple(
        stem.channels[j] if 0 <= (j := _stem_skip_index(i, layers)) < layers else 0
        for i in range(num_stages)
    )


def _stem_skips(maps: list[torch.Tensor], num_stages: int) -> list[torch.Tensor | None]:
    layers = len(maps)
    return [
        maps[j] if 0 <= (j := _stem_skip_index(i, layers)) < layers else None
        for i in range(num_stages)
    ]
