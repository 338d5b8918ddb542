"""INT8 for CPUs: post-training quantization of an exported model with NNCF, run by OpenVINO.

``quantize_openvino_int8`` reads the FP32 ``.onnx`` into OpenVINO, quantizes it with NNCF's
post-training quantization (``nncf.quantize``, transformer model type, performance preset:
the ViT's MatMuls and the decoder's convolutions in INT8 with symmetric activations,
calibrated on frames the user provides; the layer that reads the image and the depth head
stay in floating point, see ``kept_float``), checks
the INT8 model against the FP32 one on held-out frames of the same source with the package's
accuracy bar (``moa_depth_ros.engine.accuracy``), and only then writes it, as an OpenVINO IR
(``MODEL.int8.xml`` + ``.bin``) beside the ``.onnx``. The IR's ``rt_info`` carries the
FP32 file's metadata_props plus what was quantized, on what, and the measured error
(``moa_depth_ros.engine.openvino_backend.read_ir_metadata`` reads them back): the node, the
bag tool and eval load it with ``load_engine`` like any model file.

Why an IR and not a QDQ ``.onnx``: NNCF's ONNX backend writes a QDQ ONNX that both runtimes
read, but measured on this package's MoA-DepthCLIP (OpenVINO 2026.4, Xeon with AMX) OpenVINO
ran it 25 % slower than the IR NNCF makes from the same model (24.3 vs 19.4 ms: its patch
embedding and four decoder convolutions stayed FP32), could not compile it with BF16 for the
unquantized rest ("No suitable implementations"), and ONNX Runtime ran the QDQ file at 282 ms,
3x slower than FP32 ONNX: no runtime gained from the ``.onnx`` form.

Calibration frames (``calibration_frames``) come from a folder of images, a rosbag2
recording (read with the bag tool's reader, decoded as the node decodes messages) or a
training recipe's training split; each is resized to the network input with the node's
``resize_to_input``. One frame in ``HOLDOUT_EVERY`` is kept out of calibration and used for
the check.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Iterable, Sequence

import numpy as np

from moa_depth_ros.engine.accuracy import ACCURACY_BAR, accuracy_holds, depth_agreement
from moa_depth_ros.engine.cache import file_sha256
from moa_depth_ros.engine.onnx_backend import read_onnx_info
from moa_depth_ros.engine.openvino_backend import IR_METADATA_SECTION, int8_ir_path
from moa_depth_ros.errors import ConfigError, EngineError

#: Frames used to calibrate by default (NNCF's statistics need tens, not hundreds, for a ViT).
DEFAULT_CALIBRATION_FRAMES = 64
#: Nodes left in floating point: the depth head. Its bin logits feed a softmax and an
#: expectation over 128 depth bins, where INT8 rounding of the logits moves the depth: on the
#: quickstart's trained model (FP32 rest, 32 held-out test rooms), quantizing the head too gave
#: 2.7 % mean relative depth error against FP32 (worst room 12 %), leaving it float 0.77 %.
#: The layers that read the image stay float too (``image_layers``): see ``kept_float``.
FLOAT_PATTERNS = (r'.*/head/.*',)
#: What ``quantize_openvino_int8`` does, recorded as the model's ``quantization``; an INT8
#: file recording another recipe is made again by the benchmark (``tools.bench.cpu``).
QUANTIZATION = (
    'int8 static (NNCF post-training, transformer model type, performance preset, image '
    'layer and depth head float; OpenVINO IR)'
)
#: Operations that, walking from the image, end the search for the layers reading it.
_WEIGHTED = ('Convolution', 'GroupConvolution', 'MatMul')
#: Every HOLDOUT_EVERY-th frame of the source is held out for the accuracy check.
HOLDOUT_EVERY = 5
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.tif', '.tiff')


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Network inputs (float32 [1,3,H,W] in [0,1]) split into calibration and check frames."""

    calibration: list[np.ndarray]
    check: list[np.ndarray]
    source: str  # what the frames are, for the metadata ('12 frames of folder ...')


