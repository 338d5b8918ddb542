"""``python -m training finetune-demo`` (``make finetune-demo``): fine-tuning, shown end to end.

A team's situation, synthetic: the quickstart model (``runs/quickstart/model.safetensors``,
trained on rooms seen from 1.3-1.5 m through 40-100 degree lenses) goes onto a ground robot
whose camera sits 0.2-0.5 m above the floor behind a RealSense-like 69 degree lens, in rooms
it has never seen. The robot's RGB-D sibling records its environment
(``training.data.synthetic_rgbd``: four rooms driven through twice, depth aligned to
colour, 16UC1 millimetres with holes, quantisation and flying pixels, and the same recording
with the depth as image_transport compressedDepth). Then, in ``--out-dir``:

1. write the recordings (``rgbd_16uc1/``, ``rgbd_compressed/``) and an RGB-only drive
   through the same rooms on other paths (``rgb_only/``, what a sibling without depth records);
2. check that both depth encodings give the same training data (frames, pairs, labels);
3. ``python -m training finetune`` on the compressedDepth recording from the quickstart
   model (``finetune/``: model.safetensors, model.onnx, metrics.json / .txt);
4. ``moa-depth bag`` runs the fine-tuned model over the RGB-only drive (``rgb_only_depth/``).

Targets, on the recording's held-out block (its last 20 %, never trained on): d1 at least
0.05 above the base model's and at least 0.85; fine-tuning (the training loop) within 3
minutes on 2 CPU cores. Exit status 1 when one is missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import time
from typing import Sequence

import numpy as np

from moa_depth_ros.errors import MoaDepthError


@dataclasses.dataclass(frozen=True)
class Targets:
    """What the demonstration must show on the held-out block."""

    min_d1_gain: float = 0.05
    min_d1: float = 0.85
    max_train_s: float = 180.0


def _say(text: str) -> None:
    print(f'[finetune-demo] {text}', flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training finetune-demo',
        description='Fine-tune the quickstart model on a synthetic ground-robot RGB-D recording.',
    )
    parser.add_argument(
        '--base', default='runs/quickstart/model.safetensors', help='the model to fine-tune'
    )
    parser.add_argument('--out-dir', default='runs/finetune_demo', help='where everything goes')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def run(args: argparse.Namespace) -> int:
    """Run every step (module docstring); return the exit status."""
    from moa_depth_ros.bag import process as bag
    from moa_depth_ros.runtime import params
    from training import finetune
    from training.data.recording import RecordingConfig, load_recording
    from training.data.synthetic_rgbd import (
        COLOR_TOPIC,
        DEPTH_TOPIC,
        INFO_TOPIC,
        RobotDrive,
        write_rgbd_recording,
    )

    base = pathlib.Path(args.base)
    if not base.is_file():
        print(
            f'finetune-demo: error: no base model at {base}; make it with `make demo` '
            f'(python -m training quickstart) or pass --base',
            file=sys.stderr,
        )
        return 2
    out = pathlib.Path(args.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    drive = RobotDrive()
    started = time.perf_counter()

    # 1. the recordings
    t0 = time.perf_counter()
    rgbd = [out / 'rgbd_16uc1', out / 'rgbd_compressed']
    info = write_rgbd_recording(rgbd, ['16UC1', 'compressedDepth png'], drive)
    rgb_only = out / 'rgb_only'
    write_rgbd_recording([rgb_only], ['none'], dataclasses.replace(drive, laps=1), first_lap=2)
    _say(
        f'recorded {len(info.rooms)} rooms x {drive.laps} laps at {drive.rate_hz:g} Hz, '
        f'{drive.width}x{drive.height}, {drive.hfov_deg:g} deg lens, camera '
        + ', '.join(f'{h:.2f}' for h in info.mount_heights_m)
        + f' m above the floor: {info.colour_frames} colour / {info.depth_frames} depth frames '
        f'(16UC1 and compressedDepth) and an RGB-only drive, in {time.perf_counter() - t0:.0f} s'
    )

    # 2. both depth encodings are the same training data
    def read(path: pathlib.Path):
        config = RecordingConfig(
            bag=str(path),
            image_topic=COLOR_TOPIC,
            depth_topic=DEPTH_TOPIC,
            info_topic=INFO_TOPIC,
            progress=False,
        )
        return load_recording(config, (48, 64))

    plain, compressed = read(rgbd[0]), read(rgbd[1])
    same = all(
        len(plain.frames[b]) == len(compressed.frames[b])
        and all(
            np.array_equal(p.depth_m, c.depth_m) and p.stamp_ns == c.stamp_ns
            for p, c in zip(plain.frames[b], compressed.frames[b])
        )
        for b in plain.frames
    )
    _say(
        f'16UC1 and compressedDepth (PNG) recordings give {"identical" if same else "DIFFERENT"}'
        f' training data ({plain.report["paired"]} pairs, '
        f'{sum(len(f) for f in plain.frames.values())} keyframes)'
    )
    del plain, compressed

    # 3. fine-tune (the command a team runs)
    run_dir = out / 'finetune'
    argv = [
        '--bag',
        str(rgbd[1]),
        '--image-topic',
        COLOR_TOPIC,
        '--depth-topic',
        DEPTH_TOPIC,
        '--info-topic',
        INFO_TOPIC,
        '--base',
        str(base),
        '--output',
        str(run_dir),
        '--threads',
        str(args.threads),
        *(['--no-progress'] if args.no_progress else []),
    ]
    _say('python -m training finetune ' + ' '.join(argv))
    status = finetune.main(argv)
    if status == 2:
        return 2
    metrics = json.loads((run_dir / 'metrics.json').read_text())

    # 4. the fine-tuned model on the RGB-only sibling's drive, through moa-depth bag
    settings = params.NodeSettings.from_values(
        {
            'model_path': str((run_dir / 'model.onnx').absolute()),
            'backend': 'onnxruntime',
            'device': 'cpu',
        }
    )
    summary = bag.process_bag(
        rgb_only, out / 'rgb_only_depth', settings=settings, progress=not args.no_progress
    )
    print(bag.format_summary(summary))

    targets = Targets()
    base_d1, tuned_d1 = metrics['base']['d1'], metrics['finetuned']['d1']
    train_s = metrics['timings_s']['train']
    gain = tuned_d1 - base_d1
    processed, frames = summary['processed'], summary['frames']
    met = {
        f'held-out d1 {base_d1:.3f} -> {tuned_d1:.3f}: gain {gain:+.3f} (need >= '
        f'{targets.min_d1_gain})': gain >= targets.min_d1_gain,
        f'held-out d1 {tuned_d1:.3f} (need >= {targets.min_d1})': tuned_d1 >= targets.min_d1,
        f'fine-tuning {train_s:.0f} s (need <= {targets.max_train_s:.0f})': (
            train_s <= targets.max_train_s
        ),
        'both depth encodings read alike': same,
        f'moa-depth bag processed {processed} of {frames} RGB-only frames': processed == frames,
    }
    print()
    for text, ok in met.items():
        print(f'  {"met   " if ok else "MISSED"} {text}')
    print(f'total {time.perf_counter() - started:.0f} s; everything is in {out}')
    if not all(met.values()):
        print('finetune-demo: a target was MISSED (see above); exit status 1', file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training finetune-demo``."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MoaDepthError as e:
        print(f'finetune-demo: error: {e}', file=sys.stderr)
        return 2
