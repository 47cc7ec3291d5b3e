"""The benchmark's own measuring helpers (the rows themselves run in `make bench`)."""

import subprocess
import sys

import pytest

from bench.workers import peak_rss_mib


def test_peak_rss_of_a_worker_is_its_own_not_its_parents():
    # Regression: the finetune memory row read getrusage(RUSAGE_SELF).ru_maxrss in a worker the
    # bench runner had started, and Linux carries ru_maxrss across exec: both dataset sizes
    # reported the runner's 2,990 MiB. A parent holding 600 MiB starts a child that holds little.
    ballast = bytearray(600 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    assert peak_rss_mib() > 600
    code = "import resource; from bench.workers import peak_rss_mib; print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    own, carried = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert own < 200, own
    assert carried > 600  # what the old measurement read
    del ballast


def test_input_pipeline_row_drives_the_steps_training_input(preprocessed, monkeypatch):
    # Regression (issue 10, item 8): the row timed finetune.make_dataset, which the step never
    # called, and decided the memory cache from the train split alone (the step: train + eval).
    import os

    from bench import rows_training
    from components.finetune import data as ft_data
    from components.finetune import training

    assert rows_training.finetune_data.training_batches is training.training_batches
    folder = os.path.dirname(preprocessed["examples"])
    data, batches = rows_training.product_training_input(folder)
    assert data.cache is ft_data.cache_in_memory(data.num_train + data.num_eval, data.image_size) is True
    assert data.batch_size == rows_training.BATCH_SIZE
    first = next(batches.as_numpy_iterator())
    assert first[0].shape == (rows_training.BATCH_SIZE, 32, 32, 3) and first[1].shape == (rows_training.BATCH_SIZE, 5)
    # A limit the train split alone fits under but train + eval do not: the row follows the step.
    monkeypatch.setattr(ft_data, "MEMORY_CACHE_LIMIT_BYTES", (data.num_train + data.num_eval) * 32 * 32 * 3 * 4)
    assert ft_data.cache_in_memory(data.num_train, data.image_size) is True
    assert rows_training.product_training_input(folder)[0].cache is False


def test_task_timings_split_each_task_into_start_body_exit_and_bookkeeping():
    from bench.timeline import task_timings

    # What kfp 2.17.3's kfp.local writes (colour codes included) and a task's executor logs.
    lines = [
        (10.0, "17:38:27.305 - INFO - Running pipeline: \x1b[95m'kfp-finetune'\x1b[0m"),
        (10.1, "17:38:27.309 - INFO - Executing task \x1b[96m'preprocess'\x1b[0m"),
        (10.2, "    [KFP Executor 2026-12-04 17:38:27,381 INFO]: Looking for component `preprocess` in --component_module_path `/tmp/x.py`"),
        (10.3, "    [KFP Executor 2026-12-04 17:38:27,382 INFO]: Looking for component `preprocess` again"),
        (18.0, "    [KFP Executor 2026-12-04 17:38:36,165 INFO]: Wrote executor output file to /r/preprocess/executor_output.json."),
        (18.5, "17:38:36.180 - INFO - Task \x1b[96m'preprocess'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m"),
        (18.6, "17:38:36.183 - INFO - Executing task \x1b[96m'finetune'\x1b[0m"),
        (18.7, "    [KFP Executor 2026-12-04 17:38:36,253 INFO]: Looking for component `finetune` in --component_module_path `/tmp/y.py`"),
        (50.0, "    [KFP Executor 2026-12-04 17:39:29,205 INFO]: Wrote executor output file to /r/finetune/executor_output.json."),
        (52.0, "17:39:31.256 - INFO - Task \x1b[96m'finetune'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m"),
    ]
    pre, ft = task_timings(lines, end=52.25)
    assert (pre.name, ft.name) == ("preprocess", "finetune")
    assert [round(v, 6) for v in (pre.launch, pre.body, pre.exit, pre.after)] == [0.1, 7.8, 0.5, 0.1]
    assert [round(v, 6) for v in (ft.launch, ft.body, ft.exit, ft.after)] == [0.1, 31.3, 2.0, 0.25]
    assert round(ft.total, 6) == 33.4


def test_task_timings_names_a_task_whose_executor_lines_are_missing():
    import pytest

    from bench.timeline import task_timings

    lines = [(1.0, "INFO - Executing task \x1b[96m'push'\x1b[0m"), (2.0, "INFO - Task \x1b[96m'push'\x1b[0m finished with status SUCCESS")]
    with pytest.raises(ValueError, match="task 'push': no executor start or output line"):
        task_timings(lines, end=3.0)


def test_timestamped_stream_reads_a_real_kfp_local_run(tmp_path, monkeypatch):
    # Ties the log patterns to the installed kfp: two tiny Lightweight Python Components run by
    # kfp.local's SubprocessRunner, as run_local runs the pipeline's steps.
    import io

    from kfp import dsl, local

    from bench.timeline import TimestampedStream, task_timings

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def double(x: int) -> int:
        return 2 * x

    @dsl.pipeline(name="two-steps")
    def two_steps(x: int = 3) -> int:
        first = double(x=x)
        return double(x=first.output).output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    stream = TimestampedStream(io.StringIO())
    monkeypatch.setattr("sys.stdout", stream)
    task = two_steps(x=3)
    monkeypatch.undo()
    assert task.output == 12
    tasks = task_timings(stream.lines, end=stream.lines[-1][0])
    assert [t.name for t in tasks] == ["double", "double-2"]
    for t in tasks:
        assert 0 < t.launch < t.total and 0 < t.body < t.total and t.exit >= 0 and t.after >= 0
    assert "Wrote executor output file" in stream.target.getvalue()


def _kfp_run(evaluate_body: float, fine_tune: float = 25.0) -> dict:
    tasks = [{"name": n, "launch": 0.1, "body": b, "exit": e, "after": 0.01}
             for n, b, e in (("preprocess", 8.0, 0.1), ("finetune", 40.0, 0.2), ("evaluate", evaluate_body, 0.1), ("push", 0.3, 0.1))]
    return {"tasks": tasks, "imports": 0.4, "before_run": 0.2, "compile": 0.03, "finetune_seconds": 36.0,
            "phase_seconds": {"head": 4.0, "fine_tune": fine_tune}, "accuracy": 0.96, "pushed": True}


def _direct_run(fine_tune: float = 25.0) -> dict:
    return {"steps": {"imports": 0.5, "preprocess": 7.9, "finetune": 40.5, "evaluate": 1.5, "push": 0.1},
            "finetune_seconds": 36.5, "phase_seconds": {"head": 4.0, "fine_tune": fine_tune}, "accuracy": 0.96, "pushed": True}


def test_step_breakdown_compares_each_task_with_the_same_step_in_one_process():
    from bench.rows_pipeline import pair_ratios, same_training_ratios, step_breakdown

    parts = step_breakdown([_kfp_run(5.0), _kfp_run(6.0), _kfp_run(9.0)], [_direct_run(), _direct_run()])
    assert list(parts) == ["preprocess", "finetune", "evaluate", "push", "start"]
    assert round(parts["evaluate"]["total"], 6) == 6.2 and round(parts["evaluate"]["extra"], 6) == 4.7
    assert round(parts["finetune"]["extra"], 6) == -0.2
    # Before the finetune step's own clock starts: importing Keras and TensorFlow.
    assert parts["finetune"]["imports"] == 4.0 and parts["finetune"]["direct_imports"] == 4.0
    assert round(parts["start"]["total"], 6) == 0.6 and round(parts["start"]["extra"], 6) == 0.1
    assert parts["start"]["compile"] == 0.03
    assert pair_ratios([55.0, 60.0], [50.0, 48.0]) == [1.1, 1.25]
    # The second pair's kfp.local run trained 7 s slower than its one-process run: set equal.
    ratios = same_training_ratios([55.0, 60.0], [50.0, 48.0], [_kfp_run(5.0), _kfp_run(5.0, 32.0)], [_direct_run(), _direct_run()])
    assert [round(r, 6) for r in ratios] == [1.1, 1.104167]


def _pipeline_row_with_pairs(tmp_path, monkeypatch, kfp_seconds: list[float], quick: bool = False):
    """pipeline_overhead with canned worker results: kfp.local runs take ``kfp_seconds`` in
    turn, one-process runs 50 s. Returns (result, number of pairs run)."""
    from bench import rows_pipeline
    from bench.harness import Context

    monkeypatch.setattr(rows_pipeline, "pipeline_params", lambda ctx, registry_uri: {})
    ctx = Context(quick=quick, workdir=str(tmp_path), log=lambda message: None)
    runs = {"kfp-pipeline": iter(kfp_seconds)}

    def run_worker(kind, request):
        if kind == "kfp-pipeline":
            return {**_kfp_run(5.0), "process_seconds": next(runs[kind])}
        return {**_direct_run(), "process_seconds": 50.0}

    monkeypatch.setattr(ctx, "run_worker", run_worker)
    result = rows_pipeline.pipeline_overhead(ctx)
    return result, len(result.a)


def test_a_paired_row_is_decided_by_the_median_of_its_pairs_ratios():
    """Regression (make bench of 2026-12-05): pipeline_overhead's pairs read 1.633, 1.038, 1.075
    (2 of 3 under the 1.15 goal, the third pair added to break the tie), but the ratio of the
    medians, 62.8 / 51.6, read 1.217 and failed the row: it mixed samples of different pairs."""
    from bench.harness import Goal, Result

    a, b = [81.6, 62.8, 55.5], [50.0, 60.5, 51.6]
    paired = Result(name="r", compared="", unit="s", goal=Goal("<=", 1.15), a=a, b=b, paired=True)
    assert round(paired.ratio, 3) == 1.076 and paired.passed is True
    unpaired = Result(name="r", compared="", unit="s", goal=Goal("<=", 1.15), a=a, b=b)
    assert round(unpaired.ratio, 3) == 1.217 and unpaired.passed is False
    assert Result(name="r", compared="", unit="s", goal=Goal(), a=[1.0, 2.0], b=[1.0], paired=True).ratio is None


def test_pipeline_overhead_adds_a_third_pair_only_when_the_first_two_disagree(tmp_path, monkeypatch):
    result, pairs = _pipeline_row_with_pairs(tmp_path, monkeypatch, [54.0, 55.0])
    assert pairs == 2 and result.passed is True
    assert "A/B of each pair: 1.080, 1.100 (range 1.080-1.100)" in result.notes
    result, pairs = _pipeline_row_with_pairs(tmp_path, monkeypatch, [54.0, 60.0, 59.0])
    assert pairs == 3 and result.passed is False and round(result.ratio, 6) == 1.18 and result.paired
    assert len(result.details["kfp"]) == len(result.details["direct"]) == 3
    assert _pipeline_row_with_pairs(tmp_path, monkeypatch, [54.0], quick=True)[1] == 1


def test_sdk_worker_rows_are_in_the_bench_and_skip_naming_what_is_missing(tmp_path, monkeypatch):
    # The rows need a Docker daemon and the component image; without either they say which.
    from bench import run  # noqa: F401 (registers every row)
    from bench.harness import ROWS, Context
    from bench.rows_beam_workers import preprocess_sdk_workers_2

    names = list(ROWS)
    assert names.index("preprocess_sdk_workers_2") + 1 == names.index("preprocess_sdk_workers_4")
    monkeypatch.setenv("KFP_FINETUNE_BENCH_IMAGE", "kfp-finetune/no-such-image:0")
    result = preprocess_sdk_workers_2(Context(quick=True, workdir=str(tmp_path), log=lambda m: None))
    assert result.status == "skipped" and result.a == [] and result.b == []
    assert ("image kfp-finetune/no-such-image:0 is not on the Docker daemon" in result.notes
            or "no Docker daemon answers" in result.notes), result.notes
    assert "1344 of the 10752 JPEGs" in result.compared


def test_the_one_process_side_writes_every_report_the_component_bodies_write(tmp_path, monkeypatch):
    """Regression (make bench of 2026-12-05): pipeline_overhead's one-process side wrote no
    statistics report and no HTML pages, while the component bodies render them (matplotlib
    charts): kfp.local read 1.21 partly for work the baseline skipped. The calls below are the
    components' (components/kfp_components.py); each report path must be given."""
    import components.evaluate
    import components.finetune
    import components.preprocess
    import components.push
    from bench import workers

    calls = {}

    def fake(step, result):
        def run(*args, **kwargs):
            calls[step] = (args, kwargs)
            return result
        return run

    monkeypatch.setattr(components.preprocess, "run_preprocess_step", fake("preprocess", {}))
    monkeypatch.setattr(components.finetune, "run_finetune_step", fake("finetune", {"phase_seconds": {}, "seconds": 1.0}))
    monkeypatch.setattr(components.evaluate, "run_evaluate_step", fake("evaluate", {"blessed": False, "metrics": {"accuracy": 0.5}}))
    monkeypatch.setattr(components.push, "run_push_step", fake("push", None))
    workers.direct_pipeline({"out_dir": str(tmp_path), "params": {"data_uri": str(tmp_path), "registry_uri": str(tmp_path / "r")}})
    assert calls["preprocess"][0][3] == str(tmp_path / "statistics.md")
    assert calls["finetune"][1] == {"report_path": str(tmp_path / "training.md"), "html_path": str(tmp_path / "training.html")}
    assert calls["evaluate"][0][3] == str(tmp_path / "report.md")
    assert calls["evaluate"][1] == {"html_path": str(tmp_path / "evaluation.html")}


def test_the_sdk_worker_rows_take_the_files_asked_for_and_refuse_a_bad_count():
    from bench.rows_beam_workers import slice_size
    from bench.rows_preprocess import BIG, LARGE

    assert slice_size({}) == BIG // 2 == 1344
    assert slice_size({"KFP_FINETUNE_BENCH_BEAM_FILES": str(LARGE)}) == 10752
    for bad in ("0", "10753", "many"):
        with pytest.raises(ValueError, match=f"KFP_FINETUNE_BENCH_BEAM_FILES='{bad}': expected a number of files from 1 to 10752"):
            slice_size({"KFP_FINETUNE_BENCH_BEAM_FILES": bad})
