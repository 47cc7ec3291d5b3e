"""The catalogue, part 1: bad data, bad parameters and unusable registries.

Every case runs ``kfp-finetune run-local`` (in this process) against a small valid world with one
thing wrong, and asserts the exit code, the one ``error:`` line naming the culprit and what was
expected, and that nothing on disk changed (see ``reliability.py``). All are caught by the
up-front check (``pipelines/preflight.py``) within seconds, except damaged TFRecord files, which
only reading them finds: those run the preprocess step's body as a failed step reports it.
"""

import gzip
import os

import pytest

from gcs_emulator import gcs_emulator, new_bucket  # noqa: F401 - pytest fixture
from reliability import assert_refused, guard, marked, run_cli, step_error, world, write_file  # noqa: F401 - pytest fixtures

DATA_EXPECTED = "expected a folder of class folders, a .csv manifest (path,label) or .tfrecord[.gz] files"


def _folder(folder: str, name: str) -> str:
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    return os.path.join(folder, name)


def _junk_only(t: str) -> str:
    for name in (".DS_Store", "Thumbs.db", "__MACOSX/a/1.png", "a/.hidden.png", "a/desktop.ini"):
        write_file(t, f"junk/{name}", b"x")
    return os.path.join(t, "junk")


DATA = [
    pytest.param(lambda w, t: w.run_local(data_uri=f"{t}/missing"), ("data_uri", "/missing'", "does not exist", DATA_EXPECTED),
                 id="folder-missing"),
    pytest.param(lambda w, t: w.run_local(data_uri=_folder(t, "empty")), ("data_uri", "/empty'", "lists no file", DATA_EXPECTED),
                 id="folder-empty"),
    pytest.param(lambda w, t: w.run_local(data_uri=_junk_only(t)),
                 ("data_uri", "/junk'", "lists no file (empty, or only hidden and system files)", DATA_EXPECTED), id="only-junk-files"),
    pytest.param(lambda w, t: w.run_local(data_uri=write_file(t, "notes.txt", "hello")),
                 ("data_uri", "notes.txt'", "is a file but not a .csv manifest or .tfrecord[.gz] file", DATA_EXPECTED), id="plain-file"),
    pytest.param(lambda w, t: w.run_local(data_uri=f"{t}/images.csv"), ("data_uri", "images.csv'", "does not exist"), id="manifest-missing"),
    pytest.param(lambda w, t: w.run_local(data_uri=write_file(t, "images.csv", "path,label\n")),
                 ("CSV manifest", "images.csv'", "has no row (expected 'path,label' rows)"), id="manifest-header-only"),
    pytest.param(lambda w, t: w.run_local(data_uri=write_file(t, "images.csv", ",\n ,\n")),
                 ("images.csv'", "the manifest has no usable row", "images.csv:1: empty row ','", "expected 'path,label'"),
                 id="manifest-empty-rows"),
    pytest.param(lambda w, t: w.run_local(data_uri=write_file(t, "images.csv", "a/0.png\na/1.png;a\n")),
                 ("images.csv'", "no usable row", "images.csv:1: expected 'path,label', got 'a/0.png'"), id="manifest-malformed-rows"),
    pytest.param(lambda w, t: w.run_local(data_uri=f"{t}/train.tfrecord"), ("data_uri", "train.tfrecord'", "does not exist"),
                 id="tfrecord-missing"),
]


@pytest.fixture()
def bucket(gcs_emulator):
    from components import storage

    name = new_bucket(gcs_emulator)
    storage.gcs_client().bucket(name).blob("other/a/0.png").upload_from_string(b"png")
    return name


GCS_DATA = [
    pytest.param(lambda b: "gs://no-such-bucket-3f9a/data", ("data_uri 'gs://no-such-bucket-3f9a/data'", "bucket 'no-such-bucket-3f9a' does not exist"),
                 id="bucket-missing"),
    pytest.param(lambda b: f"gs://{b}/data", (f"data_uri 'gs://{{b}}/data'", "lists no file (no object under 'data/')", DATA_EXPECTED),
                 id="prefix-empty"),
    pytest.param(lambda b: f"gs://{b}/images.csv", ("data_uri 'gs://{b}/images.csv'", "no object 'images.csv' in bucket '{b}'", DATA_EXPECTED),
                 id="manifest-object-missing"),
]


