"""The package calls only rclpy API that Humble (rclpy 3.3) has, or detects it first.

No Humble rclpy installs here (its wheels are not on PyPI), so its API comes from its source:
``test/data/rclpy_humble_api.json``, every module, class member and parameter name of
github.com/ros2/rclpy at branch humble (the commit is recorded in the file; regenerate with
``python test/rclpy_api.py <rclpy clone> humble test/data/rclpy_humble_api.json``).

The names that the installed rclpy (Jazzy, Kilted) has and Humble's lacks are the risk:
``Subscription.get_publisher_count`` (rclpy 4.0), ``matched=`` event callbacks (4.0),
``add_post_set_parameters_callback`` (3.7 / Iron), ``rclpy.event_handler`` (Iron). The check
fails when the package's code names one of them directly: as an attribute, a keyword
argument, or an import outside ``try: ... except ImportError``. Feature detection goes
through strings (``getattr(obj, 'name', None)``, ``inspect.signature(...).parameters``,
a ``**{'name': ...}`` dict), which the check leaves alone because that is the fallback.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path
import pkgutil
import warnings

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Humble names its C extension defines, which its Python source only re-exports:
# rclpy/clock.py `ClockType = _rclpy.ClockType` (rcl's clock types).
HUMBLE_C_EXTENSION = {'ROS_TIME', 'SYSTEM_TIME', 'STEADY_TIME'}
HUMBLE = json.loads((ROOT / 'test' / 'data' / 'rclpy_humble_api.json').read_text())


def _humble_names() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    for module_names in HUMBLE['modules'].values():
        names.update(module_names)
    for info in HUMBLE['classes'].values():
        names.update(info['members'])
    names.update(module.split('.')[-1] for module in HUMBLE['modules'])
    return names, set(HUMBLE['parameters'])


def _python_owned(value: object) -> bool:
    """Tell whether rclpy's Python code defines it (the C extension is not in the data)."""
    module = getattr(value, '__module__', '') or ''
    return module.startswith('rclpy') and 'pybind' not in module


def _installed_names() -> tuple[set[str], set[str]]:
    """Public class member and parameter names the installed rclpy's Python code defines."""
    rclpy = pytest.importorskip('rclpy')
    names: set[str] = set()
    parameters: set[str] = set()
    for info in pkgutil.walk_packages(rclpy.__path__, 'rclpy.'):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # rclpy.qos_event: deprecated alias
                module = importlib.import_module(info.name)
        except Exception:  # an optional part of rclpy that does not import here
            continue
        for value in vars(module).values():
            if not _python_owned(value):
                continue
            functions = [value]
            if inspect.isclass(value):
                for cls in value.__mro__:
                    if _python_owned(cls):
                        names.update(vars(cls))
                        functions += list(vars(cls).values())
            for function in functions:
                function = getattr(function, '__func__', function)
                function = getattr(function, 'fget', function)
                if not inspect.isfunction(function) or not _python_owned(function):
                    continue
                parameters.update(inspect.signature(function).parameters)
    public = {n for n in names if not n.startswith('_')}
    return public, {p for p in parameters if not p.startswith('_')}


def _guarded_imports(tree: ast.Module) -> set[int]:
    """Line numbers of imports inside ``try`` blocks that catch ImportError."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = [ast.unparse(h.type) if h.type else '' for h in node.handlers]
        if any('ImportError' in c or 'ModuleNotFoundError' in c for c in catches):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    lines.add(inner.lineno)
    return lines


def _rclpy_modules() -> list[Path]:
    return sorted(
        path
        for path in (ROOT / 'moa_depth_ros').rglob('*.py')
        if 'rclpy' in path.read_text(encoding='utf-8')
    )


def newer_than_humble(paths: list[Path]) -> list[str]:
    """Every direct use of an rclpy name Humble lacks, as 'file:line: what'."""
    humble_names, humble_parameters = _humble_names()
    installed_names, installed_parameters = _installed_names()
    newer_names = installed_names - humble_names - HUMBLE_C_EXTENSION
    # A keyword may also name an attribute a **kwargs constructor sets (QoSProfile(depth=)).
    newer_parameters = installed_parameters - humble_parameters - humble_names
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding='utf-8'))
        guarded = _guarded_imports(tree)
        # `importlib.metadata.version`: an attribute of another library, not of rclpy.
        other_modules = {
            (alias.asname or alias.name).split('.')[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if not alias.name.startswith('rclpy')
        }
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in newer_names:
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if not (isinstance(root, ast.Name) and root.id in other_modules):
                    found.append(f'{where}:{node.lineno}: .{node.attr}')
            elif isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg in newer_parameters:
                        found.append(f'{where}:{node.lineno}: {keyword.arg}=')
            elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('rclpy'):
                if node.lineno in guarded:
                    continue
                module = HUMBLE['modules'].get(node.module)
                if module is None:
                    found.append(f'{where}:{node.lineno}: module {node.module}')
                    continue
                for alias in node.names:
                    if (
                        alias.name not in module
                        and f'{node.module}.{alias.name}' not in (HUMBLE['modules'])
                    ):
                        found.append(f'{where}:{node.lineno}: {node.module}.{alias.name}')
    return found


def test_the_humble_api_data_names_its_source_and_knows_what_humble_lacks():
    assert (
        HUMBLE['source'] == 'github.com/ros2/rclpy branch humble' and len(HUMBLE['commit']) == 40
    )
    subscription = HUMBLE['classes']['rclpy.subscription.Subscription']['members']
    assert 'get_publisher_count' not in subscription and 'topic_name' in subscription
    assert (
        'add_post_set_parameters_callback' not in HUMBLE['classes']['rclpy.node.Node']['members']
    )
    assert 'matched' not in HUMBLE['parameters']
    assert 'rclpy.event_handler' not in HUMBLE['modules']
    # ... and what it has, which the node uses without a fallback.
    assert 'LifecycleNode' in HUMBLE['modules']['rclpy.lifecycle']
    assert 'QoSOverridingOptions' in HUMBLE['modules']['rclpy.qos_overriding_options']
    assert 'clock' in HUMBLE['parameters']  # create_timer(clock=...)


def test_the_package_names_no_rclpy_api_that_humble_lacks():
    paths = _rclpy_modules()
    assert any(p.name == 'node.py' for p in paths) and any(p.name == 'live.py' for p in paths)
    assert newer_than_humble(paths) == []


def test_the_check_finds_a_call_humble_lacks(tmp_path):
    # What bench/live.py did before its fallback, and an undetected matched event.
    code = tmp_path / 'uses_newer.py'
    code.write_text(
        'import rclpy\n'
        'from rclpy.event_handler import SubscriptionEventCallbacks\n'
        'def ready(subscription, node):\n'
        '    node.add_post_set_parameters_callback(print)\n'
        '    SubscriptionEventCallbacks(matched=print)\n'
        '    return subscription.get_publisher_count() > 0\n'
    )
    found = [line.split(': ', 1)[1] for line in newer_than_humble([code])]
    assert sorted(found) == sorted(
        [
            'module rclpy.event_handler',
            '.add_post_set_parameters_callback',
            'matched=',
            '.get_publisher_count',
        ]
    )
