"""``run-local``'s up-front check: what a run needs, checked in seconds before any step runs.

A run that will fail should fail before preprocessing, not after it (or, worse, after the push):
``check_run`` checks, in this order,

1. every step's settings (``pipelines.local.step_settings``) and the Beam arguments;
2. ``data_uri`` is readable and lists at least one file;
3. the registry is writable, and so are ``--summary``, the pipeline root and ``checkpoint_dir``;
4. a weights file fits the base model (the shapes read from the file, the base model built
   without weights and without training) and ``unfreeze`` names layers the base model has.

Each failure is one exception whose message names the parameter, its value and what was
expected; the command line prints it as one ``error:`` line and exits 2 (``pipelines.errors``).
Storage requests carry a short timeout (``PROBE_TIMEOUT_S`` each, ``PROBE_DEADLINE_S`` with
retries), so an endpoint that does not answer fails the check within 30 s, naming the bucket.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

from components import storage
from components.image_files import is_junk
from components.sources import TFRECORD_SUFFIXES

# One storage request (connect and read), in seconds.
PROBE_TIMEOUT_S = 5.0
# Every attempt on one storage endpoint, retries included; one last attempt may still run for
# PROBE_TIMEOUT_S, so a silent endpoint fails the check within about 15 s (measured 12 s; under
# 30 s). A blip shorter than this is retried; the steps' own requests retry longer.
PROBE_DEADLINE_S = 10.0
_DATA_EXPECTED = "a folder of class folders, a .csv manifest (path,label) or .tfrecord[.gz] files"


def check_run(
    params: dict[str, Any],
    pipeline_root: str | None = None,
    summary: str | None = None,
    to_host: Callable[[str], str] = lambda path: path,
    gpus: int | None = None,
) -> None:
    """Checks a run's parameters and the places it reads and writes, before any step runs.

    Args:
        params: Pipeline parameters (checked by ``pipelines.params``).
        pipeline_root: The local pipeline root the run writes to, or None.
        summary: The ``--summary`` file, or None.
        to_host: Maps a local path parameter to the path on this machine (the Docker runner's
            mounts; identity for the subprocess runner).
        gpus: GPUs the step containers get (the Docker runner's ``--gpus``; -1: all), or None
            when the steps run on this machine and see its GPUs.

    Raises:
        ValueError: an invalid setting, a path that is a file where a folder is expected (or the
            reverse), an empty data folder or manifest, weights that do not fit the base model
            (names the layer and both shapes), an ``unfreeze`` naming no layer of the base model,
            an ``accelerator_count`` above the GPUs the steps will see (:func:`check_gpus`), a
            remote Beam runner (its workers cannot write run-local's local artifacts).
        FileNotFoundError: ``data_uri``, a bucket or a local weights file does not exist.
        PermissionError: a place the run writes to is not writable.
        TimeoutError: a storage endpoint did not answer (names the bucket).
    """
    from components import preprocess
    from components.beam_options import is_remote, runner_name
    from pipelines.local import step_settings

    pre, finetune, _, _ = step_settings(params)
    preprocess.check_beam_args(pre.beam_pipeline_args)
    if pipeline_root is not None and is_remote(pre.beam_pipeline_args):
        # Remote workers write the artifacts' object-storage URIs (components.beam_options);
        # kfp.local's artifacts are local folders. Refused here, not after the run started.
        raise ValueError(
            f"beam_pipeline_args --runner={runner_name(pre.beam_pipeline_args)}: a remote runner's workers write "
            "the artifacts on object storage, and run-local's artifacts are local folders; submit the run to a "
            "cluster (kfp-finetune submit), or leave --runner out to preprocess in-process")
    if pipeline_root is not None:
        if "://" in pipeline_root:
            raise ValueError(f"--pipeline-root {pipeline_root!r} must be a local folder for run-local (kfp.local writes no object storage)")
        check_writable_folder("--pipeline-root", pipeline_root)
    if summary:
        check_writable_file("--summary", summary)
    if pre.data_uri:
        check_data_uri(pre.data_uri, to_host)
    if pre.registry_uri:
        check_registry(pre.registry_uri, to_host)
    if finetune.checkpoint_dir and "://" not in finetune.checkpoint_dir:
        check_writable_folder("checkpoint_dir", to_host(finetune.checkpoint_dir))
    check_base_model(finetune, pre.image_size, to_host)
    check_gpus(finetune.accelerator_count, gpus)


def check_gpus(requested: int, gpus: int | None) -> None:
    """Refuses a run whose finetune step asks for more GPUs than it will see, before any step
    runs (the step itself fails only after preprocessing, and a profile's retries repeat that).

    Args:
        requested: The run's ``accelerator_count`` (0: CPU, never refused).
        gpus: The Docker runner's ``--gpus`` (-1: all, not checked here: the step checks what it
            sees), or None for the subprocess runner: the GPUs TensorFlow sees on this machine.

    Raises:
        ValueError: names the count asked for, the GPUs there are and the two ways out.
    """
    if requested <= 0 or gpus == -1:
        return
    if gpus is not None:
        if gpus < requested:
            raise ValueError(f"accelerator_count {requested}: the step containers get {gpus} GPU(s) (--gpus); "
                             f"pass --gpus {requested}, or --accelerator-count 0 to train on the CPU")
        return
    import tensorflow as tf

    visible = len(tf.config.list_physical_devices("GPU"))
    if visible < requested:
        raise ValueError(f"accelerator_count {requested}: the steps run on this machine, where TensorFlow sees {visible} "
                         "GPU(s); pass --accelerator-count 0 to train on the CPU (a cluster profile with a GPU "
                         "makes 1 the default), or run where the GPUs are")


def check_writable_folder(name: str, path: str, expected: str = "expected a folder") -> None:
    """``path`` is a folder this process can write, or can be created as one; ``expected`` ends
    the message when it is a file.

    An existing folder is checked with ``os.access`` (nothing is written in it: it may be a
    registry); for a folder still to be created a temporary folder is made and removed in its
    nearest existing parent, which is what creating it will need.

    Raises:
        ValueError: ``path`` or a parent of it is a file.
        PermissionError: the folder, or the parent it would be created in, is not writable.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(path) else f"lies under {existing!r}, which is a file"
        raise ValueError(f"{name} {path!r} {where}; {expected}")
    if existing == os.path.abspath(path):
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{name} {path!r} is not writable by this user (uid {os.getuid()}); expected a writable folder")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kfp-finetune-check-", dir=existing))
    except OSError as e:
        raise PermissionError(f"{name} {path!r} cannot be created in {existing!r} ({e.strerror}); expected a writable folder") from None


