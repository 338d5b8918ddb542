"""Every model's forward() exports to ONNX (opset 17) and onnxruntime agrees with torch."""

from __future__ import annotations

from model_fixtures import TINY, TINY_VIT_CFG, perturb_batchnorm, random_image, tiny_model
import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch

from moa_depth_ros.model.clip_backbone import vit_block

OPSET = 17


def _export(model, path) -> None:
    example = random_image(model, batch=1)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=['image'],
        output_names=['depth', 'confidence'],
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter: fixed shapes, opset 17 without conversion
    )


@pytest.mark.filterwarnings('ignore:You are using the legacy TorchScript:DeprecationWarning')
@pytest.mark.parametrize('name', sorted(TINY))
def test_export_runs_in_onnxruntime_with_the_same_outputs(name, tmp_path):
    model = tiny_model(name, seed=4).eval()
    perturb_batchnorm(model)
    path = tmp_path / f'{name}.onnx'
    _export(model, path)

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= OPSET
    assert [i.name for i in proto.graph.input] == ['image']
    assert [o.name for o in proto.graph.output] == ['depth', 'confidence']
    # No text tower in the graph: the 49408-token embedding table would be the giveaway.
    assert not [t.name for t in proto.graph.initializer if 49408 in t.dims]

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    image = random_image(model, batch=1, seed=9)  # not the export example
    depth, confidence = session.run(None, {'image': image.numpy()})
    with torch.no_grad():
        depth_t, confidence_t = model(image)
    assert depth.shape == confidence.shape == (1, 1, *model.input_hw)
    np.testing.assert_allclose(depth, depth_t.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(confidence, confidence_t.numpy(), rtol=1e-4, atol=1e-5)


def test_exportable_block_equals_open_clips_block():
    torch.manual_seed(0)
    cfg = dict(TINY_VIT_CFG, quick_gelu=True)
    visual = open_clip.model.CLIP(**cfg).visual.eval()
    tokens = torch.randn(2, 17, 64)
    with torch.no_grad():
        for block in visual.transformer.resblocks:
            # open_clip's own forward takes the fused fast path here (eval, no grad).
            torch.testing.assert_close(vit_block(block, tokens), block(tokens))
            tokens = block(tokens)


@pytest.mark.filterwarnings('ignore:You are using the legacy TorchScript:DeprecationWarning')
def test_conv_stem_model_exports_and_round_trips(tmp_path):
    from moa_depth_ros.model import load_model, save_checkpoint

    model = tiny_model(
        'moa_depthclip', seed=5, conv_stem_channels=(8, 8, 16, 16), trainable_last_blocks=4
    ).eval()
    perturb_batchnorm(model)
    loaded = load_model(save_checkpoint(model, tmp_path / 'stem.safetensors'))
    path = tmp_path / 'stem.onnx'
    _export(loaded, path)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    image = random_image(model, batch=1, seed=3)
    depth, confidence = session.run(None, {'image': image.numpy()})
    with torch.no_grad():
        depth_t, confidence_t = model(image)
    np.testing.assert_allclose(depth, depth_t.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(confidence, confidence_t.numpy(), rtol=1e-4, atol=1e-5)
