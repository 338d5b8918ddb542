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


def command_parser(
    prog: str, description: str, commands: Sequence[tuple[str, str, str]]
) -> argparse.ArgumentParser:
    """Build a parser with one subcommand per (name, module, help) entry of ``commands``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('--version', action='version', version=f'moa_depth_ros {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, module_name, help_text in commands:
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand; a package error is one line and exit 2."""
    args = parser.parse_args(argv)
    if getattr(args, '_run', None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except MoaDepthError as e:
        print(f'{parser.prog} {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{parser.prog} {args.command}: interrupted', file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """Build the ``moa-depth`` parser with every registered subcommand."""
    return command_parser(
        'moa-depth', 'Tools of moa_depth_ros: metric depth from one camera.', SUBCOMMANDS
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moa-depth`` console script."""
    return run_command(build_parser(), argv)


if __name__ == '__main__':
    sys.exit(main())