@dataclasses.dataclass(frozen=True)
class Int8Report:
    """What ``quantize_openvino_int8`` produced, or why it refused."""

    path: pathlib.Path | None  # None: the INT8 model missed the accuracy bar; no file
    agreement: dict[str, float]  # over all check frames' pixels, against FP32 (the verdict)
    worst: dict[str, float]  # the worst check frame
    metadata: dict[str, str]
    seconds: float

    def summary(self) -> str:
        numbers = (
            f'depth vs FP32 on {self.metadata["int8_check_frames"]} held-out frames: mean rel '
            f'err {self.agreement["mean_rel_err"]:.2%} (worst frame '
            f'{self.worst["mean_rel_err"]:.2%}), delta1 agreement '
            f'{self.agreement["delta1_agreement"]:.4f}; bar: <= '
            f'{ACCURACY_BAR["mean_rel_err"]:.0%} and >= {ACCURACY_BAR["delta1_agreement"]:.2f}'
        )
        if self.path is None:
            return f'INT8 model refused (accuracy below the bar), nothing written: {numbers}'
        return (
            f'INT8 model {self.path} (OpenVINO IR; {self.metadata["int8_tool"]}), '
            f'calibrated on {self.metadata["int8_calibration"]}; {numbers}; took '
            f'{self.seconds:.0f} s'
        )


def network_input(rgb: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    from moa_depth_ros.frame.pipeline import check_rgb, preprocess

    return preprocess(check_rgb(rgb), input_hw)


def _evenly(items: Sequence[Any], count: int) -> list[Any]:
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def split_frames(frames: Sequence[np.ndarray], source: str) -> CalibrationSet:
    """Hold out every ``HOLDOUT_EVERY``-th frame for the check; calibrate on the rest."""
    if len(frames) < 2:
        raise ConfigError(
            f'{source}: INT8 calibration needs at least 2 frames (one held out), got {len(frames)}'
        )
    check = [f for i, f in enumerate(frames) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    if not check:
        check = [frames[-1]]
    calibration = [f for f in frames if not any(f is c for c in check)]
    return CalibrationSet(calibration=calibration, check=check, source=source)


def _folder_frames(folder: pathlib.Path, count: int) -> list[np.ndarray]:
    import cv2

    files = sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            f'calibration folder {os.fspath(folder)!r} has no images ({", ".join(IMAGE_SUFFIXES)})'
        )
    frames = []
    for path in _evenly(files, count):
        bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f'calibration image {os.fspath(path)!r} cannot be read')
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    return frames


def _bag_frames(path: pathlib.Path, count: int, image_topic: str | None) -> list[np.ndarray]:
    from rosbags.typesys import Stores, get_typestore

    from moa_depth_ros.bag.process import _choose_image_topic, _deserialize
    from moa_depth_ros.bag.recovery import open_input
    from moa_depth_ros.frame.msgs import decode_camera_image

    typestore = get_typestore(Stores.LATEST)
    with open_input(path) as bag:
        topics = {conn.topic: conn.msgtype for conn in bag.connections}
        topic = _choose_image_topic(topics, image_topic)
        raws = [raw for conn, _, raw in bag.messages() if conn.topic == topic]
        msgtype = topics[topic]
    if not raws:
        raise ConfigError(f'recording {os.fspath(path)!r} has no messages on {topic}')
    return [
        decode_camera_image(_deserialize(typestore, raw, msgtype)) for raw in _evenly(raws, count)
    ]


def _recipe_frames(
    recipe: pathlib.Path, count: int, input_hw: tuple[int, int]
) -> list[np.ndarray]:
    from training.config import build_data_config, load_config
    from training.data import build_dataset

    values = dict(load_config(recipe).data.dataset)
    values['augment'] = False
    name = values.get('dataset', 'synthetic')
    defaults = {'synthetic_hw': input_hw} if name == 'synthetic' else {'image_hw': input_hw}
    dataset = build_dataset(build_data_config(values, **defaults), 'train')
    if len(dataset) == 0:
        raise ConfigError(f'recipe {os.fspath(recipe)!r}: the training split is empty')
    frames = []
    for index in _evenly(range(len(dataset)), count):
        image = dataset[index]['image']  # float [3, H, W] in [0, 1]
        rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        frames.append(rgb)
    return frames


