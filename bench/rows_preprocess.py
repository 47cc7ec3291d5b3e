"""Rows of the preprocess step: throughput against plain tf.data, fixed cost, peak memory.

Data: digit JPEGs at 96 px (``bench.data``): ``BIG`` files (2,688: the set the first
throughput figures were measured on) and
``LARGE`` = 4 x ``BIG``; ``TINY`` files measure the step's fixed cost. Every preprocess run is
``components.preprocess.run_preprocess`` called in a fresh process (``bench.workers preprocess``):
it starts its Beam worker process, as in production.

Throughput is measured two ways. *Steady state*: ``(LARGE - BIG) / (t(LARGE) - t(BIG))`` from
the same repetition, i.e. what each further image costs once the step is running (the fixed
cost, paid once per run whatever the data size, cancels out), against a tf.data pass after a
warm-up. *Whole call*: ``LARGE / t(LARGE)`` against a fresh Python that imports TensorFlow and
runs the tf.data pass, i.e. both sides as a user would start them.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.data import list_files, write_digit_jpegs
from bench.harness import Context, Goal, Result, row

BIG = 2688
LARGE = 4 * BIG
TINY = 20
IMAGE_SIZE = 96
BASE_MODEL = "mobilenet_v2"
PARALLEL_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def jpeg_dir(ctx: Context, n: int) -> str:
    """A folder of ``n`` digit JPEGs (10 classes; 2 classes for the tiny set, so each class keeps
    enough images for the split)."""

    def make() -> str:
        path = ctx.path(f"jpegs-{n}")
        write_digit_jpegs(path, n, size=IMAGE_SIZE, num_classes=10 if n >= 100 else 2)
        return path

    return ctx.memo(f"jpegs-{n}", make)


def preprocess_once(ctx: Context, n: int, beam_pipeline_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``run_preprocess`` of ``n`` images in a fresh process; keeps the last output folder
    (``ctx.memo("preprocessed-<n>")``) for rows that train on it."""
    out = ctx.fresh_dir(f"preprocessed-{n}")
    result = ctx.run_worker("preprocess", {
        "data_dir": jpeg_dir(ctx, n), "out_dir": out, "image_size": IMAGE_SIZE, "base_model": BASE_MODEL,
        "min_images_per_class": 1 if n < 100 else 5, "beam_pipeline_args": list(beam_pipeline_args),
    })
    if not beam_pipeline_args:
        ctx._memo[f"preprocessed-{n}"] = out
    ctx.log(f"  preprocess {n} images {' '.join(beam_pipeline_args)}: {result['seconds']:.1f} s, "
            f"worker peak {result['peak_rss_mib']:.0f} MiB")
    return result


def preprocessed(ctx: Context, n: int = BIG) -> str:
    """A folder with ``examples/`` and ``transform/`` from a preprocess run of ``n`` images."""
    if f"preprocessed-{n}" not in ctx._memo:
        preprocess_once(ctx, n)
    return ctx._memo[f"preprocessed-{n}"]


def tf_data_images_per_second(files: list[str], reps: int) -> list[float]:
    """Images/s of the plain tf.data decode-and-resize baseline over ``files`` in this process
    (one warm-up pass first, so TensorFlow's import and graph tracing are not counted)."""
    import time

    import tensorflow as tf

    def one_pass() -> float:
        def load(path: tf.Tensor) -> tf.Tensor:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            return tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)

        ds = tf.data.Dataset.from_tensor_slices(files).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
        start = time.perf_counter()
        n = 0
        for batch in ds:
            n += int(batch.shape[0])
        return n / (time.perf_counter() - start)

    one_pass()
    return [one_pass() for _ in range(reps)]


