import glob
import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from components import artifacts
from components import image_files, sources
from components import preprocess as pre


def _noise_png(size=64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png(value: int, size=(8, 8), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def test_assign_split_is_deterministic_and_follows_the_fractions():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    splits = [pre.assign_split(h, 0.15, 0.15) for h in hashes]
    assert splits == [pre.assign_split(h, 0.15, 0.15) for h in hashes]
    shares = {s: splits.count(s) / len(splits) for s in artifacts.SPLITS}
    assert shares["test"] == pytest.approx(0.15, abs=0.01)
    assert shares["eval"] == pytest.approx(0.15, abs=0.01)
    assert shares["train"] == pytest.approx(0.70, abs=0.01)
    # A different salt draws a different split.
    assert splits != [pre.assign_split(h, 0.15, 0.15, salt="other") for h in hashes]


def test_split_of_existing_images_does_not_change_when_data_is_added():
    old = [hashlib.sha256(f"old{i}".encode()).hexdigest() for i in range(500)]
    before = {h: pre.assign_split(h, 0.1, 0.2) for h in old}
    new = [hashlib.sha256(f"new{i}".encode()).hexdigest() for i in range(500)]
    after = {h: pre.assign_split(h, 0.1, 0.2) for h in old + new}
    assert all(after[h] == s for h, s in before.items())


def test_discover_ignores_junk_and_lists_non_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(_png(1))
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "__MACOSX" / "cat").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cat" / "._a.png").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "b.png").write_bytes(_png(2))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "b.JPG").write_bytes(b"not really")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    (tmp_path / "README.png").write_bytes(_png(3))
    inv = sources.discover(str(tmp_path))
    assert [(os.path.relpath(c.uri, tmp_path), c.label) for c in inv.candidates] == [("cat/a.png", "cat"), ("dog/b.JPG", "dog")]
    assert inv.declared_classes == {"cat", "dog"}
    assert {os.path.relpath(s["uri"], tmp_path): s["reason"].split(" (")[0] for s in inv.skipped} == {
        "README.png": "not inside a class folder",
        "dog/notes.txt": "not an image file",
    }


def test_discover_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        sources.discover(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "data, max_pixels, reason",
    [
        (b"hello, world", 10**6, "not a readable image"),
        (b"", 10**6, "empty file (0 bytes)"),  # regression: was "unknown format"
        (_noise_png()[:3000], 10**6, "damaged image"),  # truncated inside its pixel data
        (_png(5, size=(8, 8)), 63, "8x8 pixels exceeds the limit of 63 (max_pixels)"),
    ],
)
def test_inspect_image_rejects_with_reason(data, max_pixels, reason):
    result = image_files.inspect_image(data, max_pixels)
    assert result["ok"] is False
    assert reason in result["reason"]


def test_inspect_image_reads_header():
    assert image_files.inspect_image(_png(5, size=(12, 7), mode="RGB"), 10**6) == {
        "ok": True, "width": 12, "height": 7, "mode": "RGB", "format": "PNG", "channels": 3, "convert": False
    }


def test_settings_are_validated():
    with pytest.raises(ValueError, match=r"eval_fraction \+ test_fraction must be below 1"):
        pre.PreprocessSettings(image_size=32, eval_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="image_size 8 is below the minimum input size 32"):
        pre.PreprocessSettings(image_size=8)


def test_preprocess_outputs_on_real_digits(preprocessed, small_digits_dir):
    stats = preprocessed["stats"]
    assert stats["classes"] == ["5", "6", "7", "8", "9"]
    assert stats["num_images"] == 200 and stats["num_files"] == 200
    assert sum(sum(c.values()) for c in stats["class_counts"].values()) == 200
    assert stats["class_totals"] == {c: 40 for c in ["5", "6", "7", "8", "9"]}
    assert stats["skipped"] == [] and stats["bad_fraction"] == 0.0
    assert stats["image_sizes"] == {"<=32": 200} and stats["image_modes"] == {"L": 200} and stats["image_formats"] == {"PNG": 200}
    # The manifest's split for every image is the pure function's answer for its content hash.
    with open(os.path.join(preprocessed["examples"], artifacts.MANIFEST_FILE)) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 200
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        with open(row["uri"], "rb") as img:
            assert row["sha256"] == hashlib.sha256(img.read()).hexdigest()
        assert row["split"] == pre.assign_split(row["sha256"], 0.15, 0.15)
    for split in artifacts.SPLITS:
        assert glob.glob(os.path.join(preprocessed["examples"], split, "*.tfrecord"))


def test_transform_graph_decodes_resizes_and_scales(preprocessed, tmp_path):
    """The preprocessing_fn against values computed independently with PIL and NumPy."""
    import tensorflow as tf
    import tensorflow_transform as tft

    out = tft.TFTransformOutput(preprocessed["transform"])
    vocab = [v.decode() for v in out.vocabulary_by_name(artifacts.LABEL_VOCABULARY)]
    assert vocab == ["5", "6", "7", "8", "9"]  # sorted by name, not by frequency
    white, gray = _png(255, size=(8, 8)), _png(51, size=(40, 20), mode="L")
    rgb = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(rgb, format="PNG")
    result = out.transform_raw_features(
        {artifacts.IMAGE_KEY: tf.constant([white, gray, rgb.getvalue()]), artifacts.LABEL_KEY: tf.constant([b"7", b"5", b"unknown"])},
        drop_unused_features=True,
    )
    images = result[artifacts.IMAGE_KEY].numpy()
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], 1.0, atol=1e-5)  # 255 -> +1 ("tf" scaling: x / 127.5 - 1)
    np.testing.assert_allclose(images[1], 51 / 127.5 - 1, atol=1e-4)  # grayscale -> 3 channels
    np.testing.assert_allclose(images[2][..., 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(images[2][..., 1:], -1.0, atol=1e-5)
    labels = result[artifacts.LABEL_KEY].numpy().tolist()
    assert labels == [vocab.index("7"), vocab.index("5"), -1]


def test_bad_files_are_skipped_with_reason(tmp_path):
    data = tmp_path / "data"
    for label, value in (("a", 10), ("b", 200)):
        (data / label).mkdir(parents=True)
        for i in range(6):
            (data / label / f"{i}.png").write_bytes(_png(value + i))
    (data / "a" / "broken.png").write_bytes(b"\x89PNG not an image")
    (data / "b" / "notes.txt").write_text("labels are folder names")
    (data / "b" / ".DS_Store").write_bytes(b"junk")
    stats = pre.run_preprocess(
        str(data), str(tmp_path / "ex"), str(tmp_path / "tf"),
        pre.PreprocessSettings(image_size=32, eval_fraction=0.0, test_fraction=0.0, max_bad_fraction=0.2),
    )
    assert stats["num_images"] == 12 and stats["num_files"] == 14
    assert stats["class_counts"]["train"] == {"a": 6, "b": 6}
    reasons = {os.path.basename(s["uri"]): s["reason"] for s in stats["skipped"]}
    assert set(reasons) == {"broken.png", "notes.txt"}
    assert reasons["broken.png"].startswith("not a readable image")
    assert reasons["notes.txt"].startswith("not an image file")


def test_single_class_fails_naming_it_and_leaves_no_output(tmp_path):
    data = tmp_path / "data" / "only"
    data.mkdir(parents=True)
    for i in range(3):
        (data / f"{i}.png").write_bytes(_png(i))
    examples, transform = tmp_path / "ex", tmp_path / "tf"
    with pytest.raises(pre.DataError, match=r"found 1 class\(es\) with usable images \(only\); need at least two"):
        pre.run_preprocess(str(tmp_path / "data"), str(examples), str(transform), pre.PreprocessSettings(image_size=32, min_images_per_class=1))
    assert not examples.exists() and not transform.exists()


def test_statistics_markdown_lists_classes_and_skips():
    ok = {"status": "ok", "width": 8, "height": 8, "mode": "L", "format": "PNG", "convert": False}
    stats = pre.summarize(
        [
            {"uri": "d/a/1.png", "label": "a", "split": "train", "sha256": "1", **ok},
            {"uri": "d/a/2.png", "label": "a", "split": "train", "sha256": "1", "duplicate": True, **ok},
            {"uri": "d/b/x.png", "label": "b", "status": "skipped", "reason": "damaged image: truncated"},
        ],
        [{"uri": "d/b/n.txt", "reason": "not an image file"}],
    )
    assert stats["duplicates"] == 1 and stats["num_files"] == 4 and stats["bad_fraction"] == 0.5
    assert stats["class_counts"] == {"train": {"a": 2}, "eval": {}, "test": {}}
    md = pre.statistics_markdown(stats)
    assert "| a | 2 | 0 | 0 | 2 |" in md
    assert "| d/b/x.png | damaged image: truncated |" in md
    assert "1 exact duplicate (kept in one split)" in md  # regression: "1 exact duplicates"


def test_size_histogram_lists_sizes_smallest_first():
    # Regression (new-user review): sizes were listed most frequent first ("<=128: 45, <=64: 15").
    def row(i, side, mode="RGB"):
        return {"uri": f"d/a/{i}.png", "label": "a", "split": "train", "sha256": str(i), "status": "ok",
                "width": side, "height": side // 2, "mode": mode, "format": "PNG", "convert": False}

    rows = [row(0, 5000)] + [row(i, 100) for i in range(1, 4)] + [row(i, 50, "L") for i in range(4, 6)]
    stats = pre.summarize(rows, [])
    assert list(stats["image_sizes"].items()) == [("<=64", 2), ("<=128", 3), (">4096", 1)]
    assert list(stats["image_modes"].items()) == [("RGB", 4), ("L", 2)]
    assert "**Image size (longer side, px)**: <=64: 2, <=128: 3, >4096: 1" in pre.statistics_markdown(stats)


@pytest.mark.parametrize("size", [32, 48])
def test_decoding_an_image_already_at_the_target_size_returns_its_pixels_as_the_resize_would(size):
    """Regression for the skipped resize: same pixels as the antialiased resize gave, at every size."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    encoded = []
    for shape in ((size, size), (size + 7, size - 5)):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    out = pre.decode_images(tf.constant(encoded), size).numpy()
    for i, data in enumerate(encoded):
        pixels = tf.io.decode_image(data, channels=3)
        expected = tf.clip_by_value(tf.image.resize(pixels, [size, size], antialias=True), 0.0, 255.0).numpy()
        np.testing.assert_allclose(out[i], expected, atol=1e-4)
    assert out.dtype == np.float32 and out.shape == (2, size, size, 3)
    np.testing.assert_array_equal(out[0], tf.io.decode_image(encoded[0], channels=3).numpy().astype(np.float32))


def test_statistics_warn_about_classes_with_few_eval_or_test_images():
    """Regression: a class could end up with 0 eval or 0 test images with no warning."""
    from components.artifacts import MIN_SPLIT_IMAGES_PER_CLASS

    ok = {"status": "ok", "width": 8, "height": 8, "mode": "L", "format": "PNG", "convert": False}
    rows = [{"uri": f"d/{c}/{s}{i}.png", "label": c, "split": s, "sha256": f"{c}{s}{i}", **ok}
            for c, splits in (("a", {"train": 9, "eval": 5, "test": 5}), ("b", {"train": 9, "eval": 2}))
            for s, n in splits.items() for i in range(n)]
    stats = pre.summarize(rows, [])
    assert MIN_SPLIT_IMAGES_PER_CLASS == 5
    assert stats["warnings"] == [
        "class 'b' has 2 images in the eval split (fewer than 5): its eval metrics are unreliable",
        "class 'b' has 0 images in the test split (fewer than 5): its test metrics are unreliable",
    ]
    assert "## Warnings\n\n- class 'b' has 2 images in the eval split" in pre.statistics_markdown(stats)
