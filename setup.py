"""recsys-pipelines: the `recsys` package (data, protocols, metrics, models) and its Metaflow flows.

torch is declared loosely on purpose: install the build you want first (the README shows the
CPU wheel and the CUDA one); a bare `pip install -e .` into an env without torch would otherwise
pull the multi-GB CUDA build.
"""

from setuptools import find_packages, setup

setup(
    name="recsys-pipelines",
    version="0.1.0",
    description="Reproducible recommender research pipelines: MultVAE, EASE, LOCA, LFT/EnLFT, "
    "TALL, POSIT, MELO, BaM on one data layer, one protocol library and Metaflow flows.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recsys", "recsys.*"]),
    package_data={"recsys.data": ["embedded/*.gz", "embedded/*.md"]},
    include_package_data=True,
    install_requires=[
        "metaflow>=2.13",  # Config (params YAML driving decorators) needs 2.13
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "recsys-metrics==0.0.4",  # the metric tests pin this release's conventions as their oracle
        "papermill>=2.5",
        "ipykernel>=6",
        "pyyaml>=6",
        "matplotlib>=3.7",
    ],
    extras_require={
        # flows/ddp_flow.py: @torchrun steps (data-parallel training over several machines)
        "distributed": ["metaflow-torchrun==0.2.2"],
        "dev": [
            "pytest>=8",
            "metaflow-torchrun==0.2.2",
            "nbformat>=5",
            "pydantic>=2",  # the configs' JSON schemas -> docs/configs.md (recsys.models.schema)
            "statsmodels>=0.14",  # independent oracle of the significance tests (Holm, t intervals)
            # tests/deploy: Metaflow deploys to a local moto server (S3, Batch, Step Functions);
            # boto3 >= 1.34 honours AWS_ENDPOINT_URL; Argo templates need the kubernetes client.
            # kubernetes 37.0.2 wants python-dateutil>=3, botocore <3: without the cap pip
            # backtracks through hundreds of botocore releases. Tested: moto 5.2.5, kubernetes 37.0.1.
            "boto3>=1.34",
            "moto[server]>=5.1",
            "kubernetes>=30,<37.0.2",
        ],
    },
    license="Apache-2.0",
)