def _samples(ctx: Context) -> dict[str, list]:
    reps = ctx.reps(fast=False)
    files = list_files(jpeg_dir(ctx, LARGE))
    s: dict[str, list] = {"big": [], "large": [], "tiny_in": [], "warm": [], "cold": []}
    # Interleaved: every kind of run in turn, so load drift hits them all alike.
    for _ in range(reps):
        s["big"].append(preprocess_once(ctx, BIG))
        s["large"].append(preprocess_once(ctx, LARGE))
        s["warm"].extend(tf_data_images_per_second(files, 1))
        s["cold"].append(ctx.run_worker("tf-data", {"files": files, "image_size": IMAGE_SIZE}))
        s["tiny_in"].append(ctx.run_worker("preprocess-in-process", {
            "data_dir": jpeg_dir(ctx, TINY), "out_dir": ctx.fresh_dir(f"in-process-{TINY}"), "image_size": IMAGE_SIZE,
            "base_model": BASE_MODEL, "min_images_per_class": 1,
        }))
    return s


def _steady(big: list[dict[str, Any]], large: list[dict[str, Any]]) -> tuple[list[float], int]:
    """Per repetition ``(LARGE - BIG) / (t(LARGE) - t(BIG))``, t = the worker's time after its
    imports (``timing.pipeline_s``: process start and imports vary most on a shared machine and
    cancel out anyway); a pair where load made the larger run the faster one says nothing and
    is dropped (the count is returned)."""
    diffs = [b["timing"]["pipeline_s"] - s["timing"]["pipeline_s"] for s, b in zip(big, large)]
    rates = [(LARGE - BIG) / d for d in diffs if d > 0]
    return rates, len(diffs) - len(rates)


@row("preprocess_throughput", "preprocess step steady-state images/s vs tf.data decode-and-resize (goal of issue 3)", slow=True)
def preprocess_throughput(ctx: Context) -> Result:
    s = ctx.memo("preprocess-samples", lambda: _samples(ctx))
    rates, dropped = _steady(s["big"], s["large"])
    return Result(
        name="preprocess_throughput",
        compared=f"run_preprocess steady state vs tf.data decode+resize ({LARGE} JPEGs, 96 px)",
        unit="images/s",
        goal=Goal(">=", 0.5),
        a=rates,
        b=s["warm"],
        notes=(f"A: ({LARGE} - {BIG}) / (t({LARGE}) - t({BIG})), t = the run_preprocess worker's time after its "
               f"imports, same repetition: what each further image costs (read twice, Pillow decode to validate, "
               f"SHA-256, duplicate grouping, manifest, TFRecord write, TFT analysis of its label); the fixed cost "
               f"cancels out (see preprocess_fixed_cost). One Beam worker (the default below "
               f"LOCAL_PARALLEL_MIN_FILES files). B: tf.data pass over the {LARGE} files after a warm-up, both cores."
               + (f" {dropped} pair(s) dropped: the larger run was not slower." if dropped else "")),
    )


@row("preprocess_parallel_throughput", "preprocess steady state with two Beam worker processes vs tf.data", slow=True)
def preprocess_parallel_throughput(ctx: Context) -> Result:
    s = ctx.memo("preprocess-samples", lambda: _samples(ctx))
    reps = min(2, ctx.reps(fast=False))
    big = [preprocess_once(ctx, BIG, PARALLEL_ARGS) for _ in range(reps)]
    large = [preprocess_once(ctx, LARGE, PARALLEL_ARGS) for _ in range(reps)]
    rates, dropped = _steady(big, large)
    extra = statistics.median(r["seconds"] for r in big) - statistics.median(r["seconds"] for r in s["big"])
    return Result(
        name="preprocess_parallel_throughput",
        compared=f"run_preprocess {' '.join(PARALLEL_ARGS)} steady state vs tf.data ({LARGE} JPEGs)",
        unit="images/s",
        goal=Goal(">=", 0.5),
        a=rates,
        b=s["warm"],
        notes=(f"As preprocess_throughput, with Beam's FnApiRunner running two worker processes (what a local run "
               f"uses by itself from LOCAL_PARALLEL_MIN_FILES files on, with LOCAL_PARALLEL_MIN_CORES cores). Their start-up adds {extra:.1f} s "
               f"(median whole call on {BIG} images against one worker), which is why small runs use one."
               + (f" {dropped} pair(s) dropped: the larger run was not slower." if dropped else "")),
    )


