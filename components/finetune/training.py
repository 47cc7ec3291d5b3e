"""The finetune step's training: devices, the head phase, the fine-tune phase, backups, epoch log.

Each phase is one ``fit`` call with a snapshot after every epoch (``backup``: the model's
variables with their random-seed states, the optimizer's, early stopping's and
reduce-on-plateau's state, the epoch log), progress lines, TensorBoard logs and optional early
stopping. A completed phase leaves ``<phase>.complete.npz``, so a restarted step skips it; an
interrupted phase resumes after its last completed epoch, in the state the uninterrupted run had
there.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time
from typing import Any, Callable

from components.finetune import backup, fast_path
from components.finetune.data import TrainingData, eval_batches, training_batches
from components.finetune.model import Classifier, head_model, make_optimizer, make_schedule, set_trainable
from components.finetune.settings import FinetuneSettings, fast_path_applies, is_pretrained


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What both phases share.

    Attributes:
        settings: The step's settings.
        strategy: The ``tf.distribute`` strategy (``configure_devices``).
        data: The step's datasets (``data.prepare_data``).
        classifier: The base, the model and the loss (``model.build_model``).
        checkpoint_dir: Snapshots, the epoch log, the record of the inputs they belong to and
            the fast path's features (``backup``).
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
        attempt completed it (its state is loaded from ``head.complete.npz``).
    """
    settings, model = run.settings, run.classifier.model
    if settings.epochs == 0:
        return None
    if _load_completed(run, "head"):
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
    return round(time.perf_counter() - start, 2)


def fine_tune(run: TrainingRun) -> tuple[float | None, list[str]]:
    """The fine-tune phase: the layers ``settings.unfreeze`` picks trained for
    ``fine_tune_epochs`` at ``fine_tune_learning_rate`` (BatchNormalization stays frozen on a
    pretrained base), with the phase seed ``settings.seed + 1``.

    Returns:
        ``(seconds, unfrozen layer names)``; ``(None, [])`` when ``fine_tune_epochs`` is 0;
        ``(None, names)`` when a previous attempt completed the phase.

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
    if _load_completed(run, "fine_tune"):
        return None, unfrozen
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


def _load_completed(run: TrainingRun, phase: str) -> bool:
    """Loads a completed phase's state (the whole classifier's variables and the epoch log)
    from the checkpoint folder; False when the phase has not completed."""
    snapshot = backup.load_snapshot(backup.complete_path(run.checkpoint_dir, phase))
    if snapshot is None:
        return False
    print(f"finetune: {phase} phase already complete, loading {snapshot.path}", flush=True)
    backup.assign(run.classifier.model.variables, snapshot.model, "model", snapshot.path)
    backup.write_history(run.checkpoint_dir, snapshot.history)
    return True


def _compile(run: TrainingRun, model: Any, peak: float, epochs: int) -> None:
    """Compiles ``model`` with the settings' optimizer and this phase's learning-rate schedule."""
    with run.strategy.scope():
        lr = make_schedule(run.settings, peak, epochs, run.data.steps_per_epoch)
        model.compile(optimizer=make_optimizer(run.settings, lr), loss=run.classifier.loss, metrics=["accuracy"],
                      jit_compile=run.settings.xla)


def _fit_phase(run: TrainingRun, model: Any, train: Callable[[int], Any], validation: Any, phase: str, epochs: int) -> None:
    """One ``fit`` call with a snapshot after every epoch, early stopping, progress lines and
    the epoch log; resumed from the phase's last snapshot when there is one. Ends by writing
    the phase's completion snapshot (the whole classifier's variables).

    ``train`` is a callable ``first_epoch -> dataset`` yielding the batches of the epochs from
    ``first_epoch`` on (see ``data.epoch_ordered``), so a resumed phase sees the batches an
    uninterrupted run would.
    """
    import keras

    settings = run.settings
    path = backup.backup_path(run.checkpoint_dir, phase)
    snapshot = backup.load_snapshot(path)
    rows = snapshot.history if snapshot else backup.read_history(run.checkpoint_dir)
    early_stopping = plateau = None
    if settings.early_stopping_patience:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=settings.early_stopping_patience, restore_best_weights=True
        )
    if settings.lr_schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2, min_lr=1e-7)
    first = 0
    if snapshot is not None:
        with run.strategy.scope():
            backup.restore(snapshot, model)
        backup.write_history(run.checkpoint_dir, rows)
        first = snapshot.epoch
        if snapshot.stopped or first >= epochs:
            # The kill came after the phase's last snapshot: finish as fit would have.
            why = "early stopping ended it" if snapshot.stopped else "its last epoch was backed up"
            print(f"finetune: {phase} phase: {why} after epoch {first} of {epochs}; completing the phase from {path}", flush=True)
            if snapshot.stopped and early_stopping is not None and snapshot.best_weights is not None:
                model.set_weights(snapshot.best_weights)
            _complete_phase(run, phase, rows)
            return
        print(f"finetune: {phase} phase: resuming after epoch {first} of {epochs} from {path}", flush=True)
    # Order matters: the epoch's row is taken before reduce-on-plateau adds to the logs, the
    # snapshot after early stopping and reduce-on-plateau have updated their state, and the
    # progress line only once the snapshot is on disk.
    callbacks = [_row_callback(rows, phase)] + [c for c in (early_stopping, plateau) if c is not None] + [
        _backup_callback(path, phase, run.checkpoint_dir, rows, early_stopping, plateau, snapshot),
        _progress_callback(run.data.num_train, phase),
        keras.callbacks.TensorBoard(os.path.join(run.tensorboard_dir, phase), profile_batch=0),
    ]
    model.fit(
        train(first),
        validation_data=validation,
        epochs=epochs,
        initial_epoch=first,
        steps_per_epoch=run.data.steps_per_epoch,
        class_weight=run.data.class_weight,
        # The batches are already in their seeded order (data.epoch_ordered); Keras ignores
        # shuffle for a dataset but warns about its default True in every step's log.
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    _complete_phase(run, phase, rows)


def _complete_phase(run: TrainingRun, phase: str, rows: list[dict[str, Any]]) -> None:
    """Writes the phase's completion snapshot, then drops its per-epoch snapshot."""
    backup.save_snapshot(backup.complete_path(run.checkpoint_dir, phase), phase, len([r for r in rows if r["phase"] == phase]),
                         run.classifier.model, rows, complete=True)
    backup.write_history(run.checkpoint_dir, rows)
    if os.path.exists(backup.backup_path(run.checkpoint_dir, phase)):
        os.remove(backup.backup_path(run.checkpoint_dir, phase))


