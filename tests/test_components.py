"""The KFP component bodies, run through ``.python_func`` on real artifacts (``tmp_path``
folders), as KFP runs them: what each reads, writes and logs. The finetune and evaluate bodies
are exercised by the session fixtures and tests/test_evaluate.py."""

import json
import os

import pytest

from components.kfp_components import build_components


def test_preprocess_component_records_the_dataset_on_its_examples_artifact(preprocessed):
    stats = preprocessed["stats"]
    assert preprocessed["examples_metadata"] == {
        "num_images": stats["num_images"], "classes": ["5", "6", "7", "8", "9"], "fingerprint": stats["fingerprint"],
    }
    assert stats["num_images"] == 200  # 40 per class
    with open(preprocessed["report"]) as f:
        report = f.read()
    assert "| 5 |" in report and "| 9 |" in report


def test_a_failing_component_reports_its_step_and_error(tmp_path, monkeypatch):
    from kfp.dsl import Artifact, Dataset, Markdown

    from components.step_errors import ERROR_FILE_ENV, read_errors

    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "errors.jsonl"))
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        build_components().preprocess.python_func(
            data_uri=str(tmp_path), registry_uri="", model_name="m", target_env="dev", image_size=32,
            eval_fraction=1.5, test_fraction=0.15, split_salt="", max_bad_fraction=0.01, min_images_per_class=5,
            beam_pipeline_args="", base_model="mobilenet_v2", examples=Dataset(uri=str(tmp_path / "e")),
            transform_graph=Artifact(uri=str(tmp_path / "t")), statistics=Artifact(uri=str(tmp_path / "s")),
            statistics_report=Markdown(uri=str(tmp_path / "r.md")),
        )
    [error] = read_errors(str(tmp_path / "errors.jsonl"))
    assert error["step"] == "preprocess" and "eval_fraction must be in [0, 1), got 1.5" in error["error"]


def test_push_component_publishes_a_blessed_model_with_its_evaluation_and_statistics(trained_model, preprocessed, tmp_path):
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

    from components import registry

    model_dir, summary = trained_model
    c = build_components()
    evaluation = Artifact(uri=str(tmp_path / "evaluation.json"))
    out = c.evaluate.python_func(
        examples=Dataset(uri=preprocessed["examples"]), model=Model(uri=model_dir), registry_uri="", model_name="digits",
        target_env="dev", min_accuracy=0.0, champion_tolerance=0.0, allow_label_change=False,
        metrics=Metrics(uri=str(tmp_path / "m")), confusion_matrix=ClassificationMetrics(uri=str(tmp_path / "cm")),
        report=Markdown(uri=str(tmp_path / "report.md")), evaluation=evaluation,
        report_html=HTML(uri=str(tmp_path / "report.html")),
    )
    assert out.blessed is True
    # Learning curves, confusion matrix, reliability diagram, per class; no champion yet.
    page = (tmp_path / "report.html").read_text()
    assert [c for c in ("learning-curves", "confusion-matrix", "reliability", "per-class", "champion")
            if f'data-chart="{c}"' in page] == ["learning-curves", "confusion-matrix", "reliability", "per-class"]
    reg_uri = str(tmp_path / "registry")
    pushed = json.loads(c.push.python_func(
        model=Model(uri=model_dir), evaluation=evaluation, statistics=Artifact(uri=preprocessed["statistics"]),
        registry_uri=reg_uri, model_name="digits", target_env="dev", data_uri="/data/digits", pipeline_run_id="run-1",
    ))
    assert pushed == {"model": "digits", "version": 1, "uri": pushed["uri"], "alias": "dev"}
    reg = registry.open_registry(reg_uri)
    assert reg.get_alias("digits", "dev") == 1
    meta = reg.get_metadata("digits", 1)
    assert meta["dataset"]["data_uri"] == "/data/digits" and meta["pipeline_run_id"] == "run-1"
    assert meta["dataset"]["fingerprint"] == preprocessed["stats"]["fingerprint"]
    assert meta["metrics"]["accuracy"] == pytest.approx(out.accuracy) and meta["labels"] == summary["labels"]
    assert os.path.isfile(os.path.join(pushed["uri"], "saved_model.pb")) or pushed["uri"].startswith("gs://")


def test_finetune_component_logs_the_final_metrics_and_writes_the_report(finetune_component_run):
    run = finetune_component_run
    history = run["summary"]["history"]
    assert run["metrics"] == {f"final_{name}": values[-1] for name, values in history.items()}
    assert run["model_metadata"] == {"labels": ["5", "6", "7", "8", "9"], "image_size": 32, "base_model": "mobilenet_v2"}
    with open(run["report"]) as f:
        assert f.read().count("| head |") == 4
    with open(run["html"]) as f:
        page = f.read()
    assert page.count("<svg ") == 1 and 'data-chart="learning-curves"' in page and page.count("<td>head</td>") == 4
    with open(os.path.join(run["model_dir"], "training.html")) as f:
        assert f.read() == page
