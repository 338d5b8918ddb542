"""The package as ROS tooling sees it: package.xml, declared dependencies, colcon install."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

from catkin_pkg.package import parse_package
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = 'moa_depth_ros'

# Import name -> rosdep key (package.xml) for modules that have one.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy',
    'cv2': 'python3-opencv',
    'yaml': 'python3-yaml',
    'tqdm': 'python3-tqdm',
}
# Import name -> PyPI distribution (requirements*.txt) for modules without a rosdep key.
PIP_DISTS = {
    'onnxruntime': 'onnxruntime',
    'rosbags': 'rosbags',
    'torch': 'torch',
    'torchvision': 'torchvision',
    'open_clip': 'open_clip_torch',
    'safetensors': 'safetensors',
    'tensorrt': 'tensorrt-cu12',  # or tensorrt-cu13; JetPack's python3-libnvinfer on Jetson
    'cuda': 'cuda-python',
    'onnx': 'onnx',
    'openvino': 'openvino',
    'timm': 'timm',
    'tqdm': 'tqdm',
    'apsw': 'apsw',
    'lz4': 'lz4',
    'backports': 'backports.zstd',
}
# Standard library only in Pythons newer than this one (imported behind a version check).
LATER_STDLIB = {'compression'}  # compression.zstd: Python 3.14


def _package():
    return parse_package(str(ROOT / 'package.xml'))


def _requirement_names() -> set[str]:
    names = set()
    for req in ROOT.glob('requirements*.txt'):
        for line in req.read_text().splitlines():
            line = line.split('#')[0].strip()
            if not line or line.startswith('-r'):
                continue
            for sep in (';', '==', '>=', '<=', '<', '>', '~=', '['):
                line = line.split(sep)[0]
            names.add(line.strip().lower().replace('_', '-'))
    return names


def _third_party_imports(package_dir: pathlib.Path) -> dict[str, set[str]]:
    """Map each top-level imported module to the files importing it (absolute imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob('*.py')):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top in sys.stdlib_module_names or top in (PKG, '__future__', *LATER_STDLIB):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_package_xml_is_valid_format3_ament_python():
    pkg = _package()
    pkg.validate()  # raises InvalidPackage on any schema violation
    assert pkg.name == PKG
    assert pkg.package_format == 3
    assert pkg.licenses == ['Apache-2.0']
    assert pkg.get_build_type() == 'ament_python'


def test_package_xml_version_matches_python_package():
    from moa_depth_ros import __version__

    assert _package().version == __version__


def test_every_third_party_import_is_declared():
    pkg = _package()
    exec_deps = {d.name for d in pkg.exec_depends + pkg.build_export_depends}
    requirements = _requirement_names()
    undeclared = []
    for module, files in _third_party_imports(ROOT / PKG).items():
        if module in exec_deps:
            continue  # a ROS package (rclpy, sensor_msgs, launch_ros, ...)
        if ROSDEP_KEYS.get(module) in exec_deps:
            continue
        dist = PIP_DISTS.get(module)
        if dist is not None and dist.replace('_', '-') in requirements:
            continue
        undeclared.append(f'{module} (imported by {", ".join(sorted(files))})')
    assert not undeclared, 'undeclared third-party imports: ' + '; '.join(undeclared)


def test_training_tools_and_tests_are_not_installed():
    from setuptools import find_packages

    namespace = {}
    source = (ROOT / 'setup.py').read_text()
    assert "find_packages(include=[package_name, package_name + '.*'])" in source
    packages = find_packages(where=str(ROOT), include=[PKG, PKG + '.*'])
    assert PKG in packages
    assert not [p for p in packages if p.startswith(('training', 'tools', 'test'))], namespace


def test_the_installed_package_never_imports_the_repository_tools():
    """What a robot installs runs without ``training/`` and ``tools/`` (exporters, benchmarks)."""
    offending = []
    for path in sorted((ROOT / PKG).rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offending += [
                f'{path.relative_to(ROOT)}: {name}'
                for name in names
                if name.split('.')[0] in ('training', 'tools', 'test')
            ]
    assert not offending


@pytest.mark.slow
def test_colcon_build_install_layout(tmp_path):
    """A real `colcon build` of the ament_python package puts files where ROS looks."""
    colcon = pathlib.Path(sys.executable).with_name('colcon')
    if not colcon.exists():
        colcon = shutil.which('colcon')
    assert colcon, 'colcon-common-extensions is a test requirement (requirements-test.txt)'
    src = tmp_path / 'ws' / 'src' / PKG
    src.mkdir(parents=True)
    for name in ('package.xml', 'setup.py', 'setup.cfg', 'README.md'):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    for name in ('resource', 'launch', 'config', PKG):
        if not (ROOT / name).is_dir():
            continue
        shutil.copytree(
            ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc')
        )
    ws = tmp_path / 'ws'
    result = subprocess.run(
        [str(colcon), 'build', '--event-handlers', 'console_direct+'],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    prefix = ws / 'install' / PKG
    share = prefix / 'share' / PKG
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PKG).is_file()
    for sub in ('launch', 'config'):
        source_dir = ROOT / sub
        expected = (
            {p.name for p in source_dir.iterdir() if p.is_file()} if source_dir.is_dir() else set()
        )
        installed = {p.name for p in (share / sub).iterdir()} if (share / sub).exists() else set()
        assert expected <= installed, f'{sub}/ not fully installed: missing {expected - installed}'

    # `ros2 run moa_depth_ros <exe>` looks in lib/<package>/ for executables.
    scripts = {p.name for p in (prefix / 'lib' / PKG).iterdir()}
    source = (ROOT / 'setup.py').read_text()
    declared = [
        line.split('=')[0].strip().strip('\'"')
        for line in source.splitlines()
        if ' = moa_depth_ros.' in line
    ]
    assert declared, 'no console scripts declared in setup.py'
    assert set(declared) <= scripts, f'console scripts missing from lib/{PKG}: {declared}'

    site = list(prefix.glob('lib/python3*/site-packages'))
    assert site, 'no site-packages in the install prefix'
    installed_pkgs = {p.name for p in site[0].iterdir()}
    assert PKG in installed_pkgs
    assert not {'training', 'tools', 'test'} & installed_pkgs

    # The installed console script runs from the install prefix.
    env_path = str(site[0])
    run = subprocess.run(
        [sys.executable, str(prefix / 'lib' / PKG / 'moa-depth'), '--version'],
        capture_output=True,
        text=True,
        env={'PYTHONPATH': env_path, 'PATH': '/usr/bin:/bin'},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert 'moa_depth_ros' in run.stdout


def test_the_licence_file_is_the_apache_2_text_package_xml_and_setup_py_name():
    # bloom and ament_copyright look for the licence text itself, not only the SPDX name.
    text = (ROOT / 'LICENSE').read_text()
    assert text.lstrip().startswith('Apache License\n') and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text
    assert [str(lic) for lic in _package().licenses] == ['Apache-2.0']
    assert "license='Apache-2.0'" in (ROOT / 'setup.py').read_text()
