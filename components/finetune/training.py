"""The finetune step's training: devices, the head phase, the fine-tune phase, backups, epoch log.

Each phase is one ``fit`` call with per-epoch backups (``keras.callbacks.BackupAndRestore``),
an epoch log that survives a restart (``history.jsonl``), progress lines, TensorBoard logs and
optional early stopping. A completed head phase leaves ``head.weights.h5``, so a restarted step
skips it; an interrupted phase resumes after its last completed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

from components.finetune import fast_path
from components.finetune.data import TrainingData, eval_batches, training_batches
from components.finetune.model import Classifier, head_model, make_optimizer, make_schedule, set_trainable
from components.finetune.settings import FinetuneSettings, fast_path_applies, is_pretrained

HISTORY_FILE = "history.jsonl"
HEAD_WEIGHTS_FILE = "head.weights.h5"


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What both phases share.

    Attributes:
        settings: The step's settings.
        strategy: The ``tf.distribute`` strategy (``configure_devices``).
        data: The step's datasets (``data.prepare_data``).
        classifier: The base, the model and the loss (``model.build_model``).
        checkpoint_dir: Backups, the epoch log, the head phase's weights and the fast path's
            features.
        tensorboard_dir: TensorBoard logs, one subfolder per phase.
    """

    settings: FinetuneSettings
    strategy: Any
    data: TrainingData
    classifier: Classifier
    checkpoint_dir: str
    tensorboard_dir: str