@pytest.mark.reliability("data")
@pytest.mark.parametrize("uri, fragments", GCS_DATA)
def test_bad_data_on_gcs_is_refused_up_front(uri, fragments, bucket, world, guard, capsys):
    code, err, before, after = run_cli(world.run_local(data_uri=uri(bucket)), capsys, world.root)
    assert_refused(code, err, 2, tuple(f.replace("{b}", bucket) for f in fragments), before, after)
    assert guard == []


def _tfrecord(folder: str, damage: str) -> str:
    """A TFRecord file of three records, damaged: a flipped byte in the third record, cut short
    (gzip), or not a TFRecord file at all."""
    import tensorflow as tf

    from reliability import png
    from components.sources import TFRECORD_IMAGE_KEY, TFRECORD_LABEL_KEY

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "whole.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(3):
            feature = {TFRECORD_IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(i)])),
                       TFRECORD_LABEL_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ab"[i % 2:i % 2 + 1]]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with open(path, "rb") as f:
        whole = f.read()
    os.remove(path)
    if damage == "flipped":
        data = bytearray(whole)
        data[-20] ^= 0xFF
        return write_file(folder, "flipped.tfrecord", bytes(data))
    if damage == "truncated-gzip":
        return write_file(folder, "cut.tfrecord.gz", gzip.compress(whole)[:-40])
    return write_file(folder, "not-one.tfrecord", b"hello, this is not a TFRecord file" * 4)


TFRECORDS = [
    pytest.param("flipped", ("step preprocess failed: DamagedTFRecordError", "flipped.tfrecord' is damaged at record 3",
                             "2 whole record(s) before it", "expected whole TFRecord records"),
                 marks=pytest.mark.reliability("data"), id="flipped-byte"),
    pytest.param("not-one", ("not-one.tfrecord' is damaged at record 1", "Is this even a TFRecord file?", "expected whole TFRecord records"),
                 marks=pytest.mark.reliability("data"), id="not-a-tfrecord"),
    pytest.param("truncated-gzip", ("cut.tfrecord.gz' is damaged at record 3", "expected whole TFRecord records in a gzip file"),
                 marks=pytest.mark.reliability("faults"), id="cut-short-gzip"),
]


@pytest.mark.parametrize("damage, fragments", TFRECORDS)
def test_a_damaged_tfrecord_file_is_named_with_its_record(damage, fragments, world, tmp_path):
    """Regression: a corrupt .tfrecord gave DataLossError with no file name. The up-front check
    passes (the file exists); the preprocess step names the file and the record."""
    from components.preprocess import PreprocessSettings, run_preprocess_in_process
    from pipelines.preflight import check_data_uri
    from reliability import snapshot

    uri = _tfrecord(str(tmp_path / "in"), damage)
    check_data_uri(uri)
    settings = PreprocessSettings(data_uri=uri, registry_uri=world.registry, model_name="digits", image_size=32)
    outputs = [str(tmp_path / "out" / name) for name in ("examples", "transform")]
    before = snapshot(world.root, str(tmp_path))
    code, line = step_error("preprocess", lambda: run_preprocess_in_process(uri, *outputs, settings))
    assert_refused(code, line, 1, fragments, before, snapshot(world.root, str(tmp_path)))


def _yaml(t: str, text: str) -> str:
    return write_file(t, "run.yaml", text)


def _other_width_weights(t: str) -> str:
    from components.base_models import build_base_model

    path = os.path.join(t, "alpha-0.5.weights.h5")
    build_base_model("mobilenet_v2", 32, None, 0.5).save_weights(path)
    return path


def _other_family_weights(t: str) -> str:
    """Weights of a base model whose first layer with weights has another number of arrays (a
    Conv2D with a bias where MobileNetV2's has none)."""
    import keras

    path = os.path.join(t, "other.weights.h5")
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(16, 3, name="Conv1")]).save_weights(path)
    return path