def check_writable_file(name: str, path: str) -> None:
    """``path`` can be written as a regular file: it is one or does not exist, and a temporary
    file can be made and removed in its folder (or that folder can be created).

    Raises:
        ValueError: ``path`` is a folder or not a regular file (a device, a pipe), or its folder
            is a file.
        PermissionError: the file or its folder is not writable.
    """
    if os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a folder; expected a file path")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"{name} {path!r} is not a regular file (a device or a pipe); expected a file path")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"{name} {path!r} is not writable by this user (uid {os.getuid()})")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        check_writable_folder(f"{name}'s folder", folder)
        return
    try:
        with tempfile.NamedTemporaryFile(prefix=".kfp-finetune-check-", dir=folder):
            pass
    except OSError as e:
        raise PermissionError(f"{name} {path!r} cannot be written in {folder!r} ({e.strerror}); expected a writable folder") from None


def check_data_uri(data_uri: str, to_host: Callable[[str], str] = lambda path: path) -> None:
    """``data_uri`` exists, is readable and lists at least one file that is not junk.

    A CSV manifest is read and must have at least one ``path,label`` row; no image is opened.

    Raises:
        FileNotFoundError: nothing at ``data_uri``, or a bucket that does not exist.
        ValueError: an empty folder (or only hidden/system files), an empty manifest, or a file
            that is neither a manifest nor TFRecords.
        PermissionError: a folder or file that cannot be read.
        TimeoutError: the storage endpoint did not answer.
    """
    from components import sources

    uri = storage.strip_file_scheme(data_uri).rstrip("/")
    if storage.is_gcs(uri):
        _check_gcs_data(data_uri, uri)
        return
    path = to_host(uri)
    shown = repr(data_uri) + (f" (on the host: {path!r})" if path != uri else "")
    if not os.path.exists(path):
        raise FileNotFoundError(f"data_uri {shown} does not exist; expected {_DATA_EXPECTED}")
    if not os.path.isfile(path) and not os.path.isdir(path):
        raise ValueError(f"data_uri {shown} is neither a regular file nor a folder (a device or a pipe); expected {_DATA_EXPECTED}")
    if os.path.isfile(path):
        if not os.access(path, os.R_OK):
            raise PermissionError(f"data_uri {shown} is not readable by this user (uid {os.getuid()})")
        if path.lower().endswith(".csv"):
            inventory = sources.discover(path)
            if not inventory.candidates:
                first = inventory.skipped[0]
                raise ValueError(f"data_uri {shown}: the manifest has no usable row (first: {first['uri']}: {first['reason']})")
        elif not path.lower().endswith(TFRECORD_SUFFIXES):
            raise ValueError(f"data_uri {shown} is a file but not a .csv manifest or .tfrecord[.gz] file; expected {_DATA_EXPECTED}")
        return
    unreadable: list[OSError] = []
    for folder, dirs, files in os.walk(path, onerror=unreadable.append):
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        if any(not is_junk(f) for f in files):
            return
    if unreadable:
        raise PermissionError(f"data_uri {shown}: cannot list {unreadable[0].filename!r} ({unreadable[0].strerror})")
    raise ValueError(f"data_uri {shown} lists no file (empty, or only hidden and system files); expected {_DATA_EXPECTED}")


