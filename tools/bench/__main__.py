"""``python -m tools.bench COMMAND``: the development benchmarks (``make bench`` runs ``all``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from moa_depth_ros.errors import MoaDepthError

# (name, module, one-line help); each module has configure(parser) and run(args) -> int.
COMMANDS = [
    ('all', 'tools.bench.suite', 'every benchmark, results.json/.md and the README section'),
    ('frame-stages', 'tools.bench.frame_stages', 'each per-frame stage against the memory floor'),
    ('engines', 'tools.bench.engines', 'the network per backend and precision vs compute floor'),
]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every command."""
    parser = argparse.ArgumentParser(prog='python -m tools.bench', description=__doc__)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a package error prints as one line and exits 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MoaDepthError as e:
        print(f'python -m tools.bench {args.command}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