def configure_devices(settings: FinetuneSettings) -> tuple[Any, dict[str, Any]]:
    """The distribution strategy and precision for the visible devices.

    With GPUs: ``MirroredStrategy`` over all of them (one GPU: the default strategy) and, unless
    ``mixed_precision`` is ``off``, the ``mixed_float16`` policy (float32 variables and outputs;
    Micikevicius et al. 2018). Without a GPU nothing changes (``mixed_precision=on`` without a GPU
    raises: float16 on CPUs is slower, not faster).

    Returns:
        ``(strategy, info)`` with ``info`` = ``{"gpus", "replicas", "mixed_precision", "xla"}``.

    Raises:
        ValueError: ``mixed_precision`` is ``on`` and no GPU is visible.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if settings.mixed_precision == "on" and not gpus:
        raise ValueError("mixed_precision 'on' needs a GPU; none is visible (use 'auto' or 'off')")
    mixed = bool(gpus) and settings.mixed_precision != "off"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, {"gpus": len(gpus), "replicas": strategy.num_replicas_in_sync, "mixed_precision": mixed, "xla": settings.xla}


def train_head(run: TrainingRun) -> float | None:
    """The head phase: the base frozen, the head trained for ``settings.epochs`` epochs at
    ``settings.learning_rate``, on the base's outputs computed once when ``fast_path_applies``.

    Returns:
        The phase's seconds, or None when it did not run here: ``epochs`` is 0, or a previous
        attempt completed it (its weights are loaded from ``head.weights.h5``).
    """
    settings, model = run.settings, run.classifier.model
    if settings.epochs == 0:
        return None
    head_done = os.path.join(run.checkpoint_dir, HEAD_WEIGHTS_FILE)
    if os.path.exists(head_done):
        print(f"finetune: head phase already complete, loading {head_done}", flush=True)
        model.load_weights(head_done)
        return None
    start = time.perf_counter()
    if fast_path_applies(settings):
        # The frozen base in inference mode is a fixed function: compute it once.
        train, validation = fast_path.feature_batches(model, run.data, run.checkpoint_dir, settings.seed, settings.epochs)
        with run.strategy.scope():
            fitted = head_model(model)
    else:
        train = lambda first: training_batches(run.data, settings.seed, first, settings.epochs)  # noqa: E731
        validation, fitted = eval_batches(run.data), model
    _compile(run, fitted, settings.learning_rate, settings.epochs)
    _fit_phase(run, fitted, train, validation, "head", settings.epochs)
    model.save_weights(head_done + ".partial.weights.h5")
    os.replace(head_done + ".partial.weights.h5", head_done)
    return round(time.perf_counter() - start, 2)


def fine_tune(run: TrainingRun) -> tuple[float | None, list[str]]:
    """The fine-tune phase: the layers ``settings.unfreeze`` picks trained for
    ``fine_tune_epochs`` at ``fine_tune_learning_rate`` (BatchNormalization stays frozen on a
    pretrained base), with the phase seed ``settings.seed + 1``.

    Returns:
        ``(seconds, unfrozen layer names)``; ``(None, [])`` when ``fine_tune_epochs`` is 0.

    Raises:
        ValueError: ``unfreeze`` names no layer of the base (see ``settings.select_unfrozen``).
    """
    settings = run.settings
    if settings.fine_tune_epochs == 0:
        return None, []
    start = time.perf_counter()
    pretrained = is_pretrained(settings)
    with run.strategy.scope():
        unfrozen = set_trainable(run.classifier.base, settings.unfreeze, keep_batchnorm_frozen=pretrained)
    # A changed `trainable` only takes effect when the model is compiled again.
    _compile(run, run.classifier.model, settings.fine_tune_learning_rate, settings.fine_tune_epochs)
    bn = "BatchNormalization frozen" if pretrained else "BatchNormalization trained (no pretrained statistics)"
    print(f"finetune: fine-tune phase: {len(unfrozen)} base layers unfrozen ({settings.unfreeze}), {bn}", flush=True)
    _fit_phase(
        run, run.classifier.model,
        lambda first: training_batches(run.data, settings.seed + 1, first, settings.fine_tune_epochs),
        eval_batches(run.data), "fine_tune", settings.fine_tune_epochs,
    )
    return round(time.perf_counter() - start, 2), unfrozen


def read_history(checkpoint_dir: str) -> list[dict[str, Any]]:
    """The epoch log of every phase so far: one row per completed epoch, ``phase``, ``epoch``
    (1-based within the phase), ``lr`` and Keras' logs (``loss``, ``accuracy``, ``val_*``)."""
    path = os.path.join(checkpoint_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _compile(run: TrainingRun, model: Any, peak: float, epochs: int) -> None:
    """Compiles ``model`` with the settings' optimizer and this phase's learning-rate schedule."""
    with run.strategy.scope():
        lr = make_schedule(run.settings, peak, epochs, run.data.steps_per_epoch)
        model.compile(optimizer=make_optimizer(run.settings, lr), loss=run.classifier.loss, metrics=["accuracy"],
                      jit_compile=run.settings.xla)


def _fit_phase(run: TrainingRun, model: Any, train: Callable[[int], Any], validation: Any, phase: str, epochs: int) -> None:
    """One ``fit`` call with backups, early stopping, progress lines and the epoch log.

    ``train`` is a callable ``first_epoch -> dataset`` yielding the batches of the epochs from
    ``first_epoch`` on (see ``data.epoch_ordered``), so a resumed phase sees the batches an
    uninterrupted run would.
    """
    import keras

    settings = run.settings
    backup_dir = os.path.join(run.checkpoint_dir, phase)
    # BackupAndRestore restores the weights and the epoch (not the optimizer's moments) from
    # its own record; the data must start at that same epoch.
    first = 0
    if os.path.exists(os.path.join(backup_dir, "training_metadata.json")):
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            first = int(json.load(f)["epoch"])
        print(f"finetune: {phase} phase: resuming after epoch {first} of {epochs} from {backup_dir}", flush=True)
    backup = keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=True)
    # Order matters: the backup is written before the epoch is logged and announced.
    callbacks = [backup, _history_callback(os.path.join(run.checkpoint_dir, HISTORY_FILE), phase),
                 _progress_callback(run.data.num_train, phase),
                 keras.callbacks.TensorBoard(os.path.join(run.tensorboard_dir, phase), profile_batch=0)]
    if settings.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=settings.early_stopping_patience, restore_best_weights=True
        ))
    if settings.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2, min_lr=1e-7))
    model.fit(
        train(first),
        validation_data=validation,
        epochs=epochs,
        steps_per_epoch=run.data.steps_per_epoch,
        class_weight=run.data.class_weight,
        # The batches are already in their seeded order (data.epoch_ordered); Keras ignores
        # shuffle for a dataset but warns about its default True in every step's log.
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def _progress_callback(num_examples: int, phase: str) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):
        """Prints one line per epoch: the step, phase and epoch, loss, accuracy, eval metrics,
        learning rate, the epoch's seconds and images/s."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._start
            print(
                f"finetune: {phase} epoch {epoch + 1}/{self.params['epochs']}: loss {logs.get('loss', float('nan')):.4f} "
                f"accuracy {logs.get('accuracy', float('nan')):.4f} "
                f"eval_loss {logs.get('val_loss', float('nan')):.4f} eval_accuracy {logs.get('val_accuracy', float('nan')):.4f} "
                f"lr {_current_lr(self.model):.3g} ({seconds:.1f} s, {num_examples / seconds:.0f} images/s)",
                flush=True,
            )

    return EpochProgress()


def _current_lr(model: Any) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _history_callback(path: str, phase: str) -> Any:
    """Appends each finished epoch to a JSON-lines file, which survives a restart (Keras'
    History only knows the epochs of the current ``fit`` call)."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {"phase": phase, "epoch": epoch + 1, "lr": _current_lr(self.model), **{k: float(v) for k, v in (logs or {}).items()}}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

    return EpochLog()