@row("preprocess_whole_call", "preprocess step end to end vs a fresh tf.data process, same files", slow=True)
def preprocess_whole_call(ctx: Context) -> Result:
    s = ctx.memo("preprocess-samples", lambda: _samples(ctx))
    return Result(
        name="preprocess_whole_call",
        compared=f"run_preprocess vs python + import tensorflow + tf.data pass ({LARGE} JPEGs)",
        unit="images/s",
        goal=Goal(),
        a=[LARGE / r["seconds"] for r in s["large"]],
        b=[LARGE / r["seconds"] for r in s["cold"]],
        notes=(f"Both sides started as a user would: A the whole run_preprocess call (worker process, imports, "
               f"Beam pipeline, TFT analysis and transform graph export, validation, statistics); B a fresh Python "
               f"importing TensorFlow and decoding and resizing the files once (tf.data pass alone: median "
               f"{statistics.median(r['pass_seconds'] for r in s['cold']):.1f} s). Information: at this size the "
               f"step's fixed cost dominates."),
    )


@row("preprocess_fixed_cost", f"preprocess on {TINY} images: imports, and the Beam pipeline with TFT analysis", slow=True)
def preprocess_fixed_cost(ctx: Context) -> Result:
    s = ctx.memo("preprocess-samples", lambda: _samples(ctx))
    rates, _ = _steady(s["big"], s["large"])
    rate = statistics.median(rates) if rates else float("nan")
    intercept = [r["seconds"] - LARGE / rate for r in s["large"]]
    imports = statistics.median(r["timing"]["imports_s"] for r in s["large"])
    return Result(
        name="preprocess_fixed_cost",
        compared=f"{TINY}-image pipeline incl. TFT analysis vs worker imports (seconds)",
        unit="s",
        goal=Goal(),
        a=[r["seconds"] for r in s["tiny_in"]],
        b=[r["import_seconds"] for r in s["tiny_in"]],
        notes=(f"What a run costs whatever its size. A: run_preprocess_in_process on {TINY} images after the imports "
               f"(Beam pipeline construction, TFT analysis, transform graph traced and saved as a SavedModel). "
               f"B: the worker's imports (TensorFlow, Beam, tf.Transform). The whole call's intercept, "
               f"t({LARGE}) - {LARGE} / steady rate, is {statistics.median(intercept):.1f} s (median): worker start, "
               f"imports ({imports:.1f} s inside the worker) and the fixed pipeline cost together."),
    )


@row("preprocess_peak_memory", f"preprocess worker peak RSS at {LARGE} vs {BIG} images", slow=True)
def preprocess_peak_memory(ctx: Context) -> Result:
    s = ctx.memo("preprocess-samples", lambda: _samples(ctx))
    a = [r["peak_rss_mib"] for r in s["large"]]
    b = [r["peak_rss_mib"] for r in s["big"]]
    per_1000 = (statistics.median(a) - statistics.median(b)) / (LARGE - BIG) * 1000
    return Result(
        name="preprocess_peak_memory",
        compared=f"worker peak RSS: {LARGE} (4N) vs {BIG} (N) images",
        unit="MiB",
        goal=Goal("<=", 1.5),
        a=a,
        b=b,
        notes=(f"Peak RSS of the Beam worker child (getrusage RUSAGE_CHILDREN in a fresh process per run). "
               f"Growth {per_1000:+.1f} MiB per 1,000 extra images (the file list and the per-image manifest "
               f"lines the duplicate grouping holds); the baseline (TF + Beam + TFT) dominates."),
    )
