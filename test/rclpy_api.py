"""rclpy's public API as names: read from a source tree (ast) or from the installed rclpy.

``python test/rclpy_api.py RCLPY_GIT_DIR BRANCH OUT.json`` writes the names the rclpy of a
branch (``humble``: rclpy 3.3) defines, from ``git show BRANCH:rclpy/rclpy/...`` of a clone
of github.com/ros2/rclpy, with the commit it came from: ``test/data/rclpy_humble_api.json``
is its output. ``test_rclpy_humble_api.py`` checks the package against it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
import subprocess
import sys


def _members(tree: ast.Module) -> tuple[list[str], dict[str, dict]]:
    """Module-level names and, per class, its bases, members and parameter names."""
    names: list[str] = []
    classes: dict[str, dict] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split('.')[0] for a in node.names]
        elif isinstance(node, ast.Try):  # try: import ... except ImportError: ...
            for inner in node.body:
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    names += [(a.asname or a.name).split('.')[0] for a in inner.names]
        if isinstance(node, ast.ClassDef):
            members: set[str] = set()
            parameters: set[str] = set()
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                    args = item.args
                    parameters.update(
                        a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]
                    )
                elif isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store):
                    if isinstance(item.value, ast.Name) and item.value.id == 'self':
                        members.add(item.attr)
            for item in node.body:
                if isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    members.update(t.id for t in targets if isinstance(t, ast.Name))
            bases = [ast.unparse(b).split('.')[-1] for b in node.bases]
            classes[node.name] = {
                'bases': bases,
                'members': sorted(members),
                'parameters': sorted(parameters),
            }
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pass
    return sorted(set(names)), classes


def from_git(repo: str, branch: str) -> dict:
    """Read the API of rclpy/rclpy/**.py at ``branch`` of the clone ``repo``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ['git', '-C', repo, *args], check=True, capture_output=True, text=True
        ).stdout

    commit = git('rev-parse', branch).strip()
    files = [
        f
        for f in git('ls-tree', '-r', '--name-only', commit, 'rclpy/rclpy/').split()
        if f.endswith('.py')
    ]
    modules: dict[str, list[str]] = {}
    classes: dict[str, dict] = {}
    functions: set[str] = set()
    for path in files:
        tree = ast.parse(git('show', f'{commit}:{path}'))
        module = path[len('rclpy/') : -len('.py')].replace('/', '.').removesuffix('.__init__')
        modules[module], module_classes = _members(tree)
        for name, info in module_classes.items():
            classes[f'{module}.{name}'] = info
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                functions.update(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
    return {
        'source': f'github.com/ros2/rclpy branch {branch}',
        'commit': commit,
        'modules': modules,
        'classes': classes,
        'parameters': sorted(functions),
    }


def main(argv: list[str]) -> int:
    repo, branch, out = argv
    text = json.dumps(from_git(repo, branch), indent=1, sort_keys=True) + '\n'
    Path(out).write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
