"""``moa-depth``: the package's command line (model info, bag processing, timing a model).

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
they import their heavy dependencies inside ``run`` so ``moa-depth --help`` stays instant.
Errors of this package print as one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from moa_depth_ros import __version__
from moa_depth_ros.errors import MoaDepthError

# (name, module, one-line help). A module is listed here only once it exists.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ('info', 'moa_depth_ros.engine.info', 'show what a model file is, its metadata and backend'),
    ('bag', 'moa_depth_ros.bag.process', 'run the depth pipeline over a rosbag2, write a new bag'),
    ('bench', 'moa_depth_ros.bench.command', 'time a model file here as the node runs it'),
]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog='moa-depth',
        description='Offline tools of moa_depth_ros: metric depth from one camera.',
    )
    parser.add_argument('--version', action='version', version=f'moa_depth_ros {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, module_name, help_text in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moa-depth`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, '_run', None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except MoaDepthError as e:
        print(f'moa-depth {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'moa-depth {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
