#!/usr/bin/env python
"""Installs the `ezsd` package (projects/EZSD/ezsd) as a detectron2 plugin.

Runtime dependencies are pinned in requirements.txt and installed by `make`; detectron2 itself has
no PyPI release, so it is not listed here (see README, "Installation").
"""

from setuptools import find_packages, setup

setup(
    name="ezsd",
    version="0.1.0",
    description="EZSD: efficient feature distillation for zero-shot detection, for Detectron2",
    package_dir={"": "projects/EZSD"},
    packages=find_packages("projects/EZSD"),
    python_requires=">=3.9",
    install_requires=["numpy", "pillow", "tqdm", "pycocotools", "fvcore"],
)