def calibration_frames(
    source: str | os.PathLike,
    input_hw: tuple[int, int],
    *,
    count: int = DEFAULT_CALIBRATION_FRAMES,
    image_topic: str | None = None,
) -> CalibrationSet:
    """Read up to ``count`` frames (spread over the source) and split off the check frames.

    ``source``: a folder of images; a rosbag2 recording (a directory with metadata.yaml, an
    ``.mcap`` or ``.db3``; ``image_topic`` picks the camera, as in the bag tool); or a
    training recipe (``.yaml``: its training split, unaugmented).
    """
    if count < 2:
        raise ConfigError(f'calibration frame count must be >= 2, got {count}')
    path = pathlib.Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f'calibration source {os.fspath(path)!r} does not exist')
    if path.suffix.lower() in ('.yaml', '.yml'):
        kind, rgbs = 'training recipe', _recipe_frames(path, count, input_hw)
    elif path.suffix.lower() in ('.mcap', '.db3') or (path / 'metadata.yaml').is_file():
        kind, rgbs = 'recording', _bag_frames(path, count, image_topic)
    elif path.is_dir():
        kind, rgbs = 'image folder', _folder_frames(path, count)
    else:
        raise ConfigError(
            f'calibration source {os.fspath(path)!r} is neither a folder of images, a rosbag2 '
            f'recording (directory with metadata.yaml, .mcap, .db3) nor a recipe (.yaml)'
        )
    frames = [network_input(rgb, input_hw) for rgb in rgbs]
    return split_frames(frames, f'{len(frames)} frames of {kind} {path.name}')


def image_layers(model: Any) -> list[str]:
    """Return the names of the weighted layers that read the network input first.

    Walks from the input through the operations before them (normalisation, layout) to the
    first convolution or MatMul on each path; shape computations (``ShapeOf``) are not
    followed, since they lead to layers that read no pixel values. For MoA-DepthCLIP that is
    the ViT's patch embedding (or the quickstart's first stem convolution); for
    Depth-Anything-V2 its patch embedding.
    """
    found: list[str] = []
    seen: set[str] = set()
    frontier = [port.get_node() for port in model.inputs]
    while frontier:
        node = frontier.pop()
        for output in node.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                name = consumer.get_friendly_name()
                if name in seen or consumer.get_type_name() == 'ShapeOf':
                    continue
                seen.add(name)
                if consumer.get_type_name() in _WEIGHTED:
                    found.append(name)
                else:
                    frontier.append(consumer)
    return found


def kept_float(model: Any) -> tuple[list[str], tuple[str, ...]]:
    """Return (layer names, name patterns) NNCF leaves in floating point.

    The depth head (``FLOAT_PATTERNS``) and the layers that read the image
    (``image_layers``): their input is the image itself, whose [0, 1] values and the
    normalisation before them leave an 8-bit grid too coarse. Measured on three trained
    quickstart models (64 training rooms to calibrate, 16 more to check, 64 test rooms), with
    the performance preset: quantizing the first convolution as well gave 1.2-1.3 % mean
    relative depth error against FP32 on the check rooms, over the 1 % bar; leaving it float
    0.29-0.33 % (0.31-0.36 % on the test rooms), at 0.4 ms more per frame on the full-size
    model (20.6 against 20.2 ms, 2-core Xeon with AMX). NNCF's accuracy-aware quantization
    (``quantize_with_accuracy_control``, 0.7 % allowed) reverted that single layer and no other.
    """
    return image_layers(model), FLOAT_PATTERNS


