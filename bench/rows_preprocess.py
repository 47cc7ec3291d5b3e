"""Rows of the preprocess step: throughput against plain tf.data, and peak memory vs data size.

Data: digit JPEGs at 96 px (``bench.data``), ``BIG`` files for throughput (TRAPS.md's figure of
2,688), ``BIG // 4`` for the memory row's small side, and ``TINY`` files to measure the step's
fixed cost. Every preprocess run is ``components.preprocess.run_preprocess`` called in a fresh
process (``bench.workers preprocess``): it starts its Beam worker process, as in production.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.data import list_files, write_digit_jpegs
from bench.harness import Context, Goal, Result, interleave, row

BIG = 2688
TINY = 20
IMAGE_SIZE = 96
BASE_MODEL = "mobilenet_v2"


def jpeg_dir(ctx: Context, n: int) -> str:
    """A folder of ``n`` digit JPEGs (10 classes; 2 classes for the tiny set, so each class keeps
    enough images for the split)."""

    def make() -> str:
        path = ctx.path(f"jpegs-{n}")
        write_digit_jpegs(path, n, size=IMAGE_SIZE, num_classes=10 if n >= 100 else 2)
        return path

    return ctx.memo(f"jpegs-{n}", make)


def preprocess_once(ctx: Context, n: int) -> dict[str, Any]:
    """One ``run_preprocess`` of ``n`` images in a fresh process; keeps the last output folder
    (``ctx.memo("preprocessed-<n>")``) for rows that train on it."""
    out = ctx.fresh_dir(f"preprocessed-{n}")
    result = ctx.run_worker("preprocess", {
        "data_dir": jpeg_dir(ctx, n), "out_dir": out, "image_size": IMAGE_SIZE, "base_model": BASE_MODEL,
        "min_images_per_class": 1 if n < 100 else 5,
    })
    ctx._memo[f"preprocessed-{n}"] = out
    return result


def preprocess_runs(ctx: Context, n: int, reps: int) -> list[dict[str, Any]]:
    """At least ``reps`` preprocess runs of ``n`` images, shared by every row that asks."""
    runs = ctx.memo(f"preprocess-runs-{n}", list)
    while len(runs) < reps:
        runs.append(preprocess_once(ctx, n))
        ctx.log(f"  preprocess {n} images: {runs[-1]['seconds']:.1f} s, worker peak {runs[-1]['peak_rss_mib']:.0f} MiB")
    return runs[:reps]


def preprocessed(ctx: Context, n: int = BIG) -> str:
    """A folder with ``examples/`` and ``transform/`` from a preprocess run of ``n`` images."""
    if f"preprocessed-{n}" not in ctx._memo:
        preprocess_runs(ctx, n, 1)
    return ctx._memo[f"preprocessed-{n}"]


def tf_data_images_per_second(files: list[str], reps: int) -> list[float]:
    """Images/s of the plain tf.data decode-and-resize baseline over ``files`` (one warm-up pass
    first, so TensorFlow's import and graph tracing are not counted)."""
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


def in_process_run(ctx: Context, n: int) -> dict[str, Any]:
    """``run_preprocess_in_process`` of ``n`` images in a fresh process, imports timed apart."""
    return ctx.run_worker("preprocess-in-process", {
        "data_dir": jpeg_dir(ctx, n), "out_dir": ctx.fresh_dir(f"in-process-{n}"), "image_size": IMAGE_SIZE,
        "base_model": BASE_MODEL, "min_images_per_class": 1 if n < 100 else 5,
    })


def _preprocess_vs_tf_data(ctx: Context) -> dict[str, list]:
    reps = ctx.reps(fast=False)
    files = list_files(jpeg_dir(ctx, BIG))
    s: dict[str, list] = {"big": [], "tiny": [], "base": [], "big_in": [], "tiny_in": []}
    # Interleaved: every kind of run in turn, so load drift hits them all alike.
    for i in range(reps):
        s["big"].append(preprocess_runs(ctx, BIG, i + 1)[i])
        s["tiny"].append(preprocess_runs(ctx, TINY, i + 1)[i])
        s["base"].extend(tf_data_images_per_second(files, 1))
        s["big_in"].append(in_process_run(ctx, BIG))
        s["tiny_in"].append(in_process_run(ctx, TINY))
    return s


@row("preprocess_throughput", "run_preprocess end to end (fixed cost included) vs tf.data decode-and-resize", slow=True)
def preprocess_throughput(ctx: Context) -> Result:
    s = ctx.memo("preprocess-vs-tf-data", lambda: _preprocess_vs_tf_data(ctx))
    fixed = statistics.median(r["seconds"] for r in s["tiny"])
    return Result(
        name="preprocess_throughput",
        compared=f"run_preprocess vs tf.data decode+resize ({BIG} JPEGs, 96 px)",
        unit="images/s",
        goal=Goal(">=", 0.5),
        a=[BIG / r["seconds"] for r in s["big"]],
        b=s["base"],
        notes=(f"A: whole run_preprocess call ({BIG} images), including its fixed cost of {fixed:.1f} s "
               f"(see preprocess_fixed_cost). B: in-process tf.data pass after a warm-up (TF already imported, "
               f"both cores)."),
    )


@row("preprocess_fixed_cost", f"run_preprocess on {TINY} images vs {BIG} images: seconds", slow=True)
def preprocess_fixed_cost(ctx: Context) -> Result:
    s = ctx.memo("preprocess-vs-tf-data", lambda: _preprocess_vs_tf_data(ctx))
    med = lambda runs, key="seconds": statistics.median(r[key] for r in runs)  # noqa: E731
    return Result(
        name="preprocess_fixed_cost",
        compared=f"run_preprocess {TINY} images vs {BIG} images (seconds)",
        unit="s",
        goal=Goal(),
        a=[r["seconds"] for r in s["tiny"]],
        b=[r["seconds"] for r in s["big"]],
        notes=(f"What the step costs whatever the data size, i.e. what the worker process and TFT's analysis pass "
               f"cost. Medians: worker imports (TF, Beam, TFT) {med(s['tiny_in'], 'import_seconds'):.1f} s; "
               f"Beam pipeline with TFT analysis on {TINY} images, imports excluded, {med(s['tiny_in']):.1f} s "
               f"(vs {med(s['big_in']):.1f} s on {BIG}). Worker CPU seconds (steadier than wall time on a shared "
               f"machine): {med(s['tiny'], 'cpu_seconds'):.1f} s for {TINY} images vs "
               f"{med(s['big'], 'cpu_seconds'):.1f} s for {BIG}."),
    )


@row("preprocess_marginal_throughput", "run_preprocess per-image throughput excluding the fixed cost vs tf.data", slow=True)
def preprocess_marginal_throughput(ctx: Context) -> Result:
    s = ctx.memo("preprocess-vs-tf-data", lambda: _preprocess_vs_tf_data(ctx))
    # Pairs from the same repetition, imports excluded on both: (BIG - TINY) images over the time
    # the extra images took. A pair where load made the small run the slower one says nothing.
    diffs = [b["seconds"] - t["seconds"] for b, t in zip(s["big_in"], s["tiny_in"])]
    marginal = [(BIG - TINY) / d for d in diffs if d > 0]
    dropped = len(diffs) - len(marginal)
    return Result(
        name="preprocess_marginal_throughput",
        compared="run_preprocess excl. fixed cost vs tf.data decode+resize",
        unit="images/s",
        goal=Goal(">=", 0.5),
        a=marginal,
        b=s["base"],
        notes=(f"A: ({BIG} - {TINY}) / (t({BIG}) - t({TINY})) per repetition, t = run_preprocess_in_process in a "
               f"fresh process after its imports: what each further image costs (read twice, Pillow decode to "
               f"validate, SHA-256 twice, serialize, Beam per-element overhead; one Python thread)."
               + (f" {dropped} pair(s) dropped: the small run was not faster." if dropped else "")),
    )


@row("preprocess_peak_memory", f"preprocess worker peak RSS at {BIG} vs {BIG // 4} images", slow=True)
def preprocess_peak_memory(ctx: Context) -> Result:
    reps = ctx.reps(fast=False)
    small = preprocess_runs(ctx, BIG // 4, reps)
    big = preprocess_runs(ctx, BIG, reps)
    a = [r["peak_rss_mib"] for r in big]
    b = [r["peak_rss_mib"] for r in small]
    per_1000 = (statistics.median(a) - statistics.median(b)) / (BIG - BIG // 4) * 1000
    return Result(
        name="preprocess_peak_memory",
        compared=f"worker peak RSS: {BIG} (4N) vs {BIG // 4} (N) images",
        unit="MiB",
        goal=Goal("<=", 1.5),
        a=a,
        b=b,
        notes=(f"Peak RSS of the Beam worker child (getrusage RUSAGE_CHILDREN in a fresh process per run). "
               f"Growth {per_1000:+.1f} MiB per 1,000 extra images; the JPEGs are ~4 KB each, so the "
               f"baseline (TF + Beam + TFT, ~800 MiB) dominates: a ratio near 1 says memory does not grow "
               f"with the data at this scale, not that it never could."),
    )
