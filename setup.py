"""Install the ``moa_depth_ros`` runtime package (ament_python).

Only ``moa_depth_ros`` is installed: ``training/`` and ``test/`` stay in the repository, so a
robot gets no training dependencies. Launch and config files go to ``share/moa_depth_ros``,
console scripts to ``lib/moa_depth_ros`` (setup.cfg) where ``ros2 run`` looks for them.
"""

from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'moa_depth_ros'
here = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(here, package_name, '__init__.py'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('__version__ not found in moa_depth_ros/__init__.py')


setup(
    name=package_name,
    version=_version(),
    packages=find_packages(include=[package_name, package_name + '.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', sorted(glob('launch/*.launch.py'))),
        (
            'share/' + package_name + '/config',
            sorted(glob('config/*.yaml') + glob('config/*.rviz') + glob('config/*.xml')),
        ),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='moa_depth_ros maintainers',
    maintainer_email='maintainers@moa-depth-ros.dev',
    description='Metric depth and point clouds from one monocular camera (CLIP-based).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'moa-depth = moa_depth_ros.cli:main',
            'depth_node = moa_depth_ros.runtime.node:main',
            'managed_depth_node = moa_depth_ros.runtime.lifecycle:main',
        ],
    },
)
