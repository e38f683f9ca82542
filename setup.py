"""tfgb: TensorFlow/Keras group-buying recommendation (MGBR, MAMGBR, baselines)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tfgb",
    version="0.1.0",
    description="Group-buying recommendation with TensorFlow: MGBR, MAMGBR and baselines",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfgb", "tfgb.*"]),
    install_requires=[
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-recommenders==0.7.7",
        "keras-tuner==1.4.8",
        "scikit-learn==1.9.1",  # KerasTuner's Bayesian optimisation (--tuner bayesian); the SVD of tfgb.data.scenarios
        "tensorboard==2.21.0",
        "numpy>=1.26,<3",
        "pandas>=2.2,<4",
        "pyarrow>=15",
        "tqdm>=4.66",
        "tomli-w>=1.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        # the tests drive the local REST server too, so they need the serve extra's packages
        "test": ["pytest>=8", "pytest-xdist==3.8.0", "ruff>=0.5", "requests>=2.31", "waitress==3.0.2"],
        "serve": ["waitress==3.0.2", "tensorflow-serving-api==2.21.0"],
    },
)
