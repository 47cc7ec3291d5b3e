"""The finetune step's backups: an exact resume after a restart, bound to the run's inputs.

After epoch e of a phase, what decides the rest of the run is:

* every variable of the model being fitted, seed-generator states included (dropout and
  augmentation draw their masks from them; ``save_weights`` leaves them out);
* the optimizer's variables: its iteration count (the position of a learning-rate schedule),
  its learning rate (reduce-on-plateau lowers it) and its moments (Adam's ``m`` and ``v``);
* the state of early stopping (wait, best value, best weights) and of reduce-on-plateau;
* the phase and e itself: epoch e + 1 draws the batches ``data.epoch_ordered`` gives it;
* the epoch log so far.

A snapshot holds all of it in one ``.npz`` file written to a temporary name and renamed, so a
kill leaves the previous snapshot or the new one, never half of one. Files in the checkpoint
folder:

* ``run.json``: the inputs the backups belong to (``run_inputs``): the data fingerprint, the
  settings, the content of a local weights file, replicas and precision. ``bind`` compares it
  with the current run's inputs; on any difference it removes the backups and says why.
* ``<phase>.backup.npz``: after each completed epoch of the phase.
* ``<phase>.complete.npz``: once the phase has completed: the whole classifier's variables.
* ``history.jsonl``: the epoch log, rewritten from each snapshot.
* ``train_features.npy`` / ``eval_features.npy`` (and ``*.labels.npy``): the fast path's features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any

from components import storage
from components.finetune.settings import FinetuneSettings

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
BACKUP_SUFFIX = ".backup.npz"
COMPLETE_SUFFIX = ".complete.npz"
# Settings that do not change what is computed: where backups go, and the accelerator request
# (what it changes, the number of replicas and the precision, is recorded as such).
UNBOUND_SETTINGS = ("checkpoint_dir", "accelerator_type", "accelerator_count")
# Files an older version left (keras.callbacks.BackupAndRestore folders, the head's weights):
# their inputs are unknown, so they are never loaded.
_LEGACY = ("head.weights.h5", "head", "fine_tune")
_FEATURES = ("train_features.npy", "train_features.labels.npy", "eval_features.npy", "eval_features.labels.npy")


def backup_path(checkpoint_dir: str, phase: str) -> str:
    """The per-epoch snapshot of ``phase`` (``head`` or ``fine_tune``)."""
    return os.path.join(checkpoint_dir, phase + BACKUP_SUFFIX)


def complete_path(checkpoint_dir: str, phase: str) -> str:
    """The snapshot written once ``phase`` has completed."""
    return os.path.join(checkpoint_dir, phase + COMPLETE_SUFFIX)


def file_sha256(path: str) -> str:
    """SHA-256 (hex) of a local file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_inputs(settings: FinetuneSettings, data_fingerprint: str, replicas: int, precision: str) -> dict[str, Any]:
    """What a backup is bound to: everything that changes what training computes.

    Args:
        settings: The step's settings; all but ``UNBOUND_SETTINGS`` are recorded.
        data_fingerprint: ``data.TrainingData.fingerprint`` (the records in training order,
            the labels, the image size).
        replicas: Replicas of the distribution strategy (the global batch's factor).
        precision: The Keras precision policy's name (``float32``, ``mixed_float16``).

    Returns:
        A JSON-able dict: ``data_fingerprint``, ``base_weights_sha256`` (the content of a local
        weights file; None for ``imagenet``, ``none`` and ``gs://`` sources, recorded by name),
        ``settings``, ``replicas``, ``precision``.
    """
    chosen = {k: v for k, v in dataclasses.asdict(settings).items() if k not in UNBOUND_SETTINGS}
    source = storage.strip_file_scheme(settings.base_weights)
    local_file = source.lower() not in ("imagenet", "none") and not storage.is_gcs(source) and os.path.isfile(source)
    return {
        "data_fingerprint": data_fingerprint,
        "base_weights_sha256": file_sha256(source) if local_file else None,
        "settings": json.loads(json.dumps(chosen)),
        "replicas": replicas,
        "precision": precision,
    }