def _openvino_depth(compiled: Any, frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    request = compiled.create_infer_request()
    return [np.array(request.infer({'image': f})['depth'], dtype=np.float32) for f in frames]


def compare_engines(
    reference: Any, candidate: Any, frames: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Depth of ``candidate`` against ``reference`` (engines) on the same network inputs.

    Returns {'worst': the worst frame's numbers, 'mean': over all frames' pixels (what the
    accuracy bar judges), 'frames': n}.
    """
    results = [depth_agreement(reference.infer(f)[0], candidate.infer(f)[0]) for f in frames]
    return {'worst': _worst(results), 'mean': _pooled(results), 'frames': len(results)}


def _pooled(results: Sequence[dict[str, float]]) -> dict[str, float]:
    """Numbers over every check pixel: frames of one size weigh equally (the verdict's)."""
    return {
        'mean_rel_err': float(np.mean([r['mean_rel_err'] for r in results])),
        'max_rel_err': max(r['max_rel_err'] for r in results),
        'delta1_agreement': float(np.mean([r['delta1_agreement'] for r in results])),
    }


def _worst(results: Sequence[dict[str, float]]) -> dict[str, float]:
    return {
        'mean_rel_err': max(r['mean_rel_err'] for r in results),
        'max_rel_err': max(r['max_rel_err'] for r in results),
        'delta1_agreement': min(r['delta1_agreement'] for r in results),
    }


def quantize_openvino_int8(
    onnx_path: str | os.PathLike,
    frames: CalibrationSet,
    output: str | os.PathLike | None = None,
) -> Int8Report:
    """Quantize ``onnx_path`` to INT8 with NNCF; write the IR only if its accuracy holds.

    The check compares depth of the INT8 model, run as the node runs it (OpenVINO on the CPU,
    the CPU's preferred precision for the layers NNCF left in floating point), with the FP32
    model
    (OpenVINO, FP32) on the held-out frames: over all their pixels it must meet
    ``ACCURACY_BAR`` (the worst frame is recorded too).
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise EngineError(
            'INT8 export needs nncf and openvino: pip install -r requirements-train.txt '
            '-r requirements-openvino.txt'
        ) from e
    started = time.monotonic()
    onnx_path = pathlib.Path(onnx_path)
    output = pathlib.Path(output) if output else int8_ir_path(onnx_path)
    if output.suffix != '.xml':
        raise ConfigError(f'the INT8 model is an OpenVINO IR (.xml + .bin), got {output}')
    props = dict(read_onnx_info(onnx_path).metadata_props)
    core = ov.Core()
    model = core.read_model(os.fspath(onnx_path))
    dataset = nncf.Dataset(frames.calibration, lambda image: {'image': image})
    float_names, float_patterns = kept_float(model)
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        # Symmetric activations: on the full-size model 20.2 ms against 22.3 ms for the
        # transformer type's default (mixed: asymmetric activations), and on the trained
        # quickstart models 0.8 % against 1.2 % depth error with the first layer quantized.
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(frames.calibration),
        # validate=False: a model without such nodes (a test network) quantizes the rest.
        ignored_scope=nncf.IgnoredScope(
            names=float_names, patterns=list(float_patterns), validate=False
        ),
    )
    reference = core.compile_model(model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    expected = _openvino_depth(reference, frames.check)
    del reference
    # The unquantized layers in the CPU's preference, as the runtime runs an INT8 model.
    compiled = core.compile_model(quantized, 'CPU')
    hint = compiled.get_property('INFERENCE_PRECISION_HINT')  # an ov.Type ('bf16', 'f32')
    name = hint.to_string() if hasattr(hint, 'to_string') else str(hint)
    rest = {'f32': 'fp32', 'f16': 'fp16'}.get(name, name)
    got = _openvino_depth(compiled, frames.check)
    del compiled
    per_frame = [depth_agreement(e, g) for e, g in zip(expected, got)]
    worst, pooled = _worst(per_frame), _pooled(per_frame)
    props.update(
        quantization=QUANTIZATION,
        int8_tool=f'nncf {nncf.__version__}, openvino {ov.__version__}',
        int8_source_onnx=onnx_path.name,
        int8_source_sha256=file_sha256(onnx_path),
        int8_calibration=f'{len(frames.calibration)} of {frames.source}',
        int8_check_frames=str(len(frames.check)),
        int8_check_rest_precision=rest,
        int8_kept_float=(
            f'the layers reading the image ({", ".join(float_names) or "none found"}) and the '
            f'depth head (nodes matching {", ".join(float_patterns)})'
        ),
        int8_mean_rel_err=f'{pooled["mean_rel_err"]:.6g}',
        int8_delta1_agreement=f'{pooled["delta1_agreement"]:.6g}',
        int8_worst_frame_mean_rel_err=f'{worst["mean_rel_err"]:.6g}',
        int8_max_rel_err=f'{worst["max_rel_err"]:.6g}',
        int8_verified='true' if accuracy_holds(pooled) else 'false',
    )
    report = Int8Report(None, pooled, worst, props, time.monotonic() - started)
    if not accuracy_holds(pooled):
        return report
    for key, value in props.items():
        quantized.set_rt_info(value, [IR_METADATA_SECTION, key])
    _save_ir(ov, quantized, output)
    return dataclasses.replace(report, path=output, seconds=time.monotonic() - started)


def _save_ir(ov: Any, model: Any, output: pathlib.Path) -> None:
    """Write ``output`` (.xml) and its .bin so a reader never sees half a model.

    Both go to temporary names beside the target first; the .bin is moved into place before
    the .xml, and a reader opens the .xml first, so it finds either the previous pair or,
    from the .xml's move on, the new one.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f'.{output.stem}.tmp-{os.getpid()}.xml')
    try:
        # FP32 for the weights left unquantized (the default would store them as FP16).
        ov.save_model(model, os.fspath(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix('.bin'), output.with_suffix('.bin'))
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, tmp.with_suffix('.bin')):
            leftover.unlink(missing_ok=True)
