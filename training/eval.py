"""``python -m training eval``: score a checkpoint or an exported model on a test set.

::

    python -m training eval --checkpoint runs/x/model.safetensors --dataset synthetic
    python -m training eval --checkpoint C --dataset nyu \
        --data-root ~/data/nyu/official_splits/test --list ~/data/nyudepthv2_test_files_with_gt.txt
    python -m training eval --model model.onnx --dataset kitti --data-root ... --median-scaling

Prints the papers' table (``training/metrics.py``: d1 d2 d3 AbsRel SqRel RMSE RMSElog log10
SILog, per-image means) under a header naming the depth caps, the crop and whether median
scaling is on. Both ``--checkpoint`` and ``--model`` (any file ``load_engine`` opens: .onnx,
.engine, .safetensors) are scored through ``DepthPipeline``, exactly as the node publishes
depth: the test image at its own resolution, the node's resize to the network input, the
network, the conversion from the model's canonical camera with the image's focal length,
upsampling to the ground truth and the model's depth range (``evaluate_pipeline``), with one
difference: depth outside that range is clamped to it, where the node blanks it (NaN), so that
every ground-truth pixel is scored as the papers do. So the numbers are what a robot gets, and
an export is checked against its checkpoint. During
training, ``evaluate_model`` scores the validation split in batches with the same resize.

The papers' protocol, where it differs from the node's defaults, is two options:

- ``--flip-average``: the test-time flip of SPACE-CLIP's final evaluation (``nyu.yaml``
  ``final_eval_flip_tta``): the network also sees the mirror image and the two depth maps are
  averaged (the pipeline's ``flip_average``, the node's ``flip_average`` parameter).
- ``--resize pil_bicubic``: the official loader's resize to the network input (PIL bicubic,
  ``training.data.base.pil_bicubic_resize``) instead of the node's (``resize_to_input``: box
  halvings, then bilinear). A converted official checkpoint was trained on PIL-resized images.

So ``--flip-average --resize pil_bicubic --crop none`` on the NYU test list is SPACE-CLIP's
reported NYU protocol (``nyu.yaml``: 480x640 images straight to 224x224, ``eval_crop: none``,
caps 0.001-10 m); the header says which options were used. Not reproduced: its KITTI loader
first resizes image and ground truth to 352x704 (PIL bicubic / nearest) and scores there.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Callable, Sequence

import numpy as np
import torch

from moa_depth_ros.engine.loader import BACKENDS
from moa_depth_ros.errors import ConfigError, MoaDepthError

# The list-file names of BTS / AdaBins / SPACE-CLIP (``train_test_inputs/``), looked for in
# --data-root when --list is not given.
DEFAULT_TEST_LISTS = {
    'nyu': 'nyudepthv2_test_files_with_gt.txt',
    'kitti': 'eigen_test_files_with_gt.txt',
}

Predictor = Callable[[torch.Tensor], torch.Tensor]
#: How an image reaches the network input: the node's resize, or the official SPACE-CLIP one.
RESIZES = ('node', 'pil_bicubic')


def default_crop(dataset: str, gt_hw: tuple[int, int]) -> str:
    """Return the usual evaluation crop: Eigen's for NYU (480x640 ground truth) and KITTI."""
    if dataset in ('nyu', 'nyu_labeled') and tuple(gt_hw) == (480, 640):
        return 'nyu_eigen'
    if dataset == 'kitti':
        return 'kitti_eigen'
    return 'none'


