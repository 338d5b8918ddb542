"""``python -m training <command>``: the offline tools (train, eval, export, build-engine, ...).

Each command module exposes ``main(argv) -> int``; it is imported only when chosen, so one
command's dependencies (TensorRT, h5py, ...) never break another.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# command -> (module, one-line help). A module is listed only once it exists.
COMMANDS: dict[str, tuple[str, str]] = {
    'train': ('training.train', 'train a depth model from a YAML recipe (torchrun for DDP)'),
    'eval': ('training.eval', "score a checkpoint or exported model: the papers' metrics table"),
    'quickstart': ('training.quickstart', 'the demo: train, evaluate, export, run a bag (CPU)'),
    'finetune': (
        'training.finetune',
        "fine-tune on a robot's own RGB-D rosbag2 recording (held-out metrics, ONNX)",
    ),
    'finetune-demo': (
        'training.finetune_demo',
        'the fine-tuning demo: a synthetic ground-robot RGB-D recording (CPU)',
    ),
    'export': ('training.export', 'checkpoint -> verified ONNX (opset 17, metadata embedded)'),
    'build-engine': ('training.build_engine', 'ONNX -> TensorRT engine + sidecar (on the GPU)'),
    'synthetic-bag': ('training.data.synthetic_bag', 'write a synthetic camera rosbag2'),
    'convert-space-clip': (
        'training.convert_space_clip',
        "official SPACE-CLIP checkpoint -> this package's safetensors (weights-only load)",
    ),
}


def _usage() -> str:
    lines = ['usage: python -m training <command> [options]', '', 'commands:']
    for name, (_, help_text) in COMMANDS.items():
        lines.append(f'  {name:<14} {help_text}')
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command module's ``main(argv)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f'unknown command {command!r}\n\n{_usage()}', file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == '__main__':
    sys.exit(main())
