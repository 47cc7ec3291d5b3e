"""Exact resume: a finetune step killed at an epoch boundary and restarted ends with the per-epoch
losses of an uninterrupted run; backups are bound to the run's inputs.

Tolerance: each epoch's loss within 1e-6 (absolute) of the uninterrupted run's, and the final
head weights equal within 1e-6. On this project's CPU machines the sequences were bit-identical
(difference 0.0): a backup restores every variable (random-seed states included), the optimizer's
state and the epoch, and the batches of an epoch depend only on the seed and the epoch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from components import artifacts
from components.finetune import FinetuneSettings, backup, run_finetune_step

TOLERANCE = 1e-6


def _settings(weights, **overrides):
    # Two short phases with everything that carries state across an epoch boundary: dropout
    # (seed-generator state), Adam's moments and a cosine schedule (the optimizer's iteration).
    kw = dict(base_model="mobilenet_v2", base_weights=weights, width_multiplier=0.35, dropout=0.3, epochs=2,
              learning_rate=3e-3, fine_tune_epochs=2, fine_tune_learning_rate=3e-4, unfreeze="top:20", lr_schedule="cosine")
    return FinetuneSettings(**{**kw, **overrides})


def _losses(summary):
    return [(r["phase"], r["epoch"], r["loss"]) for r in summary["epochs"]]


def _head_kernel(model_dir):
    import keras

    return keras.models.load_model(os.path.join(model_dir, artifacts.KERAS_FILE)).get_layer("head_classifier").get_weights()[0]


def _assert_same_run(resumed, resumed_dir, straight, straight_dir):
    assert [l[:2] for l in _losses(resumed)] == [l[:2] for l in _losses(straight)]
    for (phase, epoch, a), (_, _, b) in zip(_losses(resumed), _losses(straight)):
        assert a == pytest.approx(b, abs=TOLERANCE), f"{phase} epoch {epoch}"
    np.testing.assert_allclose(_head_kernel(resumed_dir), _head_kernel(straight_dir), atol=TOLERANCE)


@pytest.fixture(scope="module")
def straight(preprocessed, backbone_weights, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("resume") / "straight")
    return out, run_finetune_step(preprocessed["examples"], preprocessed["transform"], out, _settings(backbone_weights[0]))


class _Killed(Exception):
    """Stands for the node going away right after a snapshot was written."""


def test_killed_at_every_kind_of_epoch_boundary_resumes_exactly(preprocessed, backbone_weights, straight, tmp_path, monkeypatch, capsys):
    """One run, killed three times: after head epoch 1, between the two phases (the head's
    completion snapshot written, no fine-tune epoch yet) and after fine-tune epoch 1; each
    restart continues from there, and the four attempts end where the uninterrupted run ends."""
    settings = _settings(backbone_weights[0], checkpoint_dir=str(tmp_path / "checkpoints"))
    args = (preprocessed["examples"], preprocessed["transform"], str(tmp_path / "model"))
    real = backup.save_snapshot
    for kill_after in [("head", 1, False), ("head", 2, True), ("fine_tune", 1, False)]:
        def killing(path, phase, epoch, model, history, complete=False, **kw):
            real(path, phase, epoch, model, history, complete=complete, **kw)
            if (phase, epoch, complete) == kill_after:
                raise _Killed(kill_after)

        monkeypatch.setattr(backup, "save_snapshot", killing)
        with pytest.raises(_Killed):
            run_finetune_step(*args, settings)
    monkeypatch.setattr(backup, "save_snapshot", real)
    capsys.readouterr()
    resumed = run_finetune_step(*args, settings)
    out = capsys.readouterr().out
    assert "finetune: head phase already complete" in out and "finetune: fine_tune phase: resuming after epoch 1 of 2" in out
    assert [l.split(":")[1].strip() for l in out.splitlines()
            if l.startswith(("finetune: head epoch", "finetune: fine_tune epoch"))] == ["fine_tune epoch 2/2"]
    _assert_same_run(resumed, args[2], *reversed(straight))
    print("uninterrupted vs killed 3x:", [(p, e, round(a, 6), round(b, 6)) for (p, e, a), (_, _, b) in zip(_losses(straight[1]), _losses(resumed))])


_KILLED_SCRIPT = """
import json, sys
from components.finetune import FinetuneSettings, run_finetune_step
run_finetune_step(sys.argv[1], sys.argv[2], sys.argv[3], FinetuneSettings(**json.loads(sys.argv[4])))
"""


def test_a_process_killed_between_the_phases_resumes_exactly(preprocessed, backbone_weights, straight, tmp_path, capsys):
    """SIGKILL, as a preempted node, as soon as the last head epoch is announced (its snapshot is
    on disk; the phase's completion snapshot may or may not be); the restarted step skips the
    head phase and its fine-tune epochs are those of the uninterrupted run."""
    settings = _settings(backbone_weights[0], checkpoint_dir=str(tmp_path / "checkpoints"))
    kw = {k: getattr(settings, k) for k in ("base_model", "base_weights", "width_multiplier", "dropout", "epochs", "learning_rate",
                                             "fine_tune_epochs", "fine_tune_learning_rate", "unfreeze", "lr_schedule", "checkpoint_dir")}
    args = [preprocessed["examples"], preprocessed["transform"], str(tmp_path / "model")]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, *args, json.dumps(kw)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if line.startswith("finetune: head epoch 2/2"):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training never reached head epoch 2"
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(args[2], artifacts.KERAS_FILE))

    capsys.readouterr()
    resumed = run_finetune_step(*args, settings)
    out = capsys.readouterr().out
    assert "finetune: head phase already complete" in out or "finetune: head phase: its last epoch was backed up after epoch 2 of 2" in out
    assert [l.split(":")[1].strip() for l in out.splitlines()
            if l.startswith(("finetune: head epoch", "finetune: fine_tune epoch"))] == ["fine_tune epoch 1/2", "fine_tune epoch 2/2"]
    _assert_same_run(resumed, args[2], *reversed(straight))


def test_a_restart_with_other_inputs_starts_fresh_and_says_why(preprocessed, backbone_weights, tmp_path, monkeypatch, capsys):
    """A checkpoint folder reused with other settings (or other data) is not loaded: the run
    says which inputs differ, removes the old backups and trains from the first epoch."""
    checkpoints = str(tmp_path / "checkpoints")
    args = (preprocessed["examples"], preprocessed["transform"])
    real = backup.save_snapshot

    def killing(path, phase, epoch, model, history, complete=False, **kw):
        real(path, phase, epoch, model, history, complete=complete, **kw)
        if complete:
            raise _Killed(phase)

    monkeypatch.setattr(backup, "save_snapshot", killing)
    with pytest.raises(_Killed):
        run_finetune_step(*args, str(tmp_path / "a"), _settings(backbone_weights[0], checkpoint_dir=checkpoints, fine_tune_epochs=0))
    monkeypatch.setattr(backup, "save_snapshot", real)
    assert os.path.exists(backup.complete_path(checkpoints, "head"))
    capsys.readouterr()
    summary = run_finetune_step(*args, str(tmp_path / "b"), _settings(backbone_weights[0], checkpoint_dir=checkpoints,
                                                                     fine_tune_epochs=0, dropout=0.1))
    out = capsys.readouterr().out
    assert f"checkpoint_dir {checkpoints}: starting fresh, its backups are not this run's: settings differ: dropout 0.3 -> 0.1" in out
    assert "already complete" not in out and "resuming" not in out
    assert [(r["phase"], r["epoch"]) for r in summary["epochs"]] == [("head", 1), ("head", 2)]
    with open(os.path.join(checkpoints, backup.RUN_FILE)) as f:
        assert json.load(f)["settings"]["dropout"] == 0.1


def test_the_data_fingerprint_ignores_the_order_beam_wrote_the_records_in(preprocessed, backbone_weights, tmp_path):
    """Preprocess run twice on the same images may write the same records in another order; the
    fingerprint (and with it the batches) is the same. Other records give another fingerprint."""
    from components.finetune.data import prepare_data

    import tensorflow as tf

    settings = _settings(backbone_weights[0])
    reordered = tmp_path / "examples"
    shutil.copytree(preprocessed["examples"], reordered)
    for split in ("train", "eval"):
        files = artifacts.split_files(str(reordered), split)
        records = [r for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]
        for f in files:
            os.remove(f)
        with tf.io.TFRecordWriter(os.path.join(str(reordered), split, "part-00000-of-00001.tfrecord")) as w:
            for r in reversed(records):
                w.write(r)
    original = prepare_data(preprocessed["examples"], preprocessed["transform"], settings)
    assert prepare_data(str(reordered), preprocessed["transform"], settings).fingerprint == original.fingerprint
    with tf.io.TFRecordWriter(os.path.join(str(reordered), "train", "part-00000-of-00001.tfrecord")) as w:
        for r in records[1:]:  # the eval split's records, one fewer, as the train split
            w.write(r)
    assert prepare_data(str(reordered), preprocessed["transform"], settings).fingerprint != original.fingerprint