def evaluate_predictor(
    predict: Predictor,
    dataset,
    *,
    input_hw: tuple[int, int],
    metric_config,
    batch_size: int = 8,
    device: torch.device | str = 'cpu',
    on_batch: Callable[[dict, torch.Tensor], None] | None = None,
    canonical_focal_px: float | None = None,
):
    """Run ``predict`` (image [N,3,H,W] in [0,1] -> depth [N,1,h,w]) over ``dataset``.

    Images are resized to ``input_hw`` when needed; predictions are resized to the ground
    truth by the metrics. ``canonical_focal_px``: the predictor's depth is for that canonical
    camera and becomes metric with each sample's own focal length (``canonical_scale``), as the
    runtime does with CameraInfo. Returns the filled ``MetricAccumulator``.
    """
    from training.data.base import canonical_scale, resize_batch
    from training.metrics import MetricAccumulator

    accumulator = MetricAccumulator(metric_config)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        image = resize_batch(batch['image'], tuple(input_hw)).to(device)  # the node's resize
        depth_m = predict(image)
        if canonical_focal_px is not None:
            scale = canonical_scale(batch, tuple(input_hw), canonical_focal_px)
            depth_m = depth_m * scale.to(depth_m.device).view(-1, 1, 1, 1)
        gt_m = batch['depth_m'].to(depth_m.device)
        accumulator.update(depth_m.float(), gt_m)
        if on_batch is not None:
            on_batch(batch, depth_m)
    return accumulator


