"""The finetune step's input pipeline (components.finetune.data): cache decision, epoch order."""

import numpy as np
import pytest

from components.finetune import FinetuneSettings
from components.finetune import data as ft_data


@pytest.mark.parametrize(
    "num_examples, image_size, expected",
    [
        (0, 96, True),
        (9_709, 96, True),  # 9,709 x 96 x 96 x 3 x 4 bytes = 1,073,737,728 < 1 GiB
        (9_710, 96, False),  # 1,073,848,320 bytes
        (1_783, 224, True),  # 1,073,565,696 bytes
        (1_784, 224, False),  # 1,074,167,808 bytes
        (1, 16_384, False),  # one 16k image is 3 GiB of float pixels
    ],
)
def test_cache_in_memory_table(num_examples, image_size, expected):
    assert ft_data.cache_in_memory(num_examples, image_size) is expected


@pytest.mark.parametrize(
    "counts, expected",
    [([10, 10], {0: 1.0, 1: 1.0}), ([30, 10], {0: 40 / 60, 1: 40 / 20}), ([1, 0, 3], {0: 4 / 3, 1: 0.0, 2: 4 / 9})],
)
def test_balanced_class_weights_table(counts, expected):
    assert ft_data.balanced_class_weights(counts) == pytest.approx(expected)


def _labels(ds):
    return [y.argmax(axis=1).tolist() for _, y in ds.as_numpy_iterator()]


def _pairs(n, x_of=float):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((np.array([x_of(i) for i in range(n)], "float32"), np.arange(n, dtype="int64")))


def test_epoch_order_depends_only_on_seed_and_epoch():
    """Every epoch is reshuffled, each the same whatever epoch the dataset starts at (a resumed
    run), and the same for pixels and features."""
    full = _labels(ft_data.epoch_ordered(_pairs(10), 4, seed=3, first_epoch=0, epochs=4, num_classes=10))
    assert len(full) == 4 * 3  # 3 batches per epoch (4, 4, 2): batches never straddle epochs
    epochs = [sum(full[i:i + 3], []) for i in range(0, 12, 3)]
    assert all(sorted(e) == list(range(10)) for e in epochs) and epochs[0] != list(range(10)) and epochs[1] != epochs[2]
    resumed = _labels(ft_data.epoch_ordered(_pairs(10), 4, seed=3, first_epoch=2, epochs=4, num_classes=10))
    assert resumed == full[6:]
    other_values = _labels(ft_data.epoch_ordered(_pairs(10, lambda i: -7.0 * i), 4, seed=3, first_epoch=0, epochs=4, num_classes=10))
    assert other_values == full
    other_seed = _labels(ft_data.epoch_ordered(_pairs(10), 4, seed=4, first_epoch=0, epochs=4, num_classes=10))
    assert other_seed != full


def test_no_epoch_left_is_refused():
    with pytest.raises(ValueError, match="no epoch left to train: first_epoch 3 >= epochs 3"):
        ft_data.epoch_ordered(_pairs(4), 2, 0, 3, 3, 4)


def test_prepare_data_caches_when_train_and_eval_fit(preprocessed, monkeypatch):
    settings = FinetuneSettings(base_weights="none", batch_size=8, seed=1)
    data = ft_data.prepare_data(preprocessed["examples"], preprocessed["transform"], settings, replicas=2)
    assert data.labels == ["5", "6", "7", "8", "9"] and data.image_size == 32
    counts = preprocessed["stats"]["class_counts"]
    assert (data.num_train, data.num_eval) == (sum(counts["train"].values()), sum(counts["eval"].values()))
    assert data.batch_size == 16 and data.steps_per_epoch == -(-data.num_train // 16)
    assert data.cache is True and data.class_weight is None
    batches = list(ft_data.training_batches(data, 1, 0, 2).as_numpy_iterator())
    assert len(batches) == 2 * data.steps_per_epoch
    x, y = batches[0]
    assert x.shape == (16, 32, 32, 3) and x.dtype == np.float32 and y.shape == (16, 5) and y.dtype == np.float32
    # The decision counts the eval split too: a limit the train split alone fits under.
    image_bytes = 32 * 32 * 3 * 4
    monkeypatch.setattr(ft_data, "MEMORY_CACHE_LIMIT_BYTES", (data.num_train + data.num_eval) * image_bytes)
    uncached = ft_data.prepare_data(preprocessed["examples"], preprocessed["transform"], settings, replicas=2)
    assert uncached.cache is False


def test_records_whose_feature_map_is_written_in_another_order_read_the_same(tmp_path):
    """Regression (new-user review, 2026-12-05): tf.Transform writes each record's feature map in
    no fixed order, so two preprocess runs of the same images gave other record bytes, another
    fingerprint ("the data differs") and other batches: a restart never resumed. The records are
    read in a canonical byte form; their digest and their order no longer depend on it."""
    import tensorflow as tf

    from components.finetune.data import canonical_bytes, read_split

    def example(**features):
        return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()

    def feature_maps(i):
        image = tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"pixels {i}".encode()]))
        label = tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"class {i % 2}".encode()]))
        # Concatenated messages merge: the same Example with its two map entries in either order.
        return example(image=image) + example(label=label), example(label=label) + example(image=image)

    pairs = [feature_maps(i) for i in range(6)]
    assert all(a != b and canonical_bytes(a) == canonical_bytes(b) for a, b in pairs)
    read = {}
    for which in (0, 1):
        path = str(tmp_path / f"train-{which}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for pair in pairs:
                writer.write(pair[which])
        for canonical in (True, False):
            split = read_split([path], canonical)
            read[which, canonical] = (split.digest, list(split.records.as_numpy_iterator()))
    assert read[0, True] == read[1, True] and read[0, False][0] == read[1, False][0]
    parsed = tf.train.Example.FromString(read[0, True][1][0])
    assert sorted(parsed.features.feature) == ["image", "label"]
