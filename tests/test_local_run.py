"""End to end: the compiled pipeline through kfp.local on real digits images, then predict."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipelines.cli import main

# Set from measurement (see the README's "Numbers" section): with the test backbone (10
# pretraining epochs) and 10 head epochs, test accuracy on digits 5-9 measured 0.__; a
# random frozen base scores about 0.2 (chance), so this floor proves the transfer works.
ACCURACY_FLOOR = 0.35


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir, backbone_weights):
    """``kfp-finetune run-local`` as a user runs it, in a child process whose whole output (the
    steps' streamed logs included) is kept in ``run.log``."""
    from components.step_logging import LOG_LEVEL_ENV

    work = tmp_path_factory.mktemp("run-local")
    summary_path = str(work / "summary.json")
    environment = {k: v for k, v in os.environ.items() if k != LOG_LEVEL_ENV}  # the default levels are tested
    with open(work / "run.log", "wb") as log:
        proc = subprocess.run([sys.executable, "-m", "pipelines", *_run_local_args(work, digits_dir, backbone_weights, summary_path)],
                              stdout=log, stderr=subprocess.STDOUT, env=environment, timeout=1800)
    assert proc.returncode == 0, (work / "run.log").read_text()[-4000:]
    with open(summary_path) as f:
        return work, json.load(f)


def _run_local_args(work, digits_dir, backbone_weights, summary_path):
    return [
        "run-local",
        "--data-uri", digits_dir,
        "--registry-uri", str(work / "registry"),
        "--pipeline-root", str(work / "root"),
        "--model-name", "digits",
        "--base-model", "mobilenet_v2",
        "--width-multiplier", "0.35",
        "--image-size", "32",
        "--base-weights", backbone_weights[0],
        "--epochs", "10",
        "--min-accuracy", "0.3",
        "--summary", summary_path,
    ]


@pytest.mark.slow
def test_pipeline_fine_tunes_evaluates_and_pushes(run):
    work, summary = run
    assert summary["status"] == "succeeded"
    assert summary["metrics"]["accuracy"] >= ACCURACY_FLOOR
    assert 0.0 < summary["metrics"]["macro_f1"] <= summary["metrics"]["accuracy"] + 0.1
    assert summary["blessed"] is True
    assert summary["pushed"]["model"] == "digits" and summary["pushed"]["version"] == 1
    version_dir = os.path.join(str(work / "registry"), "digits", "1")
    assert summary["pushed"]["uri"] == version_dir
    with open(os.path.join(version_dir, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["version"] == 1 and meta["model"] == "digits"
    assert meta["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert meta["base_model"] == "mobilenet_v2" and meta["base_weights"].endswith(".weights.h5")
    assert len(meta["dataset"]["fingerprint"]) == 64
    assert meta["hyperparameters"]["epochs"] == 10
    assert meta["pipeline_run_id"]
    with open(os.path.join(str(work / "registry"), "digits", "aliases", "dev.json")) as f:
        alias = json.load(f)
    assert alias["version"] == 1 and summary["not_pushed"] is None
    # The push went through the gate: compared with the champion the evaluation saw (none yet).
    [move] = alias["history"]
    assert (move["gated"], move["compared_with"], move["previous_version"]) == (True, None, None)
    # The HTML reports, copied as .html next to the run's outputs and named in the summary.
    assert summary["reports"] == {name: os.path.join(summary["run_dir"], f"{name}.html") for name in ("evaluation", "training")}
    with open(summary["reports"]["evaluation"]) as f:
        charts = re.findall(r'<svg data-chart="([a-z-]+)"', f.read())
    assert charts == ["learning-curves", "confusion-matrix", "reliability", "per-class"]  # no champion before v1


@pytest.mark.slow
def test_a_healthy_cpu_run_logs_no_error_level_line_and_says_what_each_step_did(run):
    work, summary = run
    log = (work / "run.log").read_text()
    from components.step_logging import NATIVE_LINE

    error_level = [line for line in log.splitlines()
                   if (m := NATIVE_LINE.match(line.strip())) and m[1] in "EF"
                   or re.match(r"\s*(ERROR[: ]|CRITICAL[: ]|Traceback)|.*\[KFP Executor [^\]]* (ERROR|CRITICAL)\]", line)]
    assert error_level == []
    # Neither the CUDA probe of a CPU machine nor TensorFlow's start-up notes reach the log.
    for noise in ("cuInit", "oneDNN custom operations", "Could not find cuda drivers", "absl::InitializeLog"):
        assert noise not in log
    assert re.search(r"preprocess: \d+ usable images of 5 classes \(train \d+, eval \d+, test \d+\); 0 skipped \(\d+\.\d s\)", log)
    assert re.search(r"finetune: head epoch 10/10: loss \d\.\d{4} accuracy \d\.\d{4} eval_loss \d\.\d{4} "
                     r"eval_accuracy \d\.\d{4} lr 0\.001 \(\d+\.\d s, \d+ images/s\)", log)
    assert re.search(r"evaluate: accuracy \d\.\d{4}, macro F1 \d\.\d{4} on \d+ test images; blessed: .* \(\d+\.\d s\)", log)
    assert "push: model 'digits' version 1 at " in log
    assert f"evaluation report (charts, opens in a browser): {summary['reports']['evaluation']}" in log


@pytest.mark.slow
def test_predict_agrees_with_evaluate_on_the_test_split(run, capsys):
    work, summary = run
    manifests = [os.path.join(d, f) for d, _, fs in os.walk(summary["run_dir"]) for f in fs if f == "manifest.jsonl"]
    assert len(manifests) == 1
    with open(manifests[0]) as f:
        test_rows = [r for r in map(json.loads, f) if r.get("split") == "test"]
    capsys.readouterr()
    code = main(["predict", "--registry-uri", str(work / "registry"), "--model", "digits", "--alias", "dev"]
                + [r["uri"] for r in test_rows])
    assert code == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["file"] for p in predictions] == [r["uri"] for r in test_rows]
    accuracy = np.mean([p["label"] == r["label"] for p, r in zip(predictions, test_rows)])
    assert accuracy == pytest.approx(summary["metrics"]["accuracy"], abs=1e-9)
    with open(os.path.join(summary["pushed"]["uri"], "evaluation.json")) as f:
        evaluation = json.load(f)
    classes = evaluation["class_names"]
    matrix = np.zeros((len(classes), len(classes)), int)
    for p, r in zip(predictions, test_rows):
        matrix[classes.index(r["label"]), classes.index(p["label"])] += 1
    assert matrix.tolist() == evaluation["metrics"]["confusion_matrix"]


@pytest.mark.slow
def test_predict_in_its_own_process_logs_no_tensorflow_start_up_line(run):
    """Regression (new-user review, 2026-12-05): ``predict`` printed TensorFlow's start-up notes
    and the ``E... failed call to cuInit`` line of a CPU machine; the steps filtered them."""
    from components.step_logging import LOG_LEVEL_ENV

    work, summary = run
    environment = {k: v for k, v in os.environ.items() if k not in (LOG_LEVEL_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    with open(os.path.join(summary["run_dir"], "preprocess", "examples", "manifest.jsonl")) as f:
        image = next(r["uri"] for r in map(json.loads, f) if r.get("split") == "test")
    proc = subprocess.run([sys.executable, "-m", "pipelines", "predict", "--registry-uri", str(work / "registry"),
                           "--model", "digits", "--alias", "dev", image], capture_output=True, text=True, env=environment,
                           timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["file"] == image
    for noise in ("cuInit", "oneDNN custom operations", "Could not find cuda drivers", "absl::InitializeLog"):
        assert noise not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_failed_step_exits_nonzero_with_one_readable_line(tmp_path, capsys):
    from pipelines.demo import write_digit_images

    write_digit_images(str(tmp_path / "data"), (7,), limit_per_class=5)
    summary_path = tmp_path / "summary.json"
    code = main([
        "run-local", "--data-uri", str(tmp_path / "data"), "--registry-uri", str(tmp_path / "registry"),
        "--pipeline-root", str(tmp_path / "root"), "--image-size", "32", "--base-weights", "none",
        "--summary", str(summary_path),
    ])
    assert code == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == (
        "error: step preprocess failed: DataError: found 1 class(es) with usable images (7); need at least two classes"
    )
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "failed" and summary["pipeline_root"] == str(tmp_path / "root")
    assert not (tmp_path / "registry").exists()
    # Regression (new-user review): kfp.local's empty output folders of the failed step stayed.
    left = [os.path.relpath(os.path.join(d, f), tmp_path / "root") for d, _, files in os.walk(tmp_path / "root") for f in files]
    empty = [d for d, sub, files in os.walk(tmp_path / "root") if not sub and not files and d != str(tmp_path / "root")]
    assert empty == [], (empty, left)


@pytest.mark.slow
def test_predict_reports_unreadable_files_and_classifies_the_rest(run, capsys, tmp_path):
    work, summary = run
    (tmp_path / "notes.txt").write_text("not an image")
    with open(os.path.join(summary["pushed"]["uri"], "evaluation.json")) as f:
        classes = json.load(f)["class_names"]
    manifests = [os.path.join(d, f) for d, _, fs in os.walk(summary["run_dir"]) for f in fs if f == "manifest.jsonl"]
    with open(manifests[0]) as f:
        image = next(r["uri"] for r in map(json.loads, f) if r.get("status") == "ok")
    capsys.readouterr()
    code = main(["predict", "--model-dir", summary["pushed"]["uri"], str(tmp_path / "notes.txt"), image, str(tmp_path)])
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert code == 1
    assert rows[0] == {"file": str(tmp_path / "notes.txt"), "error": "not a readable image (unknown format)"}
    assert rows[1]["file"] == image and rows[1]["label"] in classes
    assert rows[2] == {"file": str(tmp_path), "error": "is a folder, not an image file"}
    assert out.err.strip().splitlines()[-1] == "error: 2 of 3 file(s) could not be classified (see their 'error')"


@pytest.mark.slow
def test_ctrl_c_during_training_ends_with_one_line_and_removes_the_stopped_step(tmp_path, digits_dir, backbone_weights):
    """Regression (new-user review, 2026-12-05): Ctrl-C gave a 49-line KeyboardInterrupt traceback
    from kfp.local and left the stopped finetune step's TensorBoard folder in the run. Now: exit
    130, one ``error: interrupted`` line naming the step, its partial outputs removed, the finished
    preprocess step's outputs kept, nothing in the registry."""
    import signal
    import time

    args = _run_local_args(tmp_path, digits_dir, backbone_weights, str(tmp_path / "summary.json"))
    args[args.index("--epochs") + 1] = "200"  # still training when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen, deadline = [], time.monotonic() + 600
    for line in proc.stdout:
        seen.append(line)
        if "finetune: head epoch 2/" in line:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
            break
        assert time.monotonic() < deadline, "".join(seen[-20:])
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest[-3000:]
    last = rest.strip().splitlines()[-1]
    [run_dir] = [os.path.join(tmp_path / "root", d) for d in os.listdir(tmp_path / "root")]
    assert last == (f"error: interrupted: the run stopped in step finetune (its partial outputs removed); the finished "
                    f"steps' outputs are in {run_dir}; run the same command again to start over"), rest[-3000:]
    assert "Traceback" not in rest
    assert sorted(os.listdir(run_dir)) == ["preprocess"]
    assert os.path.exists(os.path.join(run_dir, "preprocess", "executor_output.json"))
    assert not os.path.exists(tmp_path / "registry" / "digits") and not os.path.exists(tmp_path / "summary.json")
