"""The machine description sits below the engines, and imports point down the layers."""

from __future__ import annotations

import ast
import pathlib

from moa_depth_ros.engine import machine

ROOT = pathlib.Path(__file__).resolve().parents[1]

# DESIGN.md "Layers", lowest first; bag/ and bench/ are peers at the top. Top-level modules
# (errors, fileio, cli) are not layers.
LAYERS = {'frame': 0, 'model': 1, 'engine': 2, 'runtime': 3, 'bag': 4, 'bench': 4}


def _package_imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split('.')[1] for n in names if n.startswith('moa_depth_ros.'))
    return found


def test_no_layer_imports_a_layer_above_it():
    """engine/choice.py once imported bench.measure for the CPU name (issue 28)."""
    upward = []
    for layer, rank in LAYERS.items():
        for path in sorted((ROOT / 'moa_depth_ros' / layer).rglob('*.py')):
            for target in _package_imports(path):
                if LAYERS.get(target, -1) > rank:
                    upward.append(f'{path.relative_to(ROOT)} imports moa_depth_ros.{target}')
    assert not upward, upward


def test_cpu_description_reads_the_model_name_and_the_matrix_isa(tmp_path, monkeypatch):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(
        'processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n'
        'flags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n'
    )
    monkeypatch.setattr(machine.platform, 'processor', lambda: '')
    assert machine.cpu_description(str(cpuinfo)) == (
        'Intel(R) Xeon(R) Platinum 8480+',
        ['avx2', 'avx512f', 'amx_bf16'],
    )


def test_the_benchmarks_and_the_backend_choice_name_the_cpu_alike():
    from moa_depth_ros.bench import measure
    from moa_depth_ros.engine import choice

    assert measure.cpu_description is machine.cpu_description
    assert choice._cpu_name() == machine.cpu_description()[0]