PARAMETERS = [
    pytest.param(lambda w, t: w.run_local("--dropout", "1.5"), ("dropout", "must be in [0, 1), got 1.5"), id="dropout-out-of-range"),
    pytest.param(lambda w, t: w.run_local("--optimizer", "adagrad"), ("optimizer 'adagrad' is not one of adam, adamw, sgd, rmsprop",),
                 id="unknown-optimizer"),
    pytest.param(lambda w, t: w.run_local(epochs="three"), ("parameter 'epochs' (NUMBER_INTEGER) must be an integer, got 'three'",),
                 id="epochs-not-a-number"),
    pytest.param(lambda w, t: w.run_local("--fine-tune-epochs", "0", epochs="0"), ("epochs + fine_tune_epochs must be at least 1",),
                 id="no-epoch-at-all"),
    pytest.param(lambda w, t: w.run_local("--base-model", "resnet999"), ("base_model 'resnet999' is not supported; choose one of",),
                 id="unknown-base-model"),
    pytest.param(lambda w, t: w.run_local("--fine-tune-epochs", "1", "--unfreeze", "from:block_99_expand"),
                 ("unfreeze from:block_99_expand", "the base model has no layer 'block_99_expand'", "did you mean"),
                 id="unfreeze-unknown-layer"),
    pytest.param(lambda w, t: w.run_local("--fine-tune-epochs", "1", "--unfreeze", "top:999"),
                 ("unfreeze top:999 asks for more layers than the base model has",), id="unfreeze-too-many-layers"),
    # Regressions (second new-user review, 2026-12-05): a remote runner failed only inside the
    # preprocess step (its advice, a gs:// pipeline root, run-local refuses); an unknown runner was
    # taken for a remote one; an unbalanced quote gave "No closing quotation" without the value.
    pytest.param(lambda w, t: w.run_local("--beam-pipeline-args=--runner=FlinkRunner"),
                 ("beam_pipeline_args --runner=FlinkRunner: a remote runner's workers write the artifacts on object "
                  "storage, and run-local's artifacts are local folders", "kfp-finetune submit"), id="remote-runner-in-run-local"),
    pytest.param(lambda w, t: w.run_local("--beam-pipeline-args=--runner=FlinkRuner"),
                 ("beam_pipeline_args --runner=FlinkRuner: not a Beam runner (did you mean FlinkRunner?)",), id="runner-typo"),
    pytest.param(lambda w, t: w.run_local("--beam-pipeline-args=--runner='DataflowRunner"),
                 ("beam_pipeline_args \"--runner='DataflowRunner\": No closing quotation (one shell-quoted line is expected)",),
                 id="beam-args-unbalanced-quote"),
    # Regression (new-user review, 2026-12-05): refused only in the finetune step, after preprocessing
    # (and, under a profile's retry policy, after about 8 minutes of retries).
    pytest.param(lambda w, t: w.run_local("--accelerator-count", "64"),
                 ("accelerator_count 64: the steps run on this machine, where TensorFlow sees", "--accelerator-count 0"),
                 id="more-gpus-than-this-machine-has"),
    pytest.param(lambda w, t: w.run_local("--unfreeze", "bottom:3"), ("unfreeze 'bottom:3' must be 'all', 'top:N' (N >= 1) or 'from:LAYER_NAME'",),
                 id="unfreeze-bad-form"),
    pytest.param(lambda w, t: w.run_local(base_weights=_other_width_weights(t)),
                 ("alpha-0.5.weights.h5' does not fit layer 'block_1_project'", "the file has shape (1, 1, 48, 16), the model expects (1, 1, 48, 8)"),
                 id="weights-of-another-width"),
    pytest.param(lambda w, t: w.run_local(base_weights=_other_family_weights(t)),
                 ("other.weights.h5'", "layer 'Conv1'", "the file has shapes [(3, 3, 3, 16), (16,)]", "the model expects [(3, 3, 3, 16)]"),
                 id="weights-of-another-architecture"),
    pytest.param(lambda w, t: w.run_local(base_weights=write_file(t, "garbage.weights.h5", b"not weights")),
                 ("base_weights file", "garbage.weights.h5' is not a Keras .weights.h5 file (HDF5)"), id="weights-garbage"),
    pytest.param(lambda w, t: w.run_local(base_weights=write_file(t, "garbage.keras", b"not a model")),
                 ("base_weights file", "garbage.keras' is not a saved Keras model (.keras)"), id="keras-model-garbage"),
    pytest.param(lambda w, t: w.run_local(base_weights=f"{t}/nope.weights.h5"), ("base_weights file", "nope.weights.h5' does not exist"),
                 id="weights-missing"),
    pytest.param(lambda w, t: w.run_local(image_size="16"), ("image_size 16 is below the minimum input size 32 px of base model 'mobilenet_v2'",),
                 id="image-too-small"),
    pytest.param(lambda w, t: w.run_local("--eval-fraction", "0.6", "--test-fraction", "0.5"),
                 ("eval_fraction + test_fraction must be below 1",), id="no-train-split-left"),
    pytest.param(lambda w, t: w.run_local("--nesterov", "maybe"), ("parameter 'nesterov' (BOOLEAN) must be true or false, got 'maybe'",),
                 id="boolean-maybe"),
    pytest.param(lambda w, t: w.run_local(data_uri=None), ("missing required pipeline parameter(s): data_uri",), id="data-uri-missing"),
    pytest.param(lambda w, t: w.run_local("--config", _yaml(t, "data_uri: /x\nepochs: [1,\n  foo: : bar\n")),
                 ("config file", "run.yaml' is not valid YAML: line 3, column 8", "expected a YAML mapping of parameter names to values"),
                 id="config-malformed-yaml"),
    pytest.param(lambda w, t: w.run_local("--config", f"{t}/none.yaml"), ("config file", "none.yaml' does not exist"), id="config-missing"),
    pytest.param(lambda w, t: w.run_local("--config", _yaml(t, "- epochs\n- 3\n")),
                 ("config file", "run.yaml' must be a YAML mapping of parameter names to values"), id="config-not-a-mapping"),
    pytest.param(lambda w, t: w.run_local("--config", _yaml(t, "epocs: 3\n")), ("unknown pipeline parameter 'epocs' (did you mean 'epochs'?); 'kfp-finetune' takes:",),
                 id="config-unknown-key"),
    pytest.param(lambda w, t: w.run_local("--config", _yaml(t, "fine_tune_epochs: 1\nfine-tune-epochs: 2\n")),
                 ("config file", "run.yaml' sets 'fine_tune_epochs' twice"), id="config-key-twice"),
    pytest.param(lambda w, t: w.run_local("--config", _yaml(t, "learning_rate: 1e-3x\n")),
                 ("parameter 'learning_rate' (NUMBER_DOUBLE) must be a number, got '1e-3x'",), id="config-bad-number"),
    pytest.param(lambda w, t: w.run_local("--param", "epochs=2", epochs="3"),
                 ("pipeline parameter 'epochs' is given twice: as --epochs and as --param",), id="flag-and-param-both"),
]