def probe_retry() -> Any:
    """The retry policy of every up-front storage request: the client's default (transient
    errors, with backoff) cut off after ``PROBE_DEADLINE_S``."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(PROBE_DEADLINE_S)


def _storage_call(what: str, bucket: str, call: Callable[[], Any]) -> Any:
    """Runs one up-front storage request and turns its failures into one-line errors.

    Raises:
        FileNotFoundError: the bucket does not exist (404).
        PermissionError: the credentials may not do it (401, 403), or there are none.
        TimeoutError: the endpoint did not answer within the deadline.
    """
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
    try:
        return call()
    except (FileNotFoundError, PermissionError):
        raise
    except api.NotFound:
        raise FileNotFoundError(f"{what}: bucket {bucket!r} does not exist (at {endpoint})") from None
    except (api.Forbidden, api.Unauthorized) as e:
        raise PermissionError(f"{what}: access to bucket {bucket!r} refused ({e.code} {e.reason or e.message})") from None
    except auth.GoogleAuthError as e:
        raise PermissionError(f"{what}: no usable Google Cloud credentials for bucket {bucket!r} ({' '.join(str(e).split())})") from None
    except (api.RetryError, api.GoogleAPIError, OSError) as e:
        # requests' ConnectionError and Timeout are OSErrors; RetryError wraps the last of them.
        raise TimeoutError(
            f"{what}: storage endpoint {endpoint} did not answer for bucket {bucket!r} within {PROBE_DEADLINE_S:g} s "
            f"({type(e).__name__})"
        ) from None


def _check_gcs_data(data_uri: str, uri: str) -> None:
    bucket, prefix = storage.split_gcs_uri(uri)
    client = storage.gcs_client()
    what = f"data_uri {data_uri!r}"
    if uri.lower().endswith((".csv", *TFRECORD_SUFFIXES)):
        found = _storage_call(what, bucket, lambda: client.bucket(bucket).blob(prefix).exists(timeout=PROBE_TIMEOUT_S, retry=probe_retry()))
        if not found:
            # exists() answers False for a missing bucket too: tell the two apart.
            _storage_call(what, bucket, lambda: client.get_bucket(bucket, timeout=PROBE_TIMEOUT_S, retry=probe_retry()))
            raise FileNotFoundError(f"{what}: no object {prefix!r} in bucket {bucket!r}; expected {_DATA_EXPECTED}")
        return
    folder = prefix.rstrip("/") + "/" if prefix else ""
    names = _storage_call(what, bucket, lambda: [
        b.name for b in client.list_blobs(bucket, prefix=folder, max_results=1000, timeout=PROBE_TIMEOUT_S, retry=probe_retry())
    ])
    if not any(not n.endswith("/") and not any(is_junk(p) for p in n[len(folder):].split("/")) for n in names):
        raise ValueError(f"{what} lists no file (no object under {folder or 'the bucket root'!r}); expected {_DATA_EXPECTED}")


def check_registry(registry_uri: str, to_host: Callable[[str], str] = lambda path: path) -> None:
    """The registry can be written: a local folder (or one that can be created), or an existing
    bucket whose credentials hold ``storage.objects.create`` (Cloud Storage's
    ``testIamPermissions``; an emulator, which has no IAM, is checked for the bucket only).

    Raises:
        ValueError, PermissionError: see ``check_writable_folder``.
        FileNotFoundError, PermissionError, TimeoutError: see ``_storage_call``.
    """
    if not storage.is_gcs(registry_uri):
        check_writable_folder("registry_uri", to_host(storage.strip_file_scheme(registry_uri)),
                              "use a folder (created by the first push) or gs://bucket/prefix")
        return
    bucket, _ = storage.split_gcs_uri(registry_uri)
    client = storage.gcs_client()
    what = f"registry_uri {registry_uri!r}"
    handle = _storage_call(what, bucket, lambda: client.get_bucket(bucket, timeout=PROBE_TIMEOUT_S, retry=probe_retry()))
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    granted = _storage_call(what, bucket, lambda: handle.test_iam_permissions(
        ["storage.objects.create"], timeout=PROBE_TIMEOUT_S, retry=probe_retry()))
    if "storage.objects.create" not in granted:
        raise PermissionError(f"{what}: the credentials may not create objects in bucket {bucket!r} (storage.objects.create)")


def check_base_model(settings: Any, image_size: int, to_host: Callable[[str], str] = lambda path: path) -> None:
    """A weights file fits the base model and ``unfreeze`` names layers it has.

    Builds the base model without pretrained weights (no download, no training) when there is
    something to check: a weights file (its shapes are compared layer by layer with
    ``components.finetune.model.check_weights_file``, or a ``.keras`` model is read), or an
    ``unfreeze`` of ``top:N`` / ``from:LAYER`` with a fine-tune phase.

    Args:
        settings: The run's ``FinetuneSettings``.
        image_size: The input size the base model is built for.
        to_host: See ``check_run``.

    Raises:
        FileNotFoundError: a local weights file does not exist (named).
        ValueError: the file is not a weights file or model, names the first layer that does not
            fit with both shapes, or ``unfreeze`` names no layer (with the closest names).
    """
    import dataclasses

    source = settings.base_weights
    weights_file = source.lower() not in ("imagenet", "none")
    local = weights_file and not storage.is_gcs(source)
    if local and not os.path.isfile(to_host(storage.strip_file_scheme(source))):
        host = to_host(storage.strip_file_scheme(source))
        where = f" (on the host: {host!r})" if host != source else ""
        if os.path.exists(host):
            # A pipe or a device: reading it could block the run for ever.
            raise ValueError(f"base_weights {source!r}{where} is not a regular file; expected a .weights.h5 or .keras file")
        raise FileNotFoundError(f"base_weights file {source!r} does not exist{where}")
    unfreeze_named = settings.fine_tune_epochs > 0 and settings.unfreeze != "all"
    if not weights_file and not unfreeze_named:
        return
    from components.step_logging import quiet_tensorflow

    # Building the base model loads TensorFlow in the run-local process: under the same log
    # level as the steps, so a healthy CPU run logs no cuInit error line from here either.
    quiet_tensorflow("run-local")
    from components.finetune.model import base_layer_names, load_base_model
    from components.finetune.settings import select_unfrozen

    scratch = tempfile.mkdtemp(prefix="kfp-finetune-check-")
    try:
        if weights_file:
            if local:
                settings = dataclasses.replace(settings, base_weights=to_host(storage.strip_file_scheme(source)))
            else:
                _storage_call(f"base_weights {source!r}", storage.split_gcs_uri(source)[0], lambda: _fetch(source, scratch))
                settings = dataclasses.replace(settings, base_weights=os.path.join(scratch, os.path.basename(source)))
            try:
                base = load_base_model(settings, image_size, scratch)
            except ValueError as e:
                raise ValueError(str(e).replace(repr(settings.base_weights), repr(source))) from None
        else:
            base = load_base_model(dataclasses.replace(settings, base_weights="none"), image_size, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if unfreeze_named:
        select_unfrozen(base_layer_names(base), settings.unfreeze)


def _fetch(uri: str, folder: str) -> None:
    """Downloads object ``uri`` into ``folder`` under its base name.

    Raises:
        FileNotFoundError: no such object (named).
    """
    bucket, name = storage.split_gcs_uri(uri)
    blob = storage.gcs_client().bucket(bucket).blob(name)
    if not blob.exists(timeout=PROBE_TIMEOUT_S, retry=probe_retry()):
        storage.gcs_client().get_bucket(bucket, timeout=PROBE_TIMEOUT_S, retry=probe_retry())
        raise FileNotFoundError(f"base_weights {uri!r}: no object {name!r} in bucket {bucket!r}; expected a .weights.h5 or .keras file")
    blob.download_to_filename(os.path.join(folder, os.path.basename(name)), timeout=PROBE_TIMEOUT_S, retry=probe_retry())
