"""A small compiled pipeline standing in for the real one in the CLI and KFP client tests.

``package`` is a pytest fixture (import it into a test module): the path of this pipeline
compiled to KFP IR YAML. ``TINY_PARAMETERS`` describes it in the shape of
``pipelines.pipeline.PARAMETERS``, for tests that stand in for the installed pipeline.
"""

# No "from __future__ import annotations" here: kfp 2.17.3 reads component signatures from
# real annotation objects and rejects the strings that import would leave
# ("Artifacts must have both a schema_title and a schema_version").
import pytest
from kfp import compiler, dsl

TINY_NAME = "tiny-finetune"

# name -> (type, default or None when required, help), as pipelines.pipeline.PARAMETERS.
TINY_PARAMETERS = {
    "data_uri": (str, None, "images"),
    "epochs": (int, 2, "epochs"),
    "learning_rate": (float, 0.01, "learning rate"),
    "accelerator_type": (str, "nvidia.com/gpu", "accelerator resource"),
    "accelerator_count": (int, 1, "accelerators"),
    "unfreeze": (bool, False, "unfreeze the base"),
    "class_names": (list, [], "class names"),
}


@dsl.component(base_image="python:3.11-slim")
def _train(data_uri: str, epochs: int, learning_rate: float) -> float:
    return learning_rate * epochs


@dsl.pipeline(name=TINY_NAME, description="stand-in for finetune_pipeline")
def tiny_pipeline(
    data_uri: str,
    epochs: int = 2,
    learning_rate: float = 0.01,
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    unfreeze: bool = False,
    class_names: list = [],  # noqa: B006 - KFP needs a literal default
):
    task = _train(data_uri=data_uri, epochs=epochs, learning_rate=learning_rate)
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)


def compile_tiny(package_path: str) -> str:
    """Compiles :func:`tiny_pipeline` to ``package_path`` (KFP IR YAML) and returns the path."""
    compiler.Compiler().compile(tiny_pipeline, package_path)
    return package_path


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compile_tiny(str(tmp_path_factory.mktemp("pkg") / "tiny.yaml"))
