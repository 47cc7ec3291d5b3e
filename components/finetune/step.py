"""The finetune step's entry point, ``run_finetune_step``: the recipe, one call per stage."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any, Iterator

from components.accelerators import require_accelerators
from components.artifacts import CHECKPOINT_DIR, TENSORBOARD_DIR
from components.finetune.backup import bind, read_history, run_inputs
from components.finetune.data import prepare_data
from components.finetune.export import save_models, training_summary, write_training_record
from components.finetune.model import build_model
from components.finetune.settings import FinetuneSettings
from components.finetune.training import TrainingRun, configure_devices, fine_tune, train_head


def run_finetune_step(
    examples_dir: str,
    transform_graph_dir: str,
    model_dir: str,
    settings: FinetuneSettings,
    report_path: str | None = None,
    html_path: str | None = None,
) -> dict[str, Any]:
    """Trains the head (and optionally the top of the base) and exports the model.

    Resuming: a snapshot after every epoch and once a phase completes (``backup``: the
    variables with their random-seed states, the optimizer's, early stopping's and
    reduce-on-plateau's state, the epoch log), and the fast path's features, all live in the
    checkpoint folder; when the step is killed (a preempted node) and started again with the
    same inputs, it skips finished phases and continues after the last completed epoch in the
    state the uninterrupted run had there, with the very batches it would have used. The
    snapshots are bound to the run's inputs (``backup.run_inputs``: the data fingerprint, the
    settings, the weights file's content): a run with other inputs removes them, says why on
    one line, and starts fresh. The checkpoint folder is removed once the step completes, unless
    ``settings.checkpoint_dir`` names it.

    Args:
        examples_dir: The preprocess step's examples folder.
        transform_graph_dir: The preprocess step's transform graph folder.
        model_dir: Output folder (see ``components.finetune`` for its content).
        settings: ``FinetuneSettings``.
        report_path: Where to write the training report (Markdown, as ``training.md``) as well,
            e.g. a KFP ``Markdown`` artifact's path; None: only ``training.md``.
        html_path: Where to write the learning curves' HTML page (as ``training.html``) as
            well, e.g. a KFP ``HTML`` artifact's path; None: only ``training.html``.

    Returns:
        What ``training.json`` holds (``export.training_summary``): ``settings``, ``labels``,
        ``image_size``, ``history`` ({metric: per-epoch list over both phases}), ``epochs``
        (per-epoch rows with ``phase`` and ``lr``), ``train_examples``, ``eval_examples``,
        ``class_weight``, ``fast_path``, ``unfrozen_layers``, ``devices``, ``phase_seconds``,
        ``seconds``.

    Raises:
        components.accelerators.AcceleratorNotFoundError: ``settings.accelerator_count`` GPUs
            were requested and TensorFlow sees fewer (raised within seconds, naming the likely cause).
        FileNotFoundError: a split or the weights file is missing.
        ValueError: invalid settings, image size below the base model's minimum, weights that do
            not fit, fewer than two classes, an empty train split, an ``unfreeze`` naming no
            layer, ``mixed_precision`` ``on`` without a GPU.
    """
    import keras

    start = time.perf_counter()
    # Before any work: a step given GPUs that TensorFlow cannot see (an image without CUDA
    # libraries, no driver) would otherwise train on the CPU for hours without a word.
    accelerators = require_accelerators(settings.accelerator_count, settings.accelerator_type)
    keras.utils.set_random_seed(settings.seed)
    strategy, devices = configure_devices(settings)
    print(
        f"finetune: {settings.accelerator_count} x {settings.accelerator_type} requested; TensorFlow sees "
        f"{', '.join(accelerators['visible_devices'])}; strategy {type(strategy).__name__} ({devices['replicas']} "
        f"replica(s)); precision policy {keras.mixed_precision.global_policy().name}; XLA {'on' if settings.xla else 'off'}",
        flush=True,
    )
    data = prepare_data(examples_dir, transform_graph_dir, settings, devices["replicas"])
    classifier = build_model(settings, len(data.labels), data.image_size, strategy)
    checkpoint_dir = settings.checkpoint_dir or os.path.join(model_dir, CHECKPOINT_DIR)
    run = TrainingRun(settings, strategy, data, classifier, checkpoint_dir, os.path.join(model_dir, TENSORBOARD_DIR))

    # Created only now that the settings, data and weights have been accepted: a run refused
    # for bad input leaves no empty output or checkpoint folder behind.
    inputs = run_inputs(settings, data.fingerprint, devices["replicas"], keras.mixed_precision.global_policy().name)
    with _output_folders(model_dir, checkpoint_dir):
        fresh = bind(checkpoint_dir, inputs)
        if fresh:
            print(f"finetune: checkpoint_dir {checkpoint_dir}: starting fresh, its backups are not this run's: {fresh}", flush=True)
        head_seconds = train_head(run)
        fine_tune_seconds, unfrozen = fine_tune(run)
        save_models(classifier.model, data, model_dir)
        phase_seconds = {name: s for name, s in (("head", head_seconds), ("fine_tune", fine_tune_seconds)) if s is not None}
        summary = training_summary(settings, data, read_history(checkpoint_dir), unfrozen, devices, phase_seconds,
                                   time.perf_counter() - start)
        write_training_record(summary, model_dir, report_path, html_path)
        # The step is complete: backups and cached features are not part of the model artifact.
        if not settings.checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return summary


@contextlib.contextmanager
def _output_folders(*paths: str) -> Iterator[None]:
    """Creates ``paths``; if the block fails, removes those it created that still hold no file
    (a backup or cached features from a started run are kept for the restart)."""
    created = [p for p in paths if not os.path.exists(p)]
    for p in paths:
        os.makedirs(p, exist_ok=True)
    try:
        yield
    except BaseException:
        for p in reversed(created):
            if os.path.isdir(p) and not any(files for _, _, files in os.walk(p)):
                shutil.rmtree(p, ignore_errors=True)
        raise
