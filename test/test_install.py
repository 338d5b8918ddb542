"""Installability on the platforms the README names, without installing anything.

The robot's pip step (requirements.txt) is resolved by pip itself, from the package registry,
for the Python and CPU of each platform: Humble and JetPack 6 (Ubuntu 22.04, CPython 3.10,
x86_64 / aarch64) and Jazzy (Ubuntu 24.04, CPython 3.12). ``pip install --dry-run
--only-binary=:all:`` proves every package has a wheel there; the distribution's NumPy is
given as a constraint where it must stay. These tests need the registry (``registry``
marker): ``make test`` runs them outside the private network namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
import pytest

ROOT = Path(__file__).resolve().parents[1]
# (name, CPython, CPU, glibc, the distribution's NumPy or None when pip may choose)
PLATFORMS = [
    ('Humble, Ubuntu 22.04', '3.10', 'x86_64', '2_35', None),
    ('JetPack 6, Ubuntu 22.04', '3.10', 'aarch64', '2_35', None),
    ('Jazzy, Ubuntu 24.04', '3.12', 'x86_64', '2_39', '1.26.4'),
    ('Jazzy, Ubuntu 24.04 arm64', '3.12', 'aarch64', '2_39', '1.26.4'),
]
# What rosdep installs on a robot (package.xml): the pip step must never bring its own.
FROM_THE_DISTRIBUTION = {'opencv-python', 'opencv-python-headless', 'pyyaml', 'tqdm'}


def _platform_args(arch: str, glibc: str) -> list[str]:
    major, minor = (int(v) for v in glibc.split('_'))
    tags = [f'manylinux_{major}_{m}_{arch}' for m in range(minor, 16, -1)]
    return [arg for tag in [*tags, f'manylinux2014_{arch}'] for arg in ('--platform', tag)]


def _resolve(tmp_path, python, args, constraints=()):
    """Run pip's resolver for another platform; return {name: version} it would install."""
    report = tmp_path / 'report.json'
    constraint_file = tmp_path / 'constraints.txt'
    constraint_file.write_text(''.join(f'{c}\n' for c in constraints))
    cmd = [
        sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet',
        '--python-version', python, '--target', str(tmp_path / 'target'),
        '--report', str(report), '-c', str(constraint_file), *args,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())['install']
    return {canonicalize_name(i['metadata']['name']): i['metadata']['version'] for i in installs}


def _requirements(path: Path, python: str, arch: str) -> list[str]:
    """Return the requirements of ``path`` that apply on that Python and CPU.

    pip's --python-version picks wheels for the target but evaluates environment markers
    against the Python running it, so the markers are evaluated here, for the target.
    """
    environment = {
        'python_version': python,
        'python_full_version': f'{python}.0',
        'platform_machine': arch,
        'sys_platform': 'linux',
        'platform_system': 'Linux',
        'os_name': 'posix',
        'implementation_name': 'cpython',
        'platform_python_implementation': 'CPython',
    }
    applicable = []
    for line in path.read_text().splitlines():
        line = line.split('#')[0].strip()
        if not line:
            continue
        assert not line.startswith('-'), f'{path.name}: options are not expected here: {line}'
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            applicable.append(str(requirement))
    return applicable


@pytest.mark.registry
@pytest.mark.parametrize(
    ('platform', 'python', 'arch', 'glibc', 'numpy'), PLATFORMS, ids=[p[0] for p in PLATFORMS]
)
def test_the_robot_pip_step_resolves_to_wheels(tmp_path, platform, python, arch, glibc, numpy):
    constraints = [f'numpy=={numpy}'] if numpy else []
    requirements = _requirements(ROOT / 'requirements.txt', python, arch)
    found = _resolve(
        tmp_path,
        python,
        ['--only-binary=:all:', *_platform_args(arch, glibc), *requirements],
        constraints,
    )
    assert {'onnxruntime', 'rosbags', 'apsw', 'lz4'} <= set(found), found
    assert not FROM_THE_DISTRIBUTION & set(found), found
    # NumPy 2 cannot load the distribution's modules built against NumPy 1.
    assert Version(found['numpy']) < Version('2'), found
    if numpy:
        assert found['numpy'] == numpy  # the distribution's own, kept


AARCH64 = [p for p in PLATFORMS if p[2] == 'aarch64']


@pytest.mark.registry
@pytest.mark.parametrize(
    ('platform', 'python', 'arch', 'glibc', 'numpy'), AARCH64, ids=[p[0] for p in AARCH64]
)
def test_the_openvino_backend_resolves_to_wheels_on_arm(
    tmp_path, platform, python, arch, glibc, numpy
):
    """OpenVINO's aarch64 wheels carry its ARM CPU plugin (a Jetson's CPU, a Raspberry Pi 5)."""
    constraints = [f'numpy=={numpy}'] if numpy else []
    requirements = [
        *_requirements(ROOT / 'requirements.txt', python, arch),
        *_requirements(ROOT / 'requirements-openvino.txt', python, arch),
    ]
    found = _resolve(
        tmp_path,
        python,
        ['--only-binary=:all:', *_platform_args(arch, glibc), *requirements],
        constraints,
    )
    wanted = Requirement(_requirements(ROOT / 'requirements-openvino.txt', python, arch)[0])
    assert Version(found['openvino']) in wanted.specifier, found
    assert Version(found['numpy']) < Version('2'), found


