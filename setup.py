"""Installation script for mricore_nnunet."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="mricore_nnunet",
    version="0.1.0",
    description="The MRI-CORE foundation-model encoder inside nnU-Net v2, for segmentation with few labelled MRI scans",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["mricore_nnunet", "mricore_nnunet.*"]),
    package_data={"mricore_nnunet": ["demo_data/**/*"]},
    include_package_data=True,
    install_requires=[
        # timm imports torchvision, so torch and torchvision must come as a matching pair.
        "torch==2.14.1",
        "torchvision==0.29.1",
        # dynamic-network-architectures 0.4.4 (required by nnunetv2) needs timm below 1.0.23.
        "timm==1.0.22",
        "nnunetv2==2.8.1",
        "dynamic-network-architectures",
        "batchgenerators",
        "SimpleITK",
        "numpy",
        "scipy",
        "pandas",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "segment_anything==1.0"],
    },
    entry_points={"console_scripts": ["mricore_nnunet = mricore_nnunet.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
