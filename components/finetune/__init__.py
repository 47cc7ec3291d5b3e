"""The finetune step: a pretrained base model under a new classification head, the standard recipes.

Entry point: ``run_finetune_step(examples_dir, transform_graph_dir, model_dir, settings,
report_path=None)`` (``step``), called alike by the KFP component, the tests and the bench.

The recipes follow Keras' transfer-learning guide (https://keras.io/guides/transfer_learning/)
and the TensorFlow fine-tuning tutorial:

1. **Head phase**: the base model is frozen and a new head (pooling, optional dense layers,
   dropout, softmax) is trained. When nothing random runs before the base (no augmentation), the
   base's outputs are computed once and the head trains on them (``fast_path``): the same
   result as ``model.fit`` on images, without a forward pass of the base per epoch.
2. **Fine-tune phase** (``fine_tune_epochs > 0``): the top of the base is unfrozen (``unfreeze``)
   and training continues at a lower learning rate, after recompiling (``trainable`` changes
   only take effect on compile).

The base is always called with ``training=False`` and its BatchNormalization layers stay frozen,
also when unfrozen: their moving statistics belong to the pretraining data and must not drift on
a small dataset (Keras guide, "BatchNormalization layers").

Input: the split examples and the tf.Transform graph of the preprocess step; the graph runs in
the tf.data input pipeline here and inside the exported serving signature.

Output folder (the KFP ``Model`` artifact; names from ``components.artifacts``):
  * ``model.keras``: the Keras model (input: transformed pixels), for further fine-tuning.
  * ``serving/``: a SavedModel whose ``serving_default`` signature takes raw encoded image bytes
    (see ``export.save_serving_model``).
  * ``training.json``: settings, labels, per-epoch history (with ``phase`` and ``lr``), timings.
  * ``training.md``: the curves as a table, for the KFP UI (also written to ``report_path``).
  * ``tensorboard/``: TensorBoard logs.
  * ``checkpoints/`` (or ``checkpoint_dir``): per-epoch backups bound to the run's inputs; a
    restarted step resumes from the last completed epoch in the state it had there (``backup``,
    ``run_finetune_step``).

Modules: ``settings`` (``FinetuneSettings`` and pure decisions), ``data`` (examples ->
``tf.data``), ``model`` (base, weights, head, freezing, optimizer), ``training`` (devices, the two
phases), ``backup`` (snapshots for an exact resume, bound to the run's inputs), ``fast_path``
(features computed once), ``export`` (Keras and serving models, training
record), ``step`` (the entry point).
"""

from components.finetune.settings import FinetuneSettings, settings_from_parameters
from components.finetune.step import run_finetune_step

__all__ = ["FinetuneSettings", "run_finetune_step", "settings_from_parameters"]