def _row_callback(rows: list[dict[str, Any]], phase: str) -> Any:
    """Appends each finished epoch's row to ``rows``: ``phase``, ``epoch`` (1-based), ``lr`` and
    Keras' logs (Keras' History only knows the epochs of the current ``fit`` call)."""
    import keras

    class EpochRow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows.append({"phase": phase, "epoch": epoch + 1, "lr": _current_lr(self.model),
                         **{k: float(v) for k, v in (logs or {}).items()}})

    return EpochRow()


def _backup_callback(path: str, phase: str, checkpoint_dir: str, rows: list[dict[str, Any]], early_stopping: Any,
                     plateau: Any, snapshot: backup.Snapshot | None) -> Any:
    """The callback that writes a phase's snapshot after every epoch (``backup``).

    Args:
        path: The phase's snapshot file.
        phase: ``head`` or ``fine_tune``.
        checkpoint_dir: Where ``history.jsonl`` is rewritten.
        rows: The epoch log so far (``_row_callback`` appends to it).
        early_stopping, plateau: The phase's ``EarlyStopping`` / ``ReduceLROnPlateau``, or None:
            their state goes into each snapshot and, on resume, comes back from ``snapshot``
            after their own ``on_train_begin`` has reset it.
        snapshot: The snapshot the phase resumes from, or None.
    """
    import keras

    class EpochBackup(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if snapshot is None:
                return
            state = snapshot.callbacks
            if early_stopping is not None and "early_stopping" in state:
                for key, value in state["early_stopping"].items():
                    setattr(early_stopping, key, value)
                early_stopping.best_weights = snapshot.best_weights
            if plateau is not None and "plateau" in state:
                for key, value in state["plateau"].items():
                    setattr(plateau, key, value)

        def on_epoch_end(self, epoch, logs=None):
            state: dict[str, Any] = {}
            if early_stopping is not None:
                state["early_stopping"] = {k: _plain(getattr(early_stopping, k)) for k in ("wait", "stopped_epoch", "best", "best_epoch")}
            if plateau is not None:
                state["plateau"] = {k: _plain(getattr(plateau, k)) for k in ("wait", "best", "cooldown_counter")}
            backup.save_snapshot(
                path, phase, epoch + 1, self.model, rows, stopped=bool(self.model.stop_training), callbacks=state,
                best_weights=early_stopping.best_weights if early_stopping is not None else None,
            )
            backup.write_history(checkpoint_dir, rows)

    return EpochBackup()


def _plain(value: Any) -> Any:
    """A callback's state value as JSON: NumPy and Keras scalars become Python numbers."""
    if value is None or isinstance(value, (bool, str)):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


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
