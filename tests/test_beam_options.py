"""components.beam_options: runner detection and what a remote runner's workers are given (pure logic)."""

from __future__ import annotations

import os

import pytest

from components import beam_options as bo


@pytest.mark.parametrize("args, remote", [
    ((), False),
    (("--direct_num_workers=2",), False),
    (("--runner=DirectRunner",), False),
    (("--runner", "direct"), False),
    (("--runner=FnApiRunner",), False),
    (("--runner=PrismRunner",), False),
    (("--runner=DataflowRunner", "--project=p"), True),
    (("--runner", "FlinkRunner"), True),
    (("--runner=SparkRunner",), True),
    (("--runner=PortableRunner", "--job_endpoint=embed"), True),
    (("--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner",), True),
])
def test_a_runner_other_than_an_in_process_one_is_remote(args, remote):
    assert bo.is_remote(args) is remote


@pytest.mark.parametrize("args, name, value", [
    (("--temp_location=gs://b/t",), "temp_location", "gs://b/t"),
    (("--temp_location", "gs://b/t", "--x=1"), "temp_location", "gs://b/t"),
    (("--temp_locations=gs://b/t",), "temp_location", None),
    ((), "runner", None),
])
def test_option_value_reads_both_spellings(args, name, value):
    assert bo.option_value(args, name) == value


def test_a_remote_runner_gets_a_temp_location_under_the_pipeline_root_and_the_component_image(monkeypatch):
    monkeypatch.delenv(bo.COMPONENT_IMAGE_VARIABLE, raising=False)
    from components.image import COMPONENT_IMAGE

    out = "gs://bucket/root/run-7/preprocess-abc/examples"
    assert bo.remote_args(("--runner=DataflowRunner",), out) == (
        "--runner=DataflowRunner", "--temp_location=gs://bucket/root/run-7/preprocess-abc/beam-temp",
        f"--sdk_container_image={COMPONENT_IMAGE}",
    )
    monkeypatch.setenv(bo.COMPONENT_IMAGE_VARIABLE, "registry.example.com/kfp-finetune:9")
    given = ("--runner=FlinkRunner", "--temp_location=gs://other/tmp")
    assert bo.remote_args(given, out) == (*given, "--sdk_container_image=registry.example.com/kfp-finetune:9")
    # What the user gave is kept; an in-process runner gets nothing added.
    assert bo.remote_args((*given, "--sdk_container_image=mine:1"), out) == (*given, "--sdk_container_image=mine:1")
    assert bo.remote_args((), out) == ()


@pytest.mark.parametrize("outputs", [
    {"examples": "/tmp/outputs/examples", "transform_graph": "gs://b/t"},
    {"examples": "gs://b/e", "transform_graph": "file:///tmp/t"},
])
def test_a_local_output_with_a_remote_runner_is_refused_naming_both(outputs):
    name, path = next((k, v) for k, v in outputs.items() if not v.startswith("gs://"))
    with pytest.raises(ValueError) as e:
        bo.check_output_locations(("--runner=SparkRunner",), outputs)
    assert str(e.value).startswith(f"--runner=SparkRunner runs on remote workers that cannot write the local {name} path {path!r}")


def test_local_outputs_are_fine_for_in_process_runners_and_uris_for_any():
    bo.check_output_locations((), {"examples": "/tmp/e"})
    bo.check_output_locations(("--runner=DirectRunner",), {"examples": "/tmp/e"})
    bo.check_output_locations(("--runner=DataflowRunner",), {"examples": "gs://b/e", "statistics": "s3://b/s"})


def test_the_step_refuses_a_local_path_with_a_remote_runner_before_any_work(tmp_path):
    from components.preprocess import PreprocessSettings, run_preprocess_step

    settings = PreprocessSettings(data_uri=str(tmp_path / "no-data"), registry_uri="", image_size=32,
                                  beam_pipeline_args=("--runner=FlinkRunner", "--flink_master=localhost:8081"))
    local = str(tmp_path / "examples")
    with pytest.raises(ValueError, match=r"^--runner=FlinkRunner .* the local examples path '.*/examples'"):
        run_preprocess_step(local, "gs://b/t", "gs://b/s", None, settings)
    assert not os.path.exists(local)
