"""Rows of the finetune step.

Implemented: ``input_pipeline`` (the training input pipeline against tensors in memory).
Stubs, marked ``PENDING``: rows that wait for product functions another engineer is adding to
``components.finetune``; each reports ``pending`` while that function is missing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.harness import Context, Goal, Result, row
from bench.rows_preprocess import BIG, preprocessed

EPOCHS = 5
BATCH_SIZE = 32
SEED = 0


def _tiny_head(image_size: int, num_classes: int) -> Any:
    """A tiny head-only Keras model (no base model): average pooling, dropout, softmax dense.

    Its compute per image is negligible, so the time of ``fit`` is the input pipeline's time plus
    Keras' own per-step overhead, which both sides pay alike.
    """
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.AveragePooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _input_pipeline_samples(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import tensorflow_transform as tft

    from components import finetune
    from components.preprocess import LABEL_VOCABULARY

    folder = preprocessed(ctx, BIG)
    tft_output = tft.TFTransformOutput(os.path.join(folder, "transform"))
    num_classes = len(tft_output.vocabulary_by_name(LABEL_VOCABULARY))
    files = finetune.split_files(os.path.join(folder, "examples"), "train")
    n = finetune.count_examples(files)
    # The same caching decision run_finetune makes (cache decoded pixels when they fit in memory).
    image_size = int(tft_output.transformed_feature_spec()["image"].shape[0])
    cache = n * image_size * image_size * 3 * 4 < finetune._MEMORY_CACHE_LIMIT_BYTES
    # B's tensors: the very pixels the pipeline yields, materialized once outside the timing.
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in finetune.make_dataset(files, tft_output, BATCH_SIZE)))
    x, y = np.concatenate(xs), np.concatenate(ys)

    def side_a() -> tuple[float, float]:
        model = _tiny_head(image_size, num_classes)
        ds = finetune.make_dataset(files, tft_output, BATCH_SIZE, shuffle_seed=SEED, cache=cache)
        start = time.perf_counter()
        h = model.fit(ds, epochs=EPOCHS, shuffle=False, verbose=0)  # make_dataset shuffles
        return n * EPOCHS / (time.perf_counter() - start), h.history["accuracy"][-1]

    def side_b() -> tuple[float, float]:
        model = _tiny_head(image_size, num_classes)
        start = time.perf_counter()
        h = model.fit(x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=True, verbose=0)
        return n * EPOCHS / (time.perf_counter() - start), h.history["accuracy"][-1]

    a, b, acc_a, acc_b = [], [], [], []
    for _ in range(ctx.reps(fast=True)):
        rate, acc = side_a()
        a.append(rate)
        acc_a.append(acc)
        rate, acc = side_b()
        b.append(rate)
        acc_b.append(acc)
    return {"a": a, "b": b, "acc_a": acc_a, "acc_b": acc_b, "n": n, "cache": cache, "image_size": image_size}


@row("input_pipeline", "training images/s fed by make_dataset (TFRecords + TFT layer) vs in-memory tensors")
def input_pipeline(ctx: Context) -> Result:
    s = _input_pipeline_samples(ctx)
    return Result(
        name="input_pipeline",
        compared="model.fit on make_dataset vs on in-memory tensors",
        unit="images/s",
        goal=Goal(">=", 0.9),
        a=s["a"],
        b=s["b"],
        accuracy=f"train acc A {s['acc_a'][-1]:.3f} / B {s['acc_b'][-1]:.3f}",
        notes=(f"Tiny head-only model (4x4 average pooling, dense; no base model) trained {EPOCHS} epochs on the "
               f"{s['n']}-image train split at {s['image_size']} px, batch {BATCH_SIZE}; images/s = images x epochs / "
               f"fit seconds. A: components.finetune.make_dataset with cache={s['cache']} (as run_finetune "
               f"decides), so the first epoch decodes JPEGs through the tf.Transform layer. B: model.fit on the "
               f"same pixels as NumPy arrays."),
    )


# ---------------------------------------------------------------------------------------------
# PENDING rows: each reports "pending" while the components.finetune function it needs is missing.
# Whoever adds the function replaces the body below the hasattr check with the measurement.


def _pending(name: str, compared: str, unit: str, goal: Goal, needs: tuple[str, ...]) -> Result | None:
    """A ``pending`` result when none of ``needs`` exists in ``components.finetune``, else None."""
    from components import finetune

    if any(hasattr(finetune, f) for f in needs):
        return None
    seen = [f"FinetuneSettings.{f}" for f in needs if hasattr(getattr(finetune, "FinetuneSettings", None), f)]
    return Result(name=name, compared=compared, unit=unit, goal=goal, status="pending",
                  notes=f"pending: components.finetune has none of {', '.join(needs)} yet"
                  + (f" (a setting {', '.join(seen)} exists: the row may be written against it)" if seen else ""))


@row("finetune_head_only", "head-only fine-tune (features of the frozen base computed once) vs plain Keras model.fit", slow=True)
def finetune_head_only(ctx: Context) -> Result:
    # PENDING: A = images/s (and accuracy) of the product's head-only fine-tune path;
    # B = plain keras model.fit of the same frozen-base classifier on in-memory tensors.
    needs = ("extract_features", "fast_path")
    pending = _pending("finetune_head_only", "head-only fine-tune vs plain model.fit", "images/s", Goal(">=", 1.0), needs)
    if pending:
        return pending
    raise NotImplementedError(f"components.finetune now has one of {needs}: implement the finetune_head_only row")


@row("finetune_peak_memory", "finetune peak RSS at 4N vs N images", slow=True)
def finetune_peak_memory(ctx: Context) -> Result:
    # PENDING: A / B = peak RSS of run_finetune (fresh process, RUSAGE_SELF) at 4N / N images.
    needs = ("extract_features", "fast_path")
    pending = _pending("finetune_peak_memory", "finetune peak RSS: 4N vs N images", "MiB", Goal("<=", 1.5), needs)
    if pending:
        return pending
    raise NotImplementedError(f"components.finetune now has one of {needs}: implement the finetune_peak_memory row")
