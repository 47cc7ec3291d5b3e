"""Entry points the benchmark runs in fresh processes: ``python -m bench.workers KIND REQUEST RESULT``.

A fresh process per measurement keeps what one row imported or allocated out of the next row's
numbers, makes ``resource.getrusage(RUSAGE_CHILDREN)`` see only the children of that run, and makes
each side of a comparison pay its own interpreter start and imports.

``REQUEST`` and ``RESULT`` are JSON files; every kind writes ``{"seconds": ...}`` plus its own
fields to ``RESULT``. Seconds are wall-clock time measured inside the worker around the work
(imports included only where the kind says so).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB, from ``VmHWM`` in ``/proc/self/status``.

    Why not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries ``ru_maxrss`` across ``execve``,
    so a worker started by a large parent (the bench runner, gigabytes after the training rows)
    reports the parent's size at fork time instead of its own peak. ``VmHWM`` belongs to the
    process image and starts afresh at ``execve``.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")


def preprocess(req: dict[str, Any]) -> dict[str, Any]:
    """``components.preprocess.run_preprocess`` on ``req["data_dir"]``.

    Returns ``seconds`` (the call, which starts the Beam worker process and waits for it) and
    ``peak_rss_mib``: the largest resident set of any child process (the preprocess worker),
    from ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (KiB on Linux). The child is forked from this
    small process, so the exec carry-over ``peak_rss_mib`` describes does not inflate it.
    """
    from components import preprocess as step

    settings = step.PreprocessSettings(
        image_size=req["image_size"], base_model=req["base_model"],
        min_images_per_class=req.get("min_images_per_class", 5), beam_pipeline_args=tuple(req.get("beam_pipeline_args", ())),
    )
    out = req["out_dir"]
    start = time.perf_counter()
    stats = step.run_preprocess(req["data_dir"], os.path.join(out, "examples"), os.path.join(out, "transform"), settings)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_seconds": children.ru_utime + children.ru_stime,
        "peak_rss_mib": children.ru_maxrss / 1024.0,
        "num_images": stats["num_images"],
        "class_counts": stats["class_counts"],
        "timing": stats["timing"],
    }


def preprocess_in_process(req: dict[str, Any]) -> dict[str, Any]:
    """``components.preprocess.run_preprocess_in_process`` after importing what it needs.

    Returns ``import_seconds`` (TensorFlow, Beam, tf.Transform) and ``seconds`` (the Beam
    pipeline with TFT's analysis, imports excluded): the per-image cost shows without the
    worker's start-up, which dominates and varies most on a busy machine.
    """
    start = time.perf_counter()
    import apache_beam  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_transform.beam  # noqa: F401

    from components import preprocess as step

    import_seconds = time.perf_counter() - start
    settings = step.PreprocessSettings(
        image_size=req["image_size"], base_model=req["base_model"],
        min_images_per_class=req.get("min_images_per_class", 5),
    )
    out = req["out_dir"]
    start = time.perf_counter()
    stats = step.run_preprocess_in_process(req["data_dir"], os.path.join(out, "examples"), os.path.join(out, "transform"), settings)
    return {"seconds": time.perf_counter() - start, "import_seconds": import_seconds, "num_images": stats["num_images"]}


def tf_data(req: dict[str, Any]) -> dict[str, Any]:
    """What a user would otherwise run: a fresh Python that imports TensorFlow and decodes and
    resizes ``req["files"]`` once with tf.data (both cores). ``seconds`` includes the import;
    ``pass_seconds`` is the pass alone."""
    start = time.perf_counter()
    import tensorflow as tf

    size = req["image_size"]

    def load(path: Any) -> Any:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(image, [size, size], antialias=True)

    pass_start = time.perf_counter()
    n = 0
    for batch in tf.data.Dataset.from_tensor_slices(req["files"]).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(64):
        n += int(batch.shape[0])
    end = time.perf_counter()
    return {"seconds": end - start, "pass_seconds": end - pass_start, "num_images": n}


def direct_pipeline(req: dict[str, Any]) -> dict[str, Any]:
    """The four steps' entry points (``run_<step>_step``) called in this one process: the very
    functions the KFP component bodies call, with the settings they build and the reports they
    write (Markdown and HTML).

    Parameters are the pipeline's defaults (``pipelines.pipeline.PARAMETERS``) updated with
    ``req["params"]``, so this side trains exactly what the kfp.local side trains. ``seconds``
    includes this process's imports (the caller also times the whole process); ``steps`` holds
    each step's seconds; ``phase_seconds`` and ``finetune_seconds`` are the finetune step's
    (``training.json``: its clock starts once Keras and TensorFlow are imported).
    """
    t0 = time.perf_counter()
    from components.evaluate import run_evaluate_step
    from components.finetune import run_finetune_step
    from components.preprocess import run_preprocess_step
    from components.push import run_push_step
    from pipelines.local import step_settings
    from pipelines.pipeline import PARAMETERS

    p = {name: spec[1] for name, spec in PARAMETERS.items()}
    p.update(req["params"])
    folders = {name: os.path.join(req["out_dir"], name) for name in ("examples", "transform", "statistics", "model")}
    steps: dict[str, float] = {"imports": time.perf_counter() - t0}
    pre, ft, ev, push = step_settings(p)

    # Every report the component bodies write (components/kfp_components.py), HTML charts
    # included: the two sides do the same work. (Until 2026-12-05 this side wrote neither the
    # statistics report nor the training and evaluation HTML pages, and the row read 1.21.)
    report = lambda name: os.path.join(req["out_dir"], name)  # noqa: E731

    t = time.perf_counter()
    run_preprocess_step(folders["examples"], folders["transform"], folders["statistics"], report("statistics.md"), pre)
    steps["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = run_finetune_step(folders["examples"], folders["transform"], folders["model"], ft,
                                report_path=report("training.md"), html_path=report("training.html"))
    steps["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluation = os.path.join(req["out_dir"], "evaluation.json")
    result = run_evaluate_step(folders["examples"], folders["model"], evaluation, report("report.md"), ev,
                               html_path=report("evaluation.html"))
    steps["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    pushed = run_push_step(folders["model"], evaluation, folders["statistics"], push, "bench") if result["blessed"] else None
    steps["push"] = time.perf_counter() - t
    return {
        "seconds": time.perf_counter() - t0,
        "steps": steps,
        "phase_seconds": summary["phase_seconds"],
        "finetune_seconds": summary["seconds"],
        "accuracy": result["metrics"]["accuracy"],
        "pushed": pushed is not None,
    }


def kfp_pipeline(req: dict[str, Any]) -> dict[str, Any]:
    """The whole pipeline through ``kfp.local`` (``pipelines.local.run_local``); ``seconds``
    includes this process's imports and the pipeline's compilation, as ``run-local`` pays them.

    Also returns where the time went: ``imports`` (this process's imports), ``compile``
    (``compile_pipeline`` inside ``run_local``), ``before_run`` (from the start of ``run_local`` to
    ``kfp.local``'s ``Running pipeline`` line: compilation, loading the package, ``local.init``),
    ``tasks`` (``bench.timeline.TaskTiming`` fields per task, from the run's own log stream), and
    from the finetune step's ``training.json``: ``phase_seconds`` and ``finetune_seconds`` (the
    step's own clock, which starts once Keras and TensorFlow are imported).
    """
    import dataclasses

    from bench.timeline import TimestampedStream, task_timings

    t0 = time.perf_counter()
    import pipelines.pipeline
    from components.artifacts import TRAINING_FILE
    from pipelines.local import run_local

    imported = time.perf_counter()
    compile_seconds: list[float] = []
    compile_pipeline = pipelines.pipeline.compile_pipeline

    def timed_compile(*args: Any, **kwargs: Any) -> str:
        start = time.perf_counter()
        try:
            return compile_pipeline(*args, **kwargs)
        finally:
            compile_seconds.append(time.perf_counter() - start)

    pipelines.pipeline.compile_pipeline = timed_compile  # run_local imports it at call time
    stream = TimestampedStream(sys.stdout)
    sys.stdout = stream
    try:
        started = time.perf_counter()
        result = run_local(req["params"], os.path.join(req["out_dir"], "pipeline_root"))
        end = time.perf_counter()
    finally:
        sys.stdout = stream.target
        pipelines.pipeline.compile_pipeline = compile_pipeline
    running = next(t for t, line in stream.lines if "Running pipeline" in line)
    with open(os.path.join(result.run_dir, "finetune", "model", TRAINING_FILE)) as f:
        training = json.load(f)
    return {
        "seconds": end - t0, "imports": imported - t0, "compile": sum(compile_seconds), "before_run": running - started,
        "tasks": [dataclasses.asdict(t) for t in task_timings(stream.lines, end)],
        "phase_seconds": training["phase_seconds"], "finetune_seconds": training["seconds"],
        "accuracy": result.accuracy, "pushed": result.pushed is not None,
    }


def finetune(req: dict[str, Any]) -> dict[str, Any]:
    """``components.finetune.run_finetune_step`` (random MobileNetV2 0.35 base, 2 head epochs, fast
    path); ``peak_rss_mib`` of this process (``peak_rss_mib()``)."""
    from components.finetune import FinetuneSettings, run_finetune_step

    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights="none", width_multiplier=0.35, epochs=2)
    start = time.perf_counter()
    summary = run_finetune_step(req["examples"], req["transform"], req["out_dir"], settings)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": peak_rss_mib(),
        "train_examples": summary["train_examples"],
    }


KINDS = {"finetune": finetune, "preprocess": preprocess, "tf-data": tf_data, "preprocess-in-process": preprocess_in_process, "direct-pipeline": direct_pipeline, "kfp-pipeline": kfp_pipeline}


def main(argv: list[str]) -> None:
    kind, request, response = argv
    with open(request) as f:
        req = json.load(f)
    out = KINDS[kind](req)
    with open(response, "w") as f:
        json.dump(out, f)
    sys.stdout.flush()
    sys.stderr.flush()
    # Like the preprocess worker: leave without interpreter teardown, where TF/TFT objects have
    # been seen to crash at exit (signal 11, TFT 1.21 / TF 2.21) after the work is done and reported.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