def _metric_config(dataset_name: str, dataset, depth_range_m, crop, median_scaling):
    from training.metrics import MetricConfig

    if crop in (None, 'auto'):
        gt_hw = tuple(dataset[0]['depth_m'].shape[-2:]) if len(dataset) else (0, 0)
        crop = default_crop(dataset_name, gt_hw)
    return MetricConfig(
        min_depth_m=float(depth_range_m[0]),
        max_depth_m=float(depth_range_m[1]),
        crop=crop,
        median_scaling=bool(median_scaling),
    )


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    device: torch.device | str = 'cpu',
    depth_range_m: tuple[float, float] = (1e-3, 10.0),
    dataset_name: str = 'synthetic',
    crop: str | None = 'auto',
    median_scaling: bool = False,
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean metrics of a torch ``DepthModel`` on ``dataset`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        config = _metric_config(dataset_name, dataset, depth_range_m, crop, median_scaling)
        accumulator = evaluate_predictor(
            lambda image: model(image)[0],
            dataset,
            input_hw=model.input_hw,
            metric_config=config,
            batch_size=batch_size,
            device=device,
            canonical_focal_px=model.config.canonical_focal_px(),
        )
    finally:
        model.train(was_training)
    return accumulator.means()


def evaluate_pipeline(
    pipeline,
    dataset,
    *,
    metric_config,
    on_sample: Callable[[dict, torch.Tensor], None] | None = None,
    resize: str = 'node',
    compare: dict | None = None,
):
    """Score ``dataset`` through a ``DepthPipeline``: what the node publishes for each image.

    Each sample's image (at its own resolution, as a camera sends it) goes through the
    pipeline with a camera model made from the sample's ``K``, so depth is converted from the
    canonical camera as the node converts it (unless the pipeline's config switches that
    off), and comes out at the ground truth's size. Samples must hold image, depth and ``K``
    at one resolution (datasets built without ``image_hw``). ``resize`` 'pil_bicubic' resizes
    each image to the network input with ``pil_bicubic_resize`` first (the camera model
    scaled with it), so the pipeline's own resize has nothing left to do. Returns the
    ``MetricAccumulator``.

    ``compare``: {name: another pipeline} scored on the very same frames (e.g. the INT8
    model beside FP32); each gets a ``MetricAccumulator`` and the agreement of its depth
    with ``pipeline``'s (``depth_agreement`` per frame);
    the accumulator returned carries as ``compared[name]``: {'metrics': its accumulator,
    'agreement': [per-frame numbers]}.
    """
    import dataclasses

    from moa_depth_ros.frame.geometry import CameraModel
    from training.data.base import pil_bicubic_resize
    from training.metrics import MetricAccumulator

    if resize not in RESIZES:
        raise ConfigError(f'resize must be one of {", ".join(RESIZES)}, got {resize!r}')
    from moa_depth_ros.engine.accuracy import depth_agreement

    accumulator = MetricAccumulator(metric_config)
    compare = dict(compare or {})
    others = {
        name: {'pipeline': other, 'metrics': MetricAccumulator(metric_config), 'agreement': []}
        for name, other in compare.items()
    }
    for index in range(len(dataset)):
        sample = dataset[index]
        rgb = (sample['image'].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        gt_m = sample['depth_m']
        height, width = rgb.shape[:2]
        if tuple(gt_m.shape[-2:]) != (height, width):
            raise ConfigError(
                f'{sample["name"]}: image {width}x{height} and depth '
                f'{gt_m.shape[-1]}x{gt_m.shape[-2]} differ; build the dataset without image_hw'
            )
        K = sample['K'].numpy().astype(np.float64)
        camera = CameraModel(
            width=width,
            height=height,
            fx_px=K[0, 0],
            fy_px=K[1, 1],
            cx_px=K[0, 2],
            cy_px=K[1, 2],
        )
        config = dataclasses.replace(pipeline.config, output_hw=(height, width))
        if resize == 'pil_bicubic':
            in_h, in_w = pipeline.input_hw
            rgb = pil_bicubic_resize(rgb, (in_h, in_w))
            camera = camera.scaled(in_w, in_h)
        result = pipeline.process_rgb(rgb, camera, config)
        depth_m = torch.from_numpy(result.depth_m)[None, None]
        accumulator.update(depth_m, gt_m[None])
        for other in others.values():
            got = other['pipeline'].process_rgb(rgb, camera, config).depth_m
            other['metrics'].update(torch.from_numpy(got)[None, None], gt_m[None])
            other['agreement'].append(depth_agreement(result.depth_m, got))
        if on_sample is not None:
            on_sample(sample, depth_m)
    accumulator.compared = {
        name: {'metrics': other['metrics'], 'agreement': other['agreement']}
        for name, other in others.items()
    }
    return accumulator


def evaluation_pipeline(engine, focal_correction: bool = True, flip_average: bool = False):
    """Return the ``DepthPipeline`` that scores ``engine``: the node's, without the cloud.

    Depth outside the model's range is clamped to it rather than blanked, as the papers'
    evaluation clamps predictions (the metrics then apply the dataset's caps).
    ``flip_average``: the papers' test-time flip (``PipelineConfig.flip_average``).
    """
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig

    config = PipelineConfig(
        cloud=False,
        out_of_range='clamp',
        focal_correction=focal_correction,
        flip_average=flip_average,
    )
    return DepthPipeline(engine, config)


def _dataset_from_args(args: argparse.Namespace, input_hw: tuple[int, int]):
    """Build the test split named on the command line."""
    from training.config import build_data_config
    from training.data import build_dataset

    values: dict = {'dataset': args.dataset, 'augment': False}
    if args.dataset == 'synthetic':
        values['synthetic_hw'] = tuple(args.synthetic_hw or input_hw)
        values['synthetic_sizes'] = {args.split: args.num_scenes}
        values['seed'] = args.data_seed
    elif args.dataset == 'nyu_labeled':
        if not args.labeled_mat or not args.labeled_indices:
            raise ConfigError('--dataset nyu_labeled needs --labeled-mat and --labeled-indices')
        values.update(labeled_mat=args.labeled_mat, labeled_indices=args.labeled_indices)
    else:
        if not args.data_root:
            raise ConfigError(f'--dataset {args.dataset} needs --data-root (the test images)')
        root = os.path.expanduser(args.data_root)
        list_file = args.list or os.path.join(root, DEFAULT_TEST_LISTS[args.dataset])
        if not os.path.isfile(list_file):
            raise ConfigError(
                f'no test list at {list_file!r}; pass --list (the BTS/SPACE-CLIP '
                f'{DEFAULT_TEST_LISTS[args.dataset]})'
            )
        values.update(
            eval_list=list_file,
            eval_image_root=root,
            eval_depth_root=os.path.expanduser(args.depth_root or ''),
        )
    # No image_hw: each image reaches the pipeline at its own size, as a camera sends it.
    return build_dataset(build_data_config(values), args.split)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training eval',
        description="Evaluate a checkpoint or exported model with the papers' metrics.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--checkpoint', help='model file written by training (.safetensors)')
    source.add_argument('--model', help='exported model for load_engine (.onnx, .engine)')
    parser.add_argument(
        '--dataset',
        required=True,
        choices=('nyu', 'kitti', 'synthetic', 'nyu_labeled'),
        help="test set ('synthetic': the generator's default rooms, 56-66 degree lenses, no "
        'anti-aliasing; the quickstart scores its own cameras itself)',
    )
    parser.add_argument('--data-root', help='NYU/KITTI image root of the test list')
    parser.add_argument('--depth-root', help='ground-truth root when not under --data-root')
    parser.add_argument('--list', help='BTS-style test list (default: looked up in --data-root)')
    parser.add_argument('--labeled-mat', help='nyu_depth_v2_labeled.mat (nyu_labeled)')
    parser.add_argument('--labeled-indices', help='1-based test indices file (nyu_labeled)')
    parser.add_argument('--split', default='test', choices=('test', 'val'))
    parser.add_argument('--num-scenes', type=int, default=64, help='synthetic scenes to score')
    parser.add_argument('--data-seed', type=int, default=0, help='first synthetic scene offset')
    parser.add_argument(
        '--synthetic-hw', type=int, nargs=2, metavar=('H', 'W'), help='synthetic render size'
    )
    parser.add_argument(
        '--median-scaling', action='store_true', help='scale each prediction to the GT median'
    )
    parser.add_argument(
        '--no-focal-correction',
        action='store_true',
        help="score depth as predicted for the model's canonical camera, not converted with "
        "each image's focal length (the node's focal_length_correction false)",
    )
    parser.add_argument(
        '--flip-average',
        action='store_true',
        help='also run each image mirrored and average the two depth maps (the test-time '
        "flip of SPACE-CLIP's reported numbers; twice the network time)",
    )
    parser.add_argument(
        '--resize',
        default='node',
        choices=RESIZES,
        help="resize to the network input: 'node' (what the node does, default) or "
        "'pil_bicubic' (the official SPACE-CLIP loader's PIL bicubic resize)",
    )
    parser.add_argument(
        '--crop',
        default='auto',
        choices=('auto', 'none', 'nyu_eigen', 'kitti_garg', 'kitti_eigen'),
        help='evaluation crop (auto: Eigen crop for NYU 480x640 and KITTI)',
    )
    parser.add_argument('--min-depth', type=float, help='lower depth cap in metres')
    parser.add_argument('--max-depth', type=float, help='upper depth cap in metres')
    parser.add_argument('--device', default='cpu', help='torch device for --checkpoint')
    parser.add_argument(
        '--backend', default='auto', choices=('auto', *BACKENDS), help='backend for --model'
    )
    parser.add_argument(
        '--int8',
        metavar='MODEL.int8.xml',
        help='also score this INT8 model (python -m training export --int8) on the same '
        'frames and print it next to the --model/--checkpoint, with how closely its depth '
        "follows theirs (the package's accuracy bar)",
    )
    parser.add_argument('--json', help='also write the metrics to this JSON file')
    return parser


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the command line says; return {'metrics', 'header', 'table', ...}."""
    from training.data import DEPTH_RANGES_M

    if args.checkpoint:
        from moa_depth_ros.engine.torch_backend import TorchEngine

        engine = TorchEngine(args.checkpoint, device=args.device)
        source = args.checkpoint
    else:
        from moa_depth_ros.engine import load_engine

        engine = load_engine(args.model, backend=args.backend)
        source = f'{args.model} ({engine.backend})'
    int8 = None
    try:
        dataset = _dataset_from_args(args, tuple(engine.input_hw))
        if len(dataset) == 0:
            raise ConfigError(f'the {args.dataset} {args.split} split is empty')
        low, high = DEPTH_RANGES_M[args.dataset]
        depth_range_m = (
            args.min_depth if args.min_depth is not None else low,
            args.max_depth if args.max_depth is not None else high,
        )
        metric_config = _metric_config(
            args.dataset, dataset, depth_range_m, args.crop, args.median_scaling
        )
        pipeline = evaluation_pipeline(
            engine, focal_correction=not args.no_focal_correction, flip_average=args.flip_average
        )
        compare = {}
        if args.int8:
            from moa_depth_ros.engine import load_engine

            int8 = load_engine(args.int8, backend='openvino', device='cpu', precision='int8')
            compare['int8'] = evaluation_pipeline(
                int8, focal_correction=not args.no_focal_correction, flip_average=args.flip_average
            )
        accumulator = evaluate_pipeline(
            pipeline, dataset, metric_config=metric_config, resize=args.resize, compare=compare
        )
    finally:
        engine.close()
        if int8 is not None:
            int8.close()
    protocol = f'flip_average={"on" if args.flip_average else "off"} resize={args.resize}'
    header = f'{source} on {args.dataset} {args.split}: {accumulator.header()} {protocol}'
    from training.metrics import format_table

    if not accumulator.compared:
        table = format_table(accumulator.means(), header=header)
        return {'metrics': accumulator.means(), 'header': header, 'table': table}
    return _compared_result(accumulator, header, source, args.int8)


def _compared_result(accumulator, header: str, source: str, int8_path: str) -> dict:
    """Both models' metrics in one table, and the INT8 depth against the first model's."""
    from moa_depth_ros.engine.accuracy import ACCURACY_BAR, accuracy_holds
    from training.metrics import format_table

    other = accumulator.compared['int8']
    per_frame = other['agreement']
    worst = {
        'mean_rel_err': max(a['mean_rel_err'] for a in per_frame),
        'delta1_agreement': min(a['delta1_agreement'] for a in per_frame),
    }
    # Over every frame's pixels, as the export's check judges it (frames of one size).
    pooled = {key: float(np.mean([a[key] for a in per_frame])) for key in worst}
    mean_err = pooled['mean_rel_err']
    rows = {source: accumulator.means(), f'{int8_path} (int8)': other['metrics'].means()}
    verdict = 'within' if accuracy_holds(pooled) else 'OUTSIDE'
    table = format_table(rows, header=header) + (
        f'\nINT8 depth against {source} on the same {len(per_frame)} frames: mean relative '
        f'difference {mean_err:.2%} (worst frame {worst["mean_rel_err"]:.2%}), delta1 '
        f'agreement {pooled["delta1_agreement"]:.4f} (worst frame '
        f'{worst["delta1_agreement"]:.4f}): {verdict} the accuracy bar (<= '
        f'{ACCURACY_BAR["mean_rel_err"]:.0%}, >= {ACCURACY_BAR["delta1_agreement"]:.2f})'
    )
    return {
        'metrics': accumulator.means(),
        'int8_metrics': other['metrics'].means(),
        'int8_agreement': {
            'mean_rel_err': mean_err,
            'worst': worst,
            'delta1_agreement': pooled['delta1_agreement'],
            'within_bar': accuracy_holds(pooled),
        },
        'header': header,
        'table': table,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training eval``."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except MoaDepthError as e:
        print(f'eval: error: {e}', file=sys.stderr)
        return 2
    print(result['table'])
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
        tmp.write_text(
            json.dumps({'header': result['header'], **result['metrics']}, indent=2) + '\n',
            encoding='utf-8',
        )
        os.replace(tmp, path)
    return 0
