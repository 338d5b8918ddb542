"""SPACE-CLIP backbones against the real Hugging Face models the official code runs.

Random-weight ``CLIPVisionModel`` / ``SiglipVisionModel`` (built from config objects, no
download) stand in for the official backbone: their state dicts, under the official
``clip_vision_model.`` attribute, are converted by ``training.convert_space_clip`` and our
towers must then compute HF's ``hidden_states`` and ``pooler_output``. The installed
transformers (>= 5.10) writes the current key layout; the <= 5.5 layout (one more
``vision_model.`` level) is made from it by renaming, which is all that changed.
"""

from __future__ import annotations

import cv2
from model_fixtures import (
    TINY_SIGLIP_CFG,
    TINY_SPACE,
    TINY_SPACE_SIGLIP,
    perturb_batchnorm,
    random_image,
    tiny_model,
    tiny_siglip_space_clip,
)
import numpy as np
import pytest
import torch
from torch import nn

from moa_depth_ros.errors import CheckpointError, ConfigError
from moa_depth_ros.model import create_model, load_model, save_checkpoint
from moa_depth_ros.model.config import SIGLIP_MEAN, SIGLIP_STD
from training.convert_space_clip import (
    HF_PREFIXES,
    backbone_layout,
    convert_official_state_dict,
    load_official_checkpoint,
)

transformers = pytest.importorskip('transformers')

NEW, OLD = HF_PREFIXES[1], HF_PREFIXES[0]  # transformers >= 5.10, <= 5.5
OFFICIAL_TRAINABLE = 12_050_996  # the decoder does not depend on the tower's kind


def _tiny_hf(kind: str, seed: int) -> nn.Module:
    """Build a random HF vision model shaped like the tiny towers (width 64, 4 blocks, 2 heads)."""
    torch.manual_seed(seed)
    shape = {
        'hidden_size': 64,
        'intermediate_size': 256,
        'num_hidden_layers': 4,
        'num_attention_heads': 2,
        'image_size': 64,
        'patch_size': 16,
    }
    if kind == 'clip':
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**shape))
    else:
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**shape))
    with torch.no_grad():  # HF's init leaves LayerNorms at 1/0 and biases at 0
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def _lively(model: nn.Module) -> nn.Module:
    """Give a random SPACE-CLIP decoder outputs that vary with the image.

    At random initialisation the heads' final ReLU sees mostly negative values: depth is 0
    everywhere (clamped to the minimum), and any two backbones would look equal. Biases of
    2 m put the raw depth inside the range, where it follows the features.
    """
    perturb_batchnorm(model)
    with torch.no_grad():
        for head in [model.depth_prediction_head, *model.aux_depth_heads]:
            head[3].bias.fill_(2.0)
    return model


def _official_state(hf: nn.Module, decoder_of: nn.Module, prefix: str) -> dict:
    """Return the official SPACECLIP state dict: HF backbone at ``prefix``, our decoder keys."""
    state = {prefix + k: v for k, v in hf.state_dict().items()}
    state.update(
        {k: v for k, v in decoder_of.state_dict().items() if not k.startswith('backbone')}
    )
    return {'module.' + k: v for k, v in state.items()}  # saved from DataParallel


def _hf_outputs(hf: nn.Module, model, image: torch.Tensor):
    with torch.no_grad():
        out = hf(pixel_values=model.normalize(image), output_hidden_states=True)
    return out.hidden_states, out.pooler_output


def _our_outputs(model, image: torch.Tensor):
    taps = model.taps
    with torch.no_grad():
        hidden = taps.hidden_states(model.normalize(image))
        return hidden, taps.pooled(hidden[-1])


def test_the_installed_transformers_writes_the_new_layout():
    # If this fails, transformers changed its layout again and HF_PREFIXES needs a look.
    keys = list(_tiny_hf('clip', 0).state_dict())
    assert 'embeddings.class_embedding' in keys
    assert not [k for k in keys if k.startswith('vision_model.')]


@pytest.mark.parametrize('prefix', [NEW, OLD], ids=['transformers>=5.10', 'transformers<=5.5'])
def test_clip_checkpoint_in_either_layout_computes_what_hf_computes(prefix, tmp_path):
    hf = _tiny_hf('clip', seed=1)
    template = _lively(tiny_model('space_clip', seed=2))
    path = tmp_path / 'best_checkpoint.pt'
    torch.save({'model': _official_state(hf, template, prefix), 'epoch': 3}, path)

    model = load_official_checkpoint(path, **TINY_SPACE)
    image = random_image(model)
    want_hidden, want_pooled = _hf_outputs(hf, model, image)
    got_hidden, got_pooled = _our_outputs(model, image)
    assert len(got_hidden) == len(want_hidden) == 5
    for index, (got, want) in enumerate(zip(got_hidden, want_hidden)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5, msg=f'hidden_states[{index}]')
    torch.testing.assert_close(got_pooled, want_pooled, rtol=1e-5, atol=2e-5)
    with torch.no_grad():  # the decoder came over bit for bit
        aux = model.forward_train(image)['aux'][0]
        assert aux.std() > 1e-3 and torch.equal(aux, _decoded(template, model, image))