# The TensorRT lanes: (CUDA major of the driver, TensorRT major) -> the driver it needs.
# NVIDIA's TensorRT prerequisites (docs.nvidia.com/deeplearning/tensorrt, installing-tensorrt/
# prerequisites.html, 10.x and 11.x): r535+ on Linux for the CUDA 12 wheels, r580+ for CUDA 13.
GPU_LANES = {
    ('12', '10'): 'R535',
    ('12', '11'): 'R535',
    ('13', '10'): 'R580',
    ('13', '11'): 'R580',
}


def _lane_file(cuda: str, trt: str) -> Path:
    return ROOT / f'requirements-gpu-cu{cuda}-trt{trt}.txt'


def test_each_gpu_lane_is_one_tensorrt_major_with_its_driver():
    """A TensorRT 10 file and a TensorRT 11 file per CUDA major; pip never crosses majors."""
    files = {p.name for p in ROOT.glob('requirements-gpu-*.txt')}
    lanes = {_lane_file(cuda, trt).name for cuda, trt in GPU_LANES}
    assert files == lanes | {'requirements-gpu-jetpack6.txt'}
    for (cuda, trt), driver in GPU_LANES.items():
        path = _lane_file(cuda, trt)
        wanted = {
            canonicalize_name(Requirement(line).name): Requirement(line)
            for line in _requirements(path, '3.10', 'x86_64')
        }
        tensorrt = wanted[f'tensorrt-cu{cuda}'].specifier
        major = int(trt)
        assert Version(f'{major}.99') in tensorrt and Version(f'{major + 1}.0') not in tensorrt
        assert Version(f'{major - 1}.99') not in tensorrt
        # onnx: TensorRT 11 builds FP16 from an FP16 copy of the ONNX file that onnx writes.
        assert ('onnx' in wanted) == (major == 11), path.name
        assert Version(f'{cuda}.9') in wanted['cuda-python'].specifier
        assert Version(f'{int(cuda) + 1}.0') not in wanted['cuda-python'].specifier
        assert f'{driver} or newer' in path.read_text(), path.name


@pytest.mark.registry
@pytest.mark.parametrize(('cuda', 'trt'), sorted(GPU_LANES), ids=lambda v: v)
@pytest.mark.parametrize('python', ['3.10', '3.12'])
def test_the_gpu_lanes_resolve(tmp_path, cuda, trt, python):
    wanted = {
        canonicalize_name(Requirement(line).name): Requirement(line)
        for line in _requirements(_lane_file(cuda, trt), python, 'x86_64')
    }
    wheels = [str(r) for name, r in wanted.items() if not name.startswith('tensorrt')]
    # cuda-python and onnx: wheels for this Python on a desktop.
    found = _resolve(
        tmp_path, python, ['--only-binary=:all:', *_platform_args('x86_64', '2_35'), *wheels]
    )
    for name, requirement in wanted.items():
        if not name.startswith('tensorrt'):
            assert Version(found[name]) in requirement.specifier
    # tensorrt-cuXX: a source package on PyPI that fetches NVIDIA's libraries when installed;
    # resolving it alone proves a release of this lane's major exists.
    name = f'tensorrt-cu{cuda}'
    found = _resolve(tmp_path, python, ['--no-deps', str(wanted[name])])
    assert Version(found[name]) in wanted[name].specifier
    assert Version(found[name]).major == int(trt)


@pytest.mark.registry
def test_the_jetpack_lane_resolves_to_wheels(tmp_path):
    """JetPack 6: CPython 3.10 on aarch64; TensorRT itself comes from JetPack's apt."""
    path = ROOT / 'requirements-gpu-jetpack6.txt'
    requirements = _requirements(path, '3.10', 'aarch64')
    assert [canonicalize_name(Requirement(r).name) for r in requirements] == ['cuda-python']
    found = _resolve(
        tmp_path,
        '3.10',
        ['--only-binary=:all:', *_platform_args('aarch64', '2_35'), *requirements],
    )
    assert Version(found['cuda-python']) in Requirement(requirements[0]).specifier


def test_the_runtime_package_needs_no_python_newer_than_3_10():
    # Humble and JetPack 6 run CPython 3.10; training/ and the tests may use newer Python.
    vermin = shutil.which('vermin') or str(Path(sys.executable).parent / 'vermin')
    if not Path(vermin).exists():
        pytest.skip('vermin is not installed (requirements-test.txt)')
    done = subprocess.run(
        [vermin, '--no-tips', '--violations', '--target=3.10-', '--eval-annotations',
         str(ROOT / 'moa_depth_ros'), str(ROOT / 'launch')],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
