"""DepthCLIP: the official zero-shot algorithm, quirks included, and nothing to train."""

from __future__ import annotations

import copy

from model_fixtures import TINY_RESNET_CFG, perturb_batchnorm, random_image, tiny_model
import open_clip
import pytest
import torch
import torch.nn.functional as F

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.model import build_model, preset_config
from moa_depth_ros.model.config import IMAGENET_MEAN, IMAGENET_STD

OFFICIAL_PROMPTS = [
    'This object is giant',
    'This object is extremely close',
    'This object is close',
    'This object is not in distance',
    'This object is a little remote',
    'This object is far',
    'This object is unseen',
]
OFFICIAL_BINS_M = [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00]


def _official_forward(model, image: torch.Tensor) -> torch.Tensor:
    """monoclip.py's MonoCLIP.forward, step by step in the official tensor layout."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    visual = model.backbone
    x = visual.stem((image - mean) / std)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    n, c, h, w = x.shape
    img_f = x.reshape(n, c, h * w).permute(2, 0, 1).permute(1, 0, 2)  # B, HW, C
    img_f = img_f / img_f.norm(dim=-1, keepdim=True)
    img_f = F.interpolate(img_f, scale_factor=0.5)  # "to match size": nearest on channels
    logits = 100.0 * img_f @ model.bin_embeddings  # [embed_dim, 7]
    logits = logits.permute(0, 2, 1).reshape(-1, 7, h, w) / 0.1
    probs = F.softmax(logits, dim=1)
    return (probs * torch.tensor(OFFICIAL_BINS_M).view(1, 7, 1, 1)).sum(1, keepdim=True)


def _official_eval(model, image: torch.Tensor) -> torch.Tensor:
    """eval.py: average with the flipped image, then bilinear upsampling (align_corners)."""
    depth = _official_forward(model, image)
    flipped = torch.flip(_official_forward(model, torch.flip(image, [3])), [3])
    depth = 0.5 * (depth + flipped)
    return F.interpolate(depth, size=image.shape[-2:], mode='bilinear', align_corners=True)


@pytest.fixture(scope='module')
def tiny():
    model = tiny_model('depthclip')
    perturb_batchnorm(model)
    with torch.no_grad():  # spread the features so the 1000x softmax picks varied bins
        for p in model.backbone.parameters():
            p.mul_(3.0)
    return model.eval()


def test_full_size_model_has_nothing_to_train_and_no_text_tower():
    # build_text=False: the RN50 text tower's cost buys nothing for these checks.
    model = build_model('depthclip', preset_config('depthclip'), build_text=False)
    counts = model.parameter_counts()
    assert counts['trainable'] == 0
    assert model.input_hw == (416, 544)
    assert model.bin_embeddings.shape == (1024, 7)
    assert not [n for n in model.state_dict() if 'token_embedding' in n or 'attnpool' in n]


def test_prompts_and_bins_are_the_official_ones():
    config = preset_config('depthclip')
    assert config.prompts() == OFFICIAL_PROMPTS
    assert list(config.depth_bins_m) == OFFICIAL_BINS_M
    assert (config.min_depth_m, config.max_depth_m) == (1.0, 3.0)


def test_bin_embeddings_are_the_normalised_prompt_encodings():
    model = tiny_model('depthclip', seed=5)
    torch.manual_seed(5)  # the same draws rebuild the same (random) text tower
    cfg = copy.deepcopy(TINY_RESNET_CFG)
    cfg['quick_gelu'] = True
    clip = open_clip.model.CLIP(**cfg).eval()
    with torch.no_grad():
        text = clip.encode_text(open_clip.tokenize(OFFICIAL_PROMPTS))
    expected = (text / text.norm(dim=-1, keepdim=True)).t()
    torch.testing.assert_close(model.bin_embeddings, expected)


def test_output_matches_the_official_algorithm(tiny):
    image = random_image(tiny, batch=2)
    with torch.no_grad():
        depth, confidence = tiny(image)
        expected = _official_eval(tiny, image)
    torch.testing.assert_close(depth, expected, rtol=1e-5, atol=1e-5)
    assert depth.shape == confidence.shape == (2, 1, 64, 96)
    assert 1.0 <= float(depth.min()) and float(depth.max()) <= 3.0
    assert 0.0 <= float(confidence.min()) and float(confidence.max()) <= 1.0
    assert float(depth.std()) > 0  # the example exercises more than one bin


def test_without_flip_averaging_the_single_pass_is_returned(tiny):
    model = tiny_model('depthclip', flip_average=False)
    model.load_state_dict(tiny.state_dict())
    image = random_image(model, batch=1)
    with torch.no_grad():
        depth, _ = model(image)
        single = F.interpolate(
            _official_forward(tiny, image), size=(64, 96), mode='bilinear', align_corners=True
        )
    torch.testing.assert_close(depth, single, rtol=1e-5, atol=1e-5)


def test_frozen_batchnorm_statistics_survive_train_mode(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    tiny.train()
    with torch.no_grad():
        tiny(random_image(tiny))
    tiny.eval()
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_a_depth_range_other_than_the_bins_is_rejected():
    with pytest.raises(ConfigError, match='min_depth_m/max_depth_m'):
        tiny_model('depthclip', max_depth_m=10.0)
    with pytest.raises(ConfigError, match='depth word per bin'):
        tiny_model('depthclip', depth_words=('near', 'far'))


def test_confidence_stays_finite_in_half_precision(tiny):
    # The 1000x logit scale drives most bin probabilities to exact zeros in FP16 (what a
    # TensorRT FP16 engine computes in); depth and confidence must still be numbers.
    model = tiny_model('depthclip')
    model.load_state_dict(tiny.state_dict())
    image = random_image(model, batch=1)
    with torch.no_grad():
        reference_depth, reference_conf = model(image)
        depth, confidence = model.half()(image.half())
    assert torch.isfinite(depth).all() and torch.isfinite(confidence).all()
    torch.testing.assert_close(confidence.float(), reference_conf, atol=5e-2, rtol=0)
