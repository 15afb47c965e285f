"""Packaging for purerun: three runtime dependencies, test tools in the "test" extra
(joblib there only tests purerun.util.joblib; purerun never needs it)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="purerun",
    version="0.1.0",
    description="A Ray-compatible task and actor runtime in pure Python",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(
        exclude=["tests", "tests.*", "benchmarks", "benchmarks.*", "examples", "examples.*"]
    ),
    python_requires=">=3.9",
    install_requires=["cloudpickle", "psutil", "sortedcontainers"],
    extras_require={
        "test": ["pytest", "pytest-timeout", "pytest-benchmark", "numpy", "hypothesis", "tqdm",
                 "joblib", "pytest-xdist"],
    },
    # The pytest plugin (purerun/pytest_plugin.py): the cluster fixtures in every test run.
    entry_points={"console_scripts": ["purerun=purerun.cli:main"],
                  "pytest11": ["purerun = purerun.pytest_plugin"]},
    classifiers=["Programming Language :: Python :: 3"],
)
