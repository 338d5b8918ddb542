r"""``python -m training finetune``: a model for the robot's environment, from its own RGB-D bag.

::

    python -m training finetune --bag REC --image-topic /camera/color/image_raw \
        --depth-topic /camera/aligned_depth_to_color/image_raw \
        --info-topic /camera/color/camera_info --base BASE.safetensors --output runs/finetune/

One more dataset through the one training loop: the recording is ``dataset: recording``
(``training.data.recording``: bag reader with recovery, registration check, pairing by
stamp, contiguous held-out block chosen before training, keyframes, depth masks), the
recipe ``training/configs/finetune.yaml`` starts from ``--base``
(``model.init_checkpoint``) and ``training.train.train`` runs it (resume, progress,
checkpoints, atomic state). Then, in ``--output``:

- ``model.safetensors`` (the fine-tuned weights) and ``model.onnx`` (exported and verified
  against PyTorch by ``training.export``, the checkpoint's provenance inside);
- ``metrics.json`` / ``metrics.txt``: d1, AbsRel, RMSE (and the rest of the papers' table)
  of the base model and the fine-tuned one on the held-out block, each scored through
  ``DepthPipeline`` as the node runs it (the node's resize, the canonical-camera conversion
  with the colour camera_info, the model's depth range), against the masked sensor depth;
- ``finetune.json``: the recipe as run, the command line, what was read from the recording
  (pairs, unpaired frames, blocks, masks); ``command.txt``: the command line; and the
  training loop's own ``config.yaml``, ``val_metrics.json``, ``tb/``.

Exit status: 0 when the fine-tuned model is at least as good as its base on the held-out
block in both d1 and AbsRel; 1 when it is worse in either (by more than float noise: 0.002
d1, 1 % AbsRel) (it is still written, and the
message says so: a team must not ship it as an improvement); 2 for unusable input (a
recording that cannot be read, depth not registered to colour, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import time
from typing import Any, Sequence

from moa_depth_ros.errors import MoaDepthError
from training.config import add_overrides_argument

DEFAULT_RECIPE = pathlib.Path(__file__).resolve().parent / 'configs' / 'finetune.yaml'


# Differences this small are float noise between PyTorch and ONNX Runtime, not a verdict: a
# model that did not change scores within them of itself.
D1_TOLERANCE = 0.002
ABS_REL_TOLERANCE = 0.01  # relative


def worse_metrics(base: dict[str, float], tuned: dict[str, float]) -> list[str]:
    """Return the verdict metrics on which ``tuned`` is worse than ``base`` (beyond noise)."""
    worse = []
    if tuned['d1'] < base['d1'] - D1_TOLERANCE:
        worse.append('d1')
    if tuned['abs_rel'] > base['abs_rel'] * (1.0 + ABS_REL_TOLERANCE):
        worse.append('abs_rel')
    return worse


def _say(text: str) -> None:
    print(f'[finetune] {text}', flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training finetune',
        description="Fine-tune a depth model on a robot's own RGB-D rosbag2 recording.",
    )
    parser.add_argument('--bag', required=True, help='the RGB-D rosbag2 (directory, .mcap, .db3)')
    parser.add_argument('--image-topic', required=True, help='colour Image (or its /compressed)')
    parser.add_argument(
        '--depth-topic',
        required=True,
        help='depth aligned to colour: 16UC1 / 32FC1 Image, or its /compressedDepth',
    )
    parser.add_argument('--info-topic', required=True, help="the colour camera's CameraInfo")
    parser.add_argument('--base', required=True, help='the model to start from (.safetensors)')
    parser.add_argument('--output', required=True, help='run directory to write')
    parser.add_argument('--recipe', default=str(DEFAULT_RECIPE), help='training recipe (YAML)')
    parser.add_argument(
        '--holdout', type=float, default=0.2, help='share of the recording held out at its end'
    )
    parser.add_argument(
        '--val', type=float, default=0.05, help='share for validation, just before the holdout'
    )
    parser.add_argument('--min-depth', type=float, default=0.3, help='sensor depth floor (m)')
    parser.add_argument('--max-depth', type=float, default=10.0, help='sensor depth ceiling (m)')
    parser.add_argument(
        '--keyframe-change',
        type=float,
        default=0.02,
        help='keep a frame when its thumbnail changed this much (mean |grey| in [0, 1])',
    )
    parser.add_argument(
        '--input-rectified',
        action='store_true',
        help='the colour topic is already rectified (image_rect): as the node parameter',
    )
    parser.add_argument('--steps', type=int, default=0, help='optimizer steps (0: the recipe)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (0: default)')
    parser.add_argument('--resume', action='store_true', help='continue a killed run')
    parser.add_argument(
        '--overwrite', action='store_true', help='start again over an existing run'
    )
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    add_overrides_argument(parser, example='--set optim.lr=2e-4')
    return parser


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Fine-tune, export and score; return the summary written to metrics.json."""
    import torch

    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.fileio import atomic_write_text
    from moa_depth_ros.model.checkpoint import read_checkpoint_metadata
    from training.config import build_data_config, load_config
    from training.data import build_dataset
    from training.data.recording import RecordingConfig, format_report
    from training.eval import evaluate_pipeline, evaluation_pipeline
    from training.export import export_checkpoint
    from training.metrics import MetricConfig, format_table
    from training.train import train

    started = time.perf_counter()
    output = pathlib.Path(args.output)
    base = pathlib.Path(args.base)
    base_meta = read_checkpoint_metadata(base)
    recording = RecordingConfig(
        bag=str(pathlib.Path(args.bag).expanduser().absolute()),
        image_topic=args.image_topic,
        depth_topic=args.depth_topic,
        info_topic=args.info_topic,
        holdout=args.holdout,
        val=args.val,
        min_depth_m=args.min_depth,
        max_depth_m=args.max_depth,
        keyframe_change=args.keyframe_change,
        input_rectified=args.input_rectified,
        progress=not args.no_progress,
    )
    overrides = [
        f'name={output.name}',
        f'out_dir={output.parent}',
        f'model.name={base_meta["model_name"]}',
        f'model.init_checkpoint={base.absolute()}',
        'data.dataset=' + json.dumps({'dataset': 'recording', 'recording': _plain(recording)}),
        *args.overrides,
    ]
    if args.steps:
        overrides.append(f'max_steps={args.steps}')
    if args.no_progress:
        overrides.append('progress=false')
    if args.threads:
        overrides.append(f'num_threads={args.threads}')
        torch.set_num_threads(args.threads)
    config = load_config(args.recipe, overrides)

    # -- the recording: read once, blocks and keyframes fixed before any training
    input_hw = (int(base_meta['input_height']), int(base_meta['input_width']))
    data_cfg = build_data_config(config.data.dataset, image_hw=input_hw)
    t0 = time.perf_counter()
    splits = ('train', 'val', 'test')
    train_set, val_set, holdout_set = (build_dataset(data_cfg, split) for split in splits)
    read_s = time.perf_counter() - t0
    report = train_set.recording.report
    for line in format_report(report).splitlines():
        _say(line)
    _say(f'read in {read_s:.1f} s')

    # -- train (the shared loop); a killed run resumes from its state file
    t0 = time.perf_counter()
    result = train(
        config,
        resume='auto' if args.resume else None,
        overwrite=args.overwrite,
        datasets=(train_set, val_set),
    )
    train_s = time.perf_counter() - t0
    _say(f'{result.steps} steps in {result.train_time_s:.1f} s -> {result.model_path}')

    # -- export, verified like every export
    onnx_path = output / 'model.onnx'
    export = export_checkpoint(result.model_path, onnx_path)
    _say(f'{onnx_path} ({export.size_bytes / 1e6:.1f} MB, verified={export.verified})')

    # -- score base and fine-tuned on the held-out block, as the node runs them
    metric_config = MetricConfig(
        min_depth_m=recording.min_depth_m, max_depth_m=recording.max_depth_m, crop='none'
    )
    scored = {}
    for name, path, backend in (
        ('base', base, 'torch'),
        ('finetuned', onnx_path, 'onnxruntime'),
    ):
        engine = load_engine(path, backend=backend, device='cpu')
        try:
            scored[name] = evaluate_pipeline(
                evaluation_pipeline(engine), holdout_set, metric_config=metric_config
            )
        finally:
            engine.close()
    means = {name: acc.means() for name, acc in scored.items()}
    worse = worse_metrics(means['base'], means['finetuned'])
    block = report['blocks']['holdout']
    header = (
        f'held-out block of {pathlib.Path(recording.bag).name}: frames {block["first"]}-'
        f'{block["stop"] - 1} ({len(holdout_set)} keyframes), through DepthPipeline: '
        f'{scored["base"].header()}'
    )
    table = format_table(
        {
            f'base ({base.name})': means['base'],
            'fine-tuned (model.onnx)': means['finetuned'],
        },
        header=header,
    )
    total_s = time.perf_counter() - started
    summary = {
        'header': header,
        'base': means['base'],
        'finetuned': means['finetuned'],
        'holdout_frames': len(holdout_set),
        'improved': not worse,
        'worse_on': worse,
        'train_steps': result.steps,
        'timings_s': {
            'read': read_s,
            'train': result.train_time_s,
            'train_total': train_s,
            'total': total_s,
        },
        'recording': report,
        'artefacts': {
            'model': str(result.model_path),
            'onnx': str(onnx_path),
            'metrics_json': str(output / 'metrics.json'),
            'metrics_txt': str(output / 'metrics.txt'),
            'recipe': str(output / 'finetune.json'),
        },
    }
    command = shlex.join([sys.executable, '-m', 'training', 'finetune', *argv])
    atomic_write_text(output / 'metrics.txt', table + '\n')
    atomic_write_text(output / 'metrics.json', json.dumps(summary, indent=2) + '\n')
    atomic_write_text(output / 'command.txt', command + '\n')
    atomic_write_text(
        output / 'finetune.json',
        json.dumps(
            {
                'command': command,
                'cwd': os.getcwd(),
                'base': str(base.absolute()),
                'base_metadata': {k: v for k, v in base_meta.items() if k != 'config_json'},
                'recipe_file': str(args.recipe),
                'config': config.to_dict(),
                'recording': report,
            },
            indent=2,
        )
        + '\n',
    )
    summary['table'] = table
    return summary


def _plain(recording) -> dict[str, Any]:
    return {f.name: getattr(recording, f.name) for f in dataclasses.fields(recording)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training finetune``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        out = run(args, argv)
    except MoaDepthError as e:
        print(f'finetune: error: {e}', file=sys.stderr)
        return 2
    print()
    print(out['table'])
    base, tuned = out['base'], out['finetuned']
    times = out['timings_s']
    print(
        f'\nheld-out d1 {base["d1"]:.3f} -> {tuned["d1"]:.3f}, AbsRel {base["abs_rel"]:.3f} -> '
        f'{tuned["abs_rel"]:.3f}, RMSE {base["rmse"]:.3f} -> {tuned["rmse"]:.3f} m; '
        f'{out["train_steps"]} steps, training {times["train"]:.0f} s, '
        f'total {times["total"]:.0f} s'
    )
    for key, path in out['artefacts'].items():
        print(f'  {key:<13} {path}')
    if out['worse_on']:
        print(
            f'finetune: the fine-tuned model is WORSE than its base on the held-out frames '
            f'({", ".join(out["worse_on"])}); it was written to {out["artefacts"]["model"]} '
            f'but is not an improvement: exit status 1',
            file=sys.stderr,
        )
        return 1
    return 0
