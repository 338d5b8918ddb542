"""``python -m tools.bench COMMAND``: the development benchmarks (``make bench`` runs ``all``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from moa_depth_ros.cli import command_parser, run_command

# (name, module, one-line help); each module has configure(parser) and run(args) -> int.
COMMANDS = [
    ('all', 'tools.bench.suite', 'every benchmark, results.json/.md and the README section'),
    ('frame-stages', 'tools.bench.frame_stages', 'each per-frame stage against the memory floor'),
    ('cpu', 'tools.bench.cpu', 'CPU only: FP32 / BF16 / INT8 on OpenVINO, live at 30 Hz'),
    ('engines', 'tools.bench.engines', 'the network per backend and precision vs compute floor'),
    ('export-peer', 'tools.bench.peers', 'export a peer network for `moa-depth bench --peer`'),
]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every command."""
    return command_parser('python -m tools.bench', __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a package error prints as one line and exits 2."""
    return run_command(build_parser(), argv)


if __name__ == '__main__':
    sys.exit(main())
