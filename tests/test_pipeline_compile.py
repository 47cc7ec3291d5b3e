"""What must be in the compiled pipeline: the GPU request, the blessing gate, caching off on push."""

import inspect

import pytest
import yaml

from pipelines.pipeline import PARAMETERS, compile_pipeline, finetune_pipeline


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(str(tmp_path_factory.mktemp("compiled") / "pipeline.yaml"), image="registry.example/kfp-finetune:test")
    with open(path) as f:
        return yaml.safe_load(f)


def _tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_finetune_requests_accelerator_from_pipeline_parameters(spec):
    accel = spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]["accelerator"]
    assert accel["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["accelerator_count"]["defaultValue"] == 0  # CPU unless asked
    assert inputs["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"


def test_push_runs_only_when_blessed_and_never_from_cache(spec):
    tasks = _tasks(spec)
    gate = tasks["condition-2"]["triggerPolicy"]["condition"]
    assert gate == "inputs.parameter_values['pipelinechannel--evaluate-blessed'] == true"
    push = tasks["push"]
    assert push.get("cachingOptions", {}).get("enableCache", False) is False
    assert tasks["evaluate"].get("cachingOptions", {}).get("enableCache", False) is False
    # The data under data_uri changes between scheduled runs: preprocess must always run.
    assert tasks["preprocess"].get("cachingOptions", {}).get("enableCache", False) is False
    assert tasks["finetune"]["cachingOptions"]["enableCache"] is True


def test_every_component_runs_in_the_chosen_image(spec):
    images = {name: ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    assert set(images) == {"exec-preprocess", "exec-finetune", "exec-evaluate", "exec-push", "exec-skip-push"}
    assert set(images.values()) == {"registry.example/kfp-finetune:test"}
    # The image carries kfp: nothing is pip-installed when a step starts (air-gapped clusters).
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(ex["container"]["command"])


def test_every_parameter_is_exposed_with_its_default(spec):
    exposed = spec["root"]["inputDefinitions"]["parameters"]
    assert set(exposed) == set(PARAMETERS)
    signature = inspect.signature(finetune_pipeline.pipeline_func)
    for name, (kind, default, _) in PARAMETERS.items():
        assert signature.parameters[name].annotation is kind, name
        if default is None:
            assert not exposed[name].get("isOptional", False), name
        else:
            assert signature.parameters[name].default == default, name
            assert exposed[name]["defaultValue"] == default, name