def _decoded(template, model, image):
    """Return the template's first aux map with the converted backbone swapped in."""
    template.backbone.load_state_dict(model.backbone.state_dict())
    return template.eval().forward_train(image)['aux'][0]


@pytest.mark.parametrize('prefix', [NEW, OLD], ids=['transformers>=5.10', 'transformers<=5.5'])
def test_siglip_checkpoint_computes_what_hf_siglip_computes(prefix, tmp_path):
    hf = _tiny_hf('siglip', seed=3)
    template = tiny_siglip_space_clip(seed=4)
    path = tmp_path / 'best_checkpoint.pt'
    torch.save({'model': _official_state(hf, template, prefix)}, path)

    # No preset given: the SigLIP backbone selects space_clip_siglip.
    model = load_official_checkpoint(path, clip_cfg=TINY_SIGLIP_CFG, **_tiny_decoder())
    assert model.config.clip_model == 'ViT-B-16-SigLIP'
    image = random_image(model)
    want_hidden, want_pooled = _hf_outputs(hf, model, image)
    got_hidden, got_pooled = _our_outputs(model, image)
    assert len(got_hidden) == len(want_hidden) == 5  # embeddings + 4 blocks, no class token
    assert got_hidden[0].shape == (2, 16, 64)
    for index, (got, want) in enumerate(zip(got_hidden, want_hidden)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5, msg=f'hidden_states[{index}]')
    # The attention-pool head is HF's pooler_output (probe attention, LayerNorm, MLP).
    torch.testing.assert_close(got_pooled, want_pooled, rtol=1e-5, atol=2e-5)


def _tiny_decoder() -> dict:
    return {k: v for k, v in TINY_SPACE.items() if k != 'clip_cfg'}


def test_siglip_needs_the_tanh_gelu_that_hf_uses():
    hf = _tiny_hf('siglip', seed=5)
    model = tiny_siglip_space_clip(seed=5)
    template = _official_state(hf, model, NEW)
    model.load_state_dict(convert_official_state_dict(template))
    activations = {
        type(m).__name__ for m in model.backbone.modules() if 'GELU' in type(m).__name__
    }
    assert activations == {'GELUTanh'}
    image = random_image(model)
    want = _hf_outputs(hf, model, image)[1]
    torch.testing.assert_close(_our_outputs(model, image)[1], want, rtol=1e-5, atol=2e-5)
    for module in model.backbone.modules():  # timm's and open_clip's default: exact GELU
        if hasattr(module, 'act') and type(module.act).__name__ == 'GELUTanh':
            module.act = nn.GELU()
    assert (_our_outputs(model, image)[1] - want).abs().max() > 1e-4


def test_siglip_preset_is_the_official_siglip_configuration():
    model = create_model('space_clip_siglip')
    hf = transformers.SiglipVisionModel(transformers.SiglipVisionConfig())  # base, patch 16
    counts = model.parameter_counts()
    assert counts['trainable'] == counts['head'] == OFFICIAL_TRAINABLE
    assert sum(p.numel() for p in model.backbone.parameters()) == sum(
        p.numel() for p in hf.parameters()
    )
    assert model.taps.grid_hw == (14, 14) and model.taps.width == 768
    # nyu_siglip.yaml: vision_image_mean / std 0.5, open_clip's webli tag agrees.
    assert model.config.image_mean == SIGLIP_MEAN and model.config.image_std == SIGLIP_STD
    assert (model.config.min_depth_m, model.config.max_depth_m) == (0.001, 10.0)


def test_switching_the_tower_takes_its_statistics_and_activation():
    model = create_model('space_clip', clip_model='ViT-B-16-SigLIP', input_size=(32, 32))
    assert model.config.image_mean == SIGLIP_MEAN and not model.config.clip_quick_gelu
    with pytest.raises(ConfigError, match='clip_quick_gelu'):
        create_model(
            'space_clip', clip_model='ViT-B-16-SigLIP', clip_quick_gelu=True, input_size=(32, 32)
        )


