"""Real preprocess runs on the messy inputs users bring: formats, bad files, CSV, TFRecord."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from components import artifacts
from components import preprocess as pre

CAT, DOG = "chat noir", "día\nperro"  # class names as folders may have them (space, accent, newline)


def _image_bytes(seed: int, fmt: str = "PNG", mode: str = "RGB", size=(20, 12), **save) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _rotated_jpeg() -> bytes:
    img = Image.new("RGB", (30, 10), (200, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": phones write this instead of rotating pixels
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buf, format="PNG")  # 60 MP declared, a few kB on disk
    return buf.getvalue()


def _read_examples(examples_dir):
    import tensorflow as tf

    out = {}
    for split in artifacts.SPLITS:
        files = tf.io.gfile.glob(os.path.join(examples_dir, split, "*.tfrecord"))
        for raw in tf.data.TFRecordDataset(files).as_numpy_iterator():
            ex = tf.io.parse_single_example(raw, artifacts.raw_feature_spec())
            out.setdefault(split, []).append((ex[artifacts.IMAGE_KEY].numpy(), ex[artifacts.LABEL_KEY].numpy().decode()))
    return out


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    data = root / "data"
    cat, dog = data / CAT, data / DOG
    cat.mkdir(parents=True)
    dog.mkdir(parents=True)
    for i in range(8):
        (cat / f"{i}.png").write_bytes(_image_bytes(i))
        (dog / f"{i}.jpg").write_bytes(_image_bytes(100 + i, "JPEG"))
    files = {
        # formats and layouts cameras, scanners and tools produce
        cat / "photo.webp": _image_bytes(200, "WEBP"),
        cat / "scan16.tif": None,
        cat / "print.jpg": _image_bytes(201, "JPEG", mode="CMYK"),
        dog / "phone.jpg": _rotated_jpeg(),
        dog / "logo.png": _image_bytes(202, mode="RGBA"),
        dog / "anim.gif": _image_bytes(203, "GIF", mode="P"),
        cat / "old.bmp": _image_bytes(204, "BMP"),
        # duplicates and conflicts
        cat / "copy-of-0.png": (cat / "0.png").read_bytes(),
        cat / "same.png": _image_bytes(300),
        dog / "same.png": _image_bytes(300),
        # bad input
        cat / "truncated.png": _image_bytes(400, size=(64, 64))[:500],
        cat / "fake.jpg": b"this is text, not a JPEG",
        dog / "notes.txt": b"labels are folder names",
        dog / "bomb.png": _bomb_png(),
        data / "stray.png": _image_bytes(401),
        # junk, never data
        cat / ".DS_Store": b"\x00\x01",
        dog / "Thumbs.db": b"\x00",
        data / "__MACOSX" / CAT / "._0.png": b"resource fork",
    }
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 9), 40000, dtype=np.uint16)).save(buf, format="TIFF")
    files[cat / "scan16.tif"] = buf.getvalue()
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    stats = pre.run_preprocess(
        str(data), str(root / "ex"), str(root / "tf"),
        pre.PreprocessSettings(image_size=32, max_bad_fraction=0.3, min_images_per_class=5),
        champion={"version": 3, "alias": "prod", "labels": [CAT, "bird"]},
    )
    return data, root, stats


def test_each_bad_input_kind_is_skipped_with_its_reason(messy):
    data, _, stats = messy
    reasons = {os.path.relpath(s["uri"], data): s["reason"] for s in stats["skipped"]}
    assert set(reasons) == {
        f"{CAT}/truncated.png", f"{CAT}/fake.jpg", f"{DOG}/notes.txt", f"{DOG}/bomb.png", "stray.png",
        f"{CAT}/same.png", f"{DOG}/same.png",
    }
    assert reasons[f"{CAT}/truncated.png"].startswith("damaged image")
    assert reasons[f"{CAT}/fake.jpg"] == "not a readable image (unknown format)"
    assert reasons[f"{DOG}/notes.txt"] == "not an image file (extension .txt)"
    assert reasons[f"{DOG}/bomb.png"] == "10000x6000 pixels exceeds the limit of 50000000 (max_pixels)"
    assert reasons["stray.png"] == "not inside a class folder"
    assert reasons[f"{CAT}/same.png"] == f"the same image is labelled {CAT!r}, {DOG!r}"
    assert stats["conflicts"] == 2
    # Junk is never data, never a class, never listed.
    assert stats["declared_classes"] == [CAT, DOG]
    assert stats["num_files"] == 8 + 8 + 7 + 3 + 5  # good, formats, copies+conflicts, bad (junk not counted)
    assert stats["bad_fraction"] == pytest.approx(7 / 31)
    # Regression (new-user review): the manifest left out what listing set aside (notes.txt,
    # stray.png); it holds one line per input file, with the same reasons.
    _, root, _ = messy
    with open(root / "ex" / artifacts.MANIFEST_FILE) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == stats["num_files"]
    assert {os.path.relpath(r["uri"], data): r["reason"] for r in rows if r["status"] != "ok"} == reasons


def test_every_format_becomes_a_decodable_image_the_right_way_up(messy):
    import tensorflow as tf

    _, root, stats = messy
    assert stats["num_images"] == 8 + 8 + 7 + 1  # the copy counts as an image, and as a duplicate
    assert stats["duplicates"] == 1
    assert stats["converted"] == 5  # WEBP, 16-bit TIFF, CMYK JPEG, EXIF-rotated JPEG, BMP -> PNG
    assert stats["image_formats"] == {"PNG": 10, "JPEG": 10, "WEBP": 1, "TIFF": 1, "BMP": 1, "GIF": 1}
    examples = _read_examples(str(root / "ex"))
    decoded = {}
    for split in examples.values():
        for data, label in split:
            img = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
            decoded.setdefault(label, []).append(img.shape)
    assert sorted(decoded) == [CAT, DOG]
    # The phone photo was 30x10 with "rotate 90": it is stored upright, 10 wide and 30 high.
    assert (30, 10, 3) in decoded[DOG]
    # The 16-bit scan (value 40000 of 65535) keeps its brightness: 40000 >> 8 = 156.
    scans = [d for split in examples.values() for d, l in split if l == CAT and Image.open(io.BytesIO(d)).size == (9, 6)]
    assert len(scans) == 1 and set(np.asarray(Image.open(io.BytesIO(scans[0]))).ravel()) == {156}


def test_duplicates_share_a_split_and_the_manifest_says_so(messy):
    data, root, _ = messy
    with open(root / "ex" / artifacts.MANIFEST_FILE) as f:
        rows = {os.path.relpath(r["uri"], data): r for r in map(json.loads, f)}
    original, copy = rows[f"{CAT}/0.png"], rows[f"{CAT}/copy-of-0.png"]
    assert original["sha256"] == copy["sha256"] and original["split"] == copy["split"]
    assert copy["duplicate"] is True and original["duplicate"] is False
    assert rows[f"{CAT}/same.png"]["status"] == "conflict"


def test_label_vocabulary_is_sorted_and_holds_any_folder_name(messy):
    import tensorflow_transform as tft

    _, root, _ = messy
    out = tft.TFTransformOutput(str(root / "tf"))
    assert artifacts.vocabulary(out) == sorted([CAT, DOG])
    # The escaped form is what the file holds: one class per line, the line break spelled out.
    assert [v.decode() for v in out.vocabulary_by_name(artifacts.LABEL_VOCABULARY)] == ["chat noir", "día\\nperro"]
    import tensorflow as tf

    png = _image_bytes(1)
    indices = out.transform_raw_features(
        {artifacts.IMAGE_KEY: tf.constant([png, png]), artifacts.LABEL_KEY: tf.constant([DOG.encode(), CAT.encode()])}, drop_unused_features=True
    )
    assert indices[artifacts.LABEL_KEY].numpy().tolist() == [1, 0]


def test_report_says_the_label_set_differs_from_the_champion(messy):
    _, _, stats = messy
    assert stats["champion"] == {"version": 3, "alias": "prod", "labels": {"same": False, "added": [DOG], "removed": ["bird"]}}
    md = pre.statistics_markdown(stats)
    assert "The label set differs from the champion's" in md and "removed ['bird']" in md


@pytest.mark.parametrize(
    "change, message",
    [
        ({"skipped": [{"uri": f"x/{i}", "reason": "damaged image"} for i in range(3)], "num_files": 100, "bad_fraction": 0.03},
         r"3 of 100 input files \(3.0%\) are unusable, more than max_bad_fraction 1.0%: x/0 \(damaged image\)"),
        ({"declared_classes": ["a", "b", "empty"]}, r"class\(es\) with no usable image: 'empty'"),
        ({"class_totals": {"a": 20, "b": 3}}, r"class\(es\) below min_images_per_class 5: 'b' has 3"),
        ({"class_counts": {"train": {"a": 14}, "eval": {"b": 3}, "test": {"a": 6, "b": 17}}},
         r"class\(es\) with no image in the train split: 'b' \(20 usable image\(s\) in all\)"),
    ],
)
def test_bad_input_policy_table(change, message):
    stats = {
        "num_files": 40, "skipped": [], "bad_fraction": 0.0, "classes": ["a", "b"], "declared_classes": ["a", "b"],
        "class_totals": {"a": 20, "b": 20},
        "class_counts": {"train": {"a": 14, "b": 14}, "eval": {"a": 3, "b": 3}, "test": {"a": 3, "b": 3}},
    }
    stats.update(change)
    with pytest.raises(pre.DataError, match=message):
        pre.check_statistics(stats, max_bad_fraction=0.01, min_images_per_class=5)


def test_too_many_bad_files_fails_naming_them_and_leaves_nothing(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "data" / label / f"{i}.png").write_bytes(_image_bytes(10 * ord(label) + i))
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(pre.DataError, match=r"1 of 13 input files \(7.7%\) are unusable, more than max_bad_fraction 1.0%: .*broken.png \(damaged image"):
        pre.run_preprocess(str(tmp_path / "data"), str(tmp_path / "ex"), str(tmp_path / "tf"), pre.PreprocessSettings(image_size=32))
    assert not (tmp_path / "ex").exists() and not (tmp_path / "tf").exists()


def test_csv_manifest_and_split_stability_when_data_is_added(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = ["path,label"]
    for i in range(24):
        name = f"img{i}.png"
        (images / name).write_bytes(_image_bytes(500 + i))
        rows.append(f"images/{name},{'cat' if i % 2 else 'dog'}")
    rows.append(f"{images / 'img0.png'},dog")  # an absolute path (a duplicate of row 1, same label)
    rows.append("images/missing.png,cat")
    rows.append("only-one-column")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    settings = pre.PreprocessSettings(image_size=32, max_bad_fraction=0.1, min_images_per_class=5)
    first = pre.run_preprocess(str(tmp_path / "labels.csv"), str(tmp_path / "ex1"), str(tmp_path / "tf1"), settings)
    assert first["class_totals"] == {"cat": 12, "dog": 13}
    reasons = {s["uri"].rsplit("/", 1)[-1]: s["reason"] for s in first["skipped"]}
    assert reasons == {"missing.png": "file not found", "labels.csv:28": "expected 'path,label', got 'only-one-column'"}
    # Add data: every image seen before stays in its split.
    for i in range(24, 60):
        (images / f"img{i}.png").write_bytes(_image_bytes(500 + i))
        rows.insert(-3, f"images/img{i}.png,{'cat' if i % 2 else 'dog'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    second = pre.run_preprocess(str(tmp_path / "labels.csv"), str(tmp_path / "ex2"), str(tmp_path / "tf2"), settings)
    assert second["num_images"] == 61

    def splits(folder):
        with open(tmp_path / folder / artifacts.MANIFEST_FILE) as f:
            return {r["uri"]: r["split"] for r in map(json.loads, f) if r["status"] == "ok"}

    before, after = splits("ex1"), splits("ex2")
    assert before and all(after[uri] == split for uri, split in before.items())


def test_tfrecord_input(tmp_path):
    import tensorflow as tf

    def example(data, label):
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
        if label is not None:
            feature["image/class/label"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    (tmp_path / "data").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "data" / "part-0.tfrecord")) as w:
        for i in range(7):
            w.write(example(_image_bytes(700 + i), "owl"))
        w.write(example(_image_bytes(799), None))
    with tf.io.TFRecordWriter(str(tmp_path / "data" / "part-1.tfrecord.gz"), options="GZIP") as w:
        for i in range(7):
            w.write(example(_image_bytes(800 + i, "JPEG"), "hawk"))
    stats = pre.run_preprocess(
        str(tmp_path / "data"), str(tmp_path / "ex"), str(tmp_path / "tf"),
        pre.PreprocessSettings(image_size=32, max_bad_fraction=0.1, min_images_per_class=5),
    )
    assert stats["class_totals"] == {"hawk": 7, "owl": 7}
    assert [s["reason"] for s in stats["skipped"]] == ["no 'image/class/label' bytes feature"]
    assert stats["skipped"][0]["uri"].startswith(str(tmp_path / "data" / "part-0.tfrecord") + "[sha256=")
    examples = _read_examples(str(tmp_path / "ex"))
    assert sum(len(v) for v in examples.values()) == 14


def test_local_parallelism_adds_workers_only_for_large_local_runs():
    big = pre.LOCAL_PARALLEL_MIN_FILES
    assert pre.local_parallelism((), big, cpu_count=4) == ("--direct_num_workers=4", "--direct_running_mode=multi_processing")
    assert pre.local_parallelism((), big, cpu_count=64)[0] == "--direct_num_workers=8"
    assert pre.local_parallelism((), big - 1, cpu_count=4) == ()
    assert pre.local_parallelism((), big, cpu_count=2) == ()  # no clear gain on 2 cores (make bench)
    assert pre.local_parallelism(("--runner=DataflowRunner",), big, cpu_count=4) == ("--runner=DataflowRunner",)
    assert pre.local_parallelism(("--direct_num_workers=3",), big, cpu_count=4) == ("--direct_num_workers=3",)


@pytest.fixture(scope="module")
def across_chunks(tmp_path_factory):
    """More files than one Beam element holds (``CHUNK_SIZE``), with copies, a conflict and a
    file that needs converting in different chunks."""
    data = tmp_path_factory.mktemp("chunks") / "data"
    n = pre.CHUNK_SIZE + 10  # per class: files of each class span two chunks
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(n):
            (data / label / f"{i:03d}.png").write_bytes(_image_bytes(i + (0 if label == "a" else 1000)))
    (data / "b" / "999-copy-of-a000.png").write_bytes((data / "a" / "000.png").read_bytes())  # conflict, chunks 1 and 4
    (data / "a" / "999-copy.png").write_bytes((data / "a" / "001.png").read_bytes())  # duplicate, chunks 1 and 2
    (data / "b" / "998-phone.jpg").write_bytes(_rotated_jpeg())  # converted, last chunk
    return data


@pytest.mark.parametrize("beam_args", [(), ("--direct_num_workers=2", "--direct_running_mode=multi_processing")],
                         ids=["one-worker", "two-workers"])
def test_copies_and_conversions_are_found_across_chunks_and_workers(across_chunks, tmp_path, beam_args):
    n = pre.CHUNK_SIZE + 10
    stats = pre.run_preprocess(str(across_chunks), str(tmp_path / "ex"), str(tmp_path / "tf"),
                               pre.PreprocessSettings(image_size=32, max_bad_fraction=0.05, beam_pipeline_args=beam_args))
    assert stats["num_files"] == 2 * n + 3
    assert stats["conflicts"] == 2 and stats["duplicates"] == 1 and stats["converted"] == 1
    # Both copies of the conflicting image are excluded; the duplicate and the photo are kept.
    assert stats["num_images"] == 2 * n - 1 + 1 + 1
    with open(tmp_path / "ex" / artifacts.MANIFEST_FILE) as f:
        rows = {os.path.relpath(r["uri"], across_chunks): r for r in map(json.loads, f)}
    assert len(rows) == stats["num_files"]
    assert rows["a/000.png"]["status"] == rows["b/999-copy-of-a000.png"]["status"] == "conflict"
    assert rows["a/999-copy.png"]["duplicate"] is True and rows["a/001.png"]["duplicate"] is False
    assert rows["a/999-copy.png"]["split"] == rows["a/001.png"]["split"]
    examples = _read_examples(str(tmp_path / "ex"))
    written = sorted((split, label, hashlib.sha256(data).hexdigest()) for split, pairs in examples.items() for data, label in pairs)
    expected = sorted((r["split"], r["label"], r["sha256"]) for r in rows.values()
                      if r["status"] == "ok" and not r["uri"].endswith("phone.jpg"))
    # The photo is re-encoded upright (as PNG); every other usable file is written once, in its
    # split, exactly as it is.
    photo = [img for pairs in examples.values() for img, label in pairs if Image.open(io.BytesIO(img)).size == (10, 30)]
    assert len(photo) == 1 and Image.open(io.BytesIO(photo[0])).format == "PNG"
    assert [w for w in written if w[2] != hashlib.sha256(photo[0]).hexdigest()] == expected
    assert set(stats["timing"]) == {"imports_s", "pipeline_s"} and stats["timing"]["pipeline_s"] > 0


def test_an_empty_csv_row_is_reported_not_dropped(tmp_path):
    """Regression: a row "," was dropped without a word; blank lines are not rows."""
    from components import sources

    (tmp_path / "a.png").write_bytes(_image_bytes(0))
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\n,\n\n , \n")
    inventory = sources.discover(str(tmp_path / "labels.csv"))
    assert [c.label for c in inventory.candidates] == ["cat"]
    assert inventory.skipped == [
        {"uri": f"{tmp_path}/labels.csv:3", "reason": "empty row ',': expected 'path,label'"},
        {"uri": f"{tmp_path}/labels.csv:5", "reason": "empty row ' , ': expected 'path,label'"},
    ]