REGISTRY = [
    pytest.param(lambda w, t: w.run_local(registry_uri=write_file(t, "registry.txt", "x")),
                 ("registry_uri", "registry.txt' is a file; use a folder (created by the first push) or gs://bucket/prefix"), id="a-file"),
    pytest.param(lambda w, t: w.run_local(registry_uri=write_file(t, "f", "x") + "/registry"),
                 ("registry_uri", "/f/registry' lies under", "/f', which is a file"), id="under-a-file"),
    pytest.param(lambda w, t: w.run_local(registry_uri="/proc/kfp-finetune-registry"),
                 ("registry_uri '/proc/kfp-finetune-registry' cannot be created in '/proc'", "expected a writable folder"),
                 id="cannot-be-created"),
]


@pytest.mark.parametrize("make, fragments", marked("data", DATA) + marked("parameters", PARAMETERS) + marked("registry", REGISTRY))
def test_bad_input_is_refused_up_front(make, fragments, world, guard, tmp_path, capsys):
    code, err, before, after = run_cli(make(world, str(tmp_path)), capsys, world.root, str(tmp_path))
    assert_refused(code, err, 2, fragments, before, after)
    assert guard == []


@pytest.mark.reliability("registry")
def test_a_registry_bucket_that_does_not_exist_is_refused_up_front(gcs_emulator, world, guard, capsys):
    code, err, before, after = run_cli(world.run_local(registry_uri="gs://no-such-registry-7c1e/models"), capsys, world.root)
    assert_refused(code, err, 2, ("registry_uri 'gs://no-such-registry-7c1e/models'", "bucket 'no-such-registry-7c1e' does not exist"),
                   before, after)
    assert guard == []


def test_the_world_itself_passes_the_up_front_check(world, guard, capsys):
    """The control: without the one thing wrong, each case's command line gets past the check
    (and the stand-in for kfp.local records it); the cases fail for their own reason."""
    from pipelines.cli import main

    assert main(world.run_local()) == 0, capsys.readouterr().err
    assert guard and guard[0]["data_uri"] == world.data
