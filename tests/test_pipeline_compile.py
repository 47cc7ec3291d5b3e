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


def test_every_parameter_carries_its_help_into_the_kfp_ui(spec):
    exposed = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: p.get("description") for name, p in exposed.items()} == {name: h for name, (_, _, h) in PARAMETERS.items()}


@pytest.mark.parametrize(
    "component, settings_class, extra",
    [
        ("preprocess", "components.preprocess.PreprocessSettings", set()),
        ("finetune", "components.finetune.FinetuneSettings", set()),
        ("evaluate", "components.evaluate.EvaluateSettings", set()),
        ("push", "components.push.PushSettings", {"pipeline_run_id"}),
    ],
)
def test_component_signatures_match_their_settings_dataclasses(component, settings_class, extra):
    """The component signatures stay literal (KFP reads them); they must agree with the one
    declaration of each setting in name and type, with no parameter left over or missing."""
    import importlib

    from components import kfp_components
    from components.settings import declared

    module, _, name = settings_class.rpartition(".")
    declared_settings = declared(getattr(importlib.import_module(module), name))
    signature = inspect.signature(getattr(kfp_components, component))
    renamed = {v: k for k, v in kfp_components.RENAMED_INPUTS.items()}
    scalars = {
        renamed.get(n, n): p.annotation for n, p in signature.parameters.items()
        if p.annotation in (str, int, float, bool)
    }
    assert set(scalars) - extra == set(declared_settings), component
    for n, s in declared_settings.items():
        assert scalars[n] is s.type, n
        default = signature.parameters[kfp_components.RENAMED_INPUTS.get(n, n)].default
        assert default is inspect.Parameter.empty or default == s.default, n
    others = [p.annotation for p in signature.parameters.values() if p.annotation not in (str, int, float, bool)]
    # Everything else is an artifact (Input[...] / Output[...]), not a setting.
    assert all("InputAnnotation" in str(a) or "OutputAnnotation" in str(a) for a in others), others


def test_the_pipeline_passes_each_parameter_to_every_step_that_declares_it(spec):
    from components import kfp_components
    from components.settings import declared
    from components.evaluate import EvaluateSettings
    from components.finetune import FinetuneSettings
    from components.preprocess import PreprocessSettings
    from components.push import PushSettings

    tasks = _tasks(spec)
    for task, cls in (("preprocess", PreprocessSettings), ("finetune", FinetuneSettings), ("evaluate", EvaluateSettings), ("push", PushSettings)):
        given = tasks[task]["inputs"]["parameters"]
        for name in declared(cls):
            source = given[kfp_components.RENAMED_INPUTS.get(name, name) if task == "finetune" else name]
            assert source["componentInputParameter"] in (name, f"pipelinechannel--{name}"), (task, name)


def test_the_readme_parameter_table_is_derived_from_the_settings():
    import os

    from pipelines.pipeline import parameter_table

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    assert parameter_table(PARAMETERS) in readme, "README's parameter table is stale: paste pipelines.pipeline.parameter_table(PARAMETERS)"