@pytest.mark.parametrize(
    'overrides, match',
    [
        ({'clip_model': 'RN50'}, 'needs a ViT tower'),
        ({'clip_model': 'coca_ViT-B-32'}, 'class token'),
        (
            {
                'clip_cfg': {
                    **TINY_SIGLIP_CFG,
                    'vision_cfg': {**TINY_SIGLIP_CFG['vision_cfg'], 'timm_pool': 'avg'},
                }
            },
            'attention-pooled',
        ),
        (
            {
                'clip_cfg': {
                    **TINY_SIGLIP_CFG,
                    'vision_cfg': {
                        **TINY_SIGLIP_CFG['vision_cfg'],
                        'timm_model_name': 'vit_tiny_patch16_224',
                    },
                }
            },
            'prefix token',
        ),
        (
            {
                'clip_cfg': {
                    **TINY_SIGLIP_CFG,
                    'vision_cfg': {**TINY_SIGLIP_CFG['vision_cfg'], 'timm_model_name': 'resnet18'},
                }
            },
            'timm',
        ),
    ],
    ids=['resnet', 'coca-attn-pool', 'timm-avg-pool', 'timm-class-token', 'timm-cnn'],
)
def test_towers_spaceclip_cannot_read_are_config_errors(overrides, match):
    kwargs = {**TINY_SPACE_SIGLIP, 'clip_quick_gelu': False, **overrides}
    if 'clip_model' in overrides:
        kwargs.pop('clip_cfg')
        kwargs['input_size'] = (64, 64)
    with pytest.raises(ConfigError, match=match):
        create_model('space_clip_siglip', **kwargs)


def test_other_models_refuse_a_siglip_tower():
    with pytest.raises(ConfigError, match='SPACE-CLIP only'):
        create_model('moa_depthclip', clip_cfg=TINY_SIGLIP_CFG, input_size=(64, 64))


def _tiny_official_model(kind: str, prefix: str, tmp_path):
    """Convert a tiny official checkpoint (``kind`` 'clip' or 'siglip') written at ``prefix``."""
    hf = _tiny_hf(kind, seed=10)
    template = tiny_model('space_clip', seed=11) if kind == 'clip' else tiny_siglip_space_clip(11)
    _lively(template)
    path = tmp_path / f'{kind}_best_checkpoint.pt'
    torch.save({'model': _official_state(hf, template, prefix), 'epoch': 1}, path)
    overrides = TINY_SPACE if kind == 'clip' else {'clip_cfg': TINY_SIGLIP_CFG, **_tiny_decoder()}
    return load_official_checkpoint(path, **overrides)


@pytest.mark.parametrize('prefix', [NEW, OLD], ids=['transformers>=5.10', 'transformers<=5.5'])
@pytest.mark.parametrize('kind', ['clip', 'siglip'])
def test_converted_checkpoint_exports_and_runs_in_the_runtime_pipeline(kind, prefix, tmp_path):
    """Convert, save, reload, export (verified against torch), then run what the node runs."""
    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig, preprocess
    from training.onnx_export import export_onnx

    model = _tiny_official_model(kind, prefix, tmp_path)
    path = save_checkpoint(model, tmp_path / f'{kind}.safetensors')
    loaded = load_model(path).eval()
    report = export_onnx(loaded, tmp_path / f'{kind}.onnx')
    assert report.verified and report.metadata['model_name'] == 'space_clip'

    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    engine = load_engine(report.path, backend='onnxruntime')
    try:
        result = DepthPipeline(engine, PipelineConfig(cloud=False)).process_rgb(rgb)
    finally:
        engine.close()
    with torch.no_grad():
        want = model(torch.from_numpy(preprocess(rgb, model.input_hw)))[0][0, 0].numpy()
    want = cv2.resize(want, (80, 48), interpolation=cv2.INTER_LINEAR)
    assert result.depth_m.shape == (48, 80) and want.std() > 1e-3  # not a clamped constant
    np.testing.assert_allclose(result.depth_m, want, rtol=1e-4, atol=1e-5)


def test_checkpoint_layouts_that_cannot_be_read_are_checkpoint_errors():
    hf = _tiny_hf('clip', seed=7)
    template = tiny_model('space_clip', seed=7)
    mixed = _official_state(hf, template, OLD)
    mixed['module.' + NEW + 'embeddings.class_embedding'] = torch.zeros(64)
    with pytest.raises(CheckpointError, match='both'):
        convert_official_state_dict(mixed)
    headless = {
        k: v for k, v in _official_state(hf, template, NEW).items() if 'class_emb' not in k
    }
    with pytest.raises(CheckpointError, match='cannot tell the backbone'):
        backbone_layout(headless)
    decoder_only = {k: v for k, v in template.state_dict().items() if 'backbone' not in k}
    with pytest.raises(CheckpointError, match='no backbone keys'):
        convert_official_state_dict(decoder_only)


def test_siglip_checkpoint_into_a_clip_preset_is_a_checkpoint_error(tmp_path):
    hf = _tiny_hf('siglip', seed=8)
    path = tmp_path / 'siglip.pt'
    torch.save({'model': _official_state(hf, tiny_siglip_space_clip(seed=8), NEW)}, path)
    with pytest.raises(CheckpointError, match="siglip backbone does not match the 'space_clip'"):
        load_official_checkpoint(path, preset='space_clip', **TINY_SPACE)
