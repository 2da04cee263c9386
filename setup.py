"""ament_python package + pip project: installs semseg_core and semseg_ros, the launch and config files,
the ament resource marker and the console scripts (into lib/semseg_ros under colcon, see setup.cfg)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "semseg_ros"


def data_tree(folder, patterns):
    """(install dir, [files]) pairs that keep `folder`'s sub-folder layout under share/semseg_ros."""
    by_dir = {}
    for pattern in patterns:
        for path in glob(os.path.join(folder, "**", pattern), recursive=True):
            if os.path.isfile(path):
                target = os.path.join("share", PACKAGE_NAME, os.path.dirname(path))
                by_dir.setdefault(target, []).append(path)
    return sorted((target, sorted(files)) for target, files in by_dir.items())


setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(include=["semseg_core", "semseg_core.*", "semseg_ros", "semseg_ros.*"]),
    package_data={"semseg_core": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE_NAME]),
        ("share/" + PACKAGE_NAME, ["package.xml"]),
        ("share/" + PACKAGE_NAME + "/launch", sorted(glob("launch/*.launch.py"))),
    ]
    + data_tree("config", ["*.yaml", "*.yml", "*.xml"]),
    install_requires=["setuptools"],
    zip_safe=False,
    python_requires=">=3.10",
    maintainer="semseg_ros maintainers",
    maintainer_email="semseg_ros@example.com",
    description="Open-set instance segmentation (SemSeg) on PyTorch with a ROS 2 perception node",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "perception_node = semseg_ros.node_main:main",
            "semseg-launch = semseg_ros.launch_runner:main",
            "semseg-make-bag = semseg_ros.bag_tools.make_bag:main",
            "semseg-replay = semseg_ros.bag_tools.replay:main",
            "semseg-score-bag = semseg_ros.bag_tools.score:main",
            "semseg-demo = semseg_ros.demo:main",
            "semseg-env = semseg_ros.env:main",
        ],
    },
)
