"""The benchmark's own measuring helpers (the rows themselves run in `make bench`)."""

import subprocess
import sys

from bench.workers import peak_rss_mib


def test_peak_rss_of_a_worker_is_its_own_not_its_parents():
    # Regression: the finetune memory row read getrusage(RUSAGE_SELF).ru_maxrss in a worker the
    # bench runner had started, and Linux carries ru_maxrss across exec: both dataset sizes
    # reported the runner's 2,990 MiB. A parent holding 600 MiB starts a child that holds little.
    ballast = bytearray(600 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    assert peak_rss_mib() > 600
    code = "import resource; from bench.workers import peak_rss_mib; print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    own, carried = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert own < 200, own
    assert carried > 600  # what the old measurement read
    del ballast


def test_input_pipeline_row_drives_the_steps_training_input(preprocessed, monkeypatch):
    # Regression (issue 10, item 8): the row timed finetune.make_dataset, which the step never
    # called, and decided the memory cache from the train split alone (the step: train + eval).
    import os

    from bench import rows_training
    from components.finetune import data as ft_data
    from components.finetune import training

    assert rows_training.finetune_data.training_batches is training.training_batches
    folder = os.path.dirname(preprocessed["examples"])
    data, batches = rows_training.product_training_input(folder)
    assert data.cache is ft_data.cache_in_memory(data.num_train + data.num_eval, data.image_size) is True
    assert data.batch_size == rows_training.BATCH_SIZE
    first = next(batches.as_numpy_iterator())
    assert first[0].shape == (rows_training.BATCH_SIZE, 32, 32, 3) and first[1].shape == (rows_training.BATCH_SIZE, 5)
    # A limit the train split alone fits under but train + eval do not: the row follows the step.
    monkeypatch.setattr(ft_data, "MEMORY_CACHE_LIMIT_BYTES", (data.num_train + data.num_eval) * 32 * 32 * 3 * 4)
    assert ft_data.cache_in_memory(data.num_train, data.image_size) is True
    assert rows_training.product_training_input(folder)[0].cache is False