def describe_difference(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """One line naming what differs between two ``run_inputs`` (at most 5 settings shown)."""
    parts = []
    if recorded.get("data_fingerprint") != current["data_fingerprint"]:
        parts.append(f"the data differs (fingerprint {str(recorded.get('data_fingerprint'))[:12]}, now {current['data_fingerprint'][:12]})")
    if recorded.get("base_weights_sha256") != current["base_weights_sha256"]:
        parts.append("the base weights file's content differs")
    old, new = recorded.get("settings") or {}, current["settings"]
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        parts.append("settings differ: " + ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
    for key in ("replicas", "precision"):
        if recorded.get(key) != current[key]:
            parts.append(f"{key} {recorded.get(key)!r} -> {current[key]!r}")
    return "; ".join(parts) or "its record of inputs is not the current one"


def _owned_entries(checkpoint_dir: str) -> list[str]:
    names = [RUN_FILE, HISTORY_FILE, *_FEATURES, *_LEGACY]
    names += [n for n in os.listdir(checkpoint_dir) if n.endswith((BACKUP_SUFFIX, COMPLETE_SUFFIX, ".partial"))]
    return [os.path.join(checkpoint_dir, n) for n in names if os.path.lexists(os.path.join(checkpoint_dir, n))]


def bind(checkpoint_dir: str, inputs: dict[str, Any]) -> str | None:
    """Makes ``checkpoint_dir`` hold backups of ``inputs`` only.

    Backups recorded for the same inputs are kept (the run resumes from them). Backups of other
    inputs, or without a record of their inputs, are removed: they are never loaded. Files this
    module does not own are left alone.

    Args:
        checkpoint_dir: The step's checkpoint folder (created when missing).
        inputs: ``run_inputs`` of the current run.

    Returns:
        None when nothing was removed; else one line saying why the run starts fresh.
    """
    os.makedirs(checkpoint_dir, exist_ok=True)
    record = os.path.join(checkpoint_dir, RUN_FILE)
    owned = [p for p in _owned_entries(checkpoint_dir) if p != record]
    reason = None
    if os.path.exists(record):
        try:
            with open(record) as f:
                recorded = json.load(f)
        except (OSError, ValueError) as e:
            recorded, reason = None, f"its {RUN_FILE} is unreadable ({e})"
        if recorded is not None and recorded != inputs:
            reason = describe_difference(recorded, inputs)
    elif owned:
        reason = f"it holds backups without a record of their inputs ({RUN_FILE}; written by an older version)"
    if reason is not None:
        for path in _owned_entries(checkpoint_dir):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    if reason is not None or not os.path.exists(record):
        _write_text(record, json.dumps(inputs, indent=2, sort_keys=True))
    return reason


@dataclasses.dataclass
class Snapshot:
    """One backup, as read back.

    Attributes:
        path: The file it was read from.
        phase: ``head`` or ``fine_tune``.
        epoch: Completed epochs of the phase.
        complete: Whether the phase has completed (a ``.complete.npz``).
        stopped: Whether early stopping ended the phase at ``epoch``.
        history: The epoch log so far (both phases), rows as in ``history.jsonl``.
        callbacks: ``{"early_stopping": {...}, "plateau": {...}}`` states (absent when unused).
        model: The fitted model's variables as arrays, in ``model.variables`` order.
        optimizer: The optimizer's variables, or None (a completed phase keeps none).
        best_weights: Early stopping's best weights (``model.get_weights()`` order), or None.
    """

    path: str
    phase: str
    epoch: int
    complete: bool
    stopped: bool
    history: list[dict[str, Any]]
    callbacks: dict[str, Any]
    model: list[Any]
    optimizer: list[Any] | None
    best_weights: list[Any] | None


def save_snapshot(
    path: str,
    phase: str,
    epoch: int,
    model: Any,
    history: list[dict[str, Any]],
    complete: bool = False,
    stopped: bool = False,
    callbacks: dict[str, Any] | None = None,
    best_weights: list[Any] | None = None,
) -> None:
    """Writes a snapshot of ``model`` (its variables, and its optimizer's unless ``complete``)
    to ``path`` atomically (a temporary file, flushed to disk, then renamed)."""
    import keras
    import numpy as np

    arrays = {f"model_{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(model.variables)}
    optimizer = getattr(model, "optimizer", None)
    if not complete and optimizer is not None and optimizer.built:
        arrays.update({f"optimizer_{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(optimizer.variables)})
    for i, w in enumerate(best_weights or []):
        arrays[f"best_{i}"] = np.asarray(w)
    meta = {"phase": phase, "epoch": epoch, "complete": complete, "stopped": stopped, "history": history,
            "callbacks": callbacks or {}, "model": len(model.variables), "has_best_weights": best_weights is not None}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_snapshot(path: str) -> Snapshot | None:
    """The snapshot at ``path``, or None when there is none.

    Raises:
        ValueError: the file is not a snapshot (names it).
    """
    import numpy as np

    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"backup {path!r} is not a finetune snapshot: {e}") from None

    def numbered(prefix: str) -> list[Any]:
        keys = sorted((k for k in arrays if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
        return [arrays[k] for k in keys]

    optimizer = numbered("optimizer_")
    return Snapshot(
        path=path, phase=meta["phase"], epoch=int(meta["epoch"]), complete=bool(meta["complete"]),
        stopped=bool(meta["stopped"]), history=meta["history"], callbacks=meta["callbacks"], model=numbered("model_"),
        optimizer=optimizer or None, best_weights=numbered("best_") if meta["has_best_weights"] else None,
    )


def assign(variables: list[Any], arrays: list[Any], what: str, path: str) -> None:
    """Assigns ``arrays`` to ``variables`` in order.

    Raises:
        ValueError: the counts or a shape differ (names the backup, the variable and both shapes).
    """
    if len(variables) != len(arrays):
        raise ValueError(f"backup {path!r} holds {len(arrays)} {what} variables, the run has {len(variables)}")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise ValueError(f"backup {path!r} does not fit {what} variable {v.path}: shape {tuple(a.shape)}, expected {tuple(v.shape)}")
    for v, a in zip(variables, arrays):
        v.assign(a)


def restore(snapshot: Snapshot, model: Any) -> None:
    """Puts ``snapshot``'s variables into ``model`` and, when it has them, into its optimizer
    (built first on the model's trainable variables, as ``fit`` would build it)."""
    assign(model.variables, snapshot.model, "model", snapshot.path)
    if snapshot.optimizer is not None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        assign(model.optimizer.variables, snapshot.optimizer, "optimizer", snapshot.path)


def write_history(checkpoint_dir: str, rows: list[dict[str, Any]]) -> None:
    """Rewrites ``history.jsonl`` with ``rows`` (one JSON object a line), atomically."""
    _write_text(os.path.join(checkpoint_dir, HISTORY_FILE), "".join(json.dumps(r) + "\n" for r in rows))


def read_history(checkpoint_dir: str) -> list[dict[str, Any]]:
    """The epoch log of every phase so far: one row per completed epoch, ``phase``, ``epoch``
    (1-based within the phase), ``lr`` and Keras' logs (``loss``, ``accuracy``, ``val_*``)."""
    path = os.path.join(checkpoint_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_text(path: str, text: str) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
