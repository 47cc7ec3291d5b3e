"""``kfp-finetune predict``: classify image files through an exported serving signature."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

from components.artifacts import (
    CLASS_NAMES, OUTPUT_CONFIDENCE, OUTPUT_LABEL, OUTPUT_PROBABILITIES, SERVING_DIR, SERVING_INPUT, SERVING_SIGNATURE,
)

_BATCH = 64


def resolve_model_dir(
    model_dir: str | None, registry_uri: str | None, model: str | None, version: int | None, alias: str | None, scratch: str
) -> tuple[str, dict[str, Any]]:
    """The local folder of the serving SavedModel to use, and where it came from.

    Either ``model_dir`` (a serving SavedModel folder, e.g. a registry version folder, or a
    folder holding one as ``serving/``, e.g. a finetune step's model output) or ``registry_uri`` + ``model`` + (``version`` or ``alias``).

    Raises:
        ValueError: neither or both ways given, or a registry reference missing its model name.
        components.registry.RegistryError: the model, version or alias does not exist.
        FileNotFoundError: ``model_dir`` holds no ``saved_model.pb``.
    """
    if bool(model_dir) == bool(registry_uri):
        raise ValueError("give either --model-dir DIR or --registry-uri URI --model NAME (--version N | --alias ENV)")
    if model_dir:
        if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")) and os.path.isfile(os.path.join(model_dir, SERVING_DIR, "saved_model.pb")):
            model_dir = os.path.join(model_dir, SERVING_DIR)
        if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
            raise FileNotFoundError(f"{model_dir!r} holds no saved_model.pb, nor {SERVING_DIR}/saved_model.pb "
                                    "(expected a serving SavedModel folder or a finetune model output)")
        return model_dir, {"model_dir": model_dir}
    from components import registry

    if not model:
        raise ValueError("--model NAME is required with --registry-uri")
    if (version is None) == (alias is None):
        raise ValueError("give exactly one of --version N or --alias ENV with --registry-uri")
    reg = registry.open_registry(registry_uri)
    resolved = reg.resolve(model, version=version, alias=alias)
    local = reg.download_version(resolved.model, resolved.version, os.path.join(scratch, f"{resolved.model}-{resolved.version}"))
    return local, {"model": resolved.model, "version": resolved.version, "uri": resolved.uri}


def _load_image(path: str) -> tuple[bytes | None, str | None]:
    """Normalized bytes of an image file, or the reason it cannot be classified."""
    from components import image_files

    if os.path.isdir(path):
        return None, "is a folder, not an image file"
    if not os.path.isfile(path):
        return None, "no such file"
    with open(path, "rb") as f:
        data = f.read()
    info = image_files.inspect_image(data)
    if not info["ok"]:
        return None, info["reason"]
    # The same normalization as preprocessing: WEBP, TIFF, CMYK or EXIF-rotated photos reach
    # the signature as TensorFlow decodes them correctly.
    return image_files.normalize_image(data), None


def predict_files(model_dir: str, files: list[str]) -> Iterator[dict[str, Any]]:
    """Classifies image files with the SavedModel's ``serving_default`` signature.

    Files may be in any format ``components.image_files`` accepts (PNG, JPEG, GIF, BMP, WEBP, TIFF,
    ...); they are normalized as in preprocessing before they reach the signature.

    Yields, per file in order: ``{"file", "label", "confidence" (in [0, 1]), "probabilities"
    ({class name: probability})}``, or ``{"file", "error"}`` for a file that is missing, a folder
    or not a readable image (the others are still classified).
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures[SERVING_SIGNATURE]
    class_names = [c.decode() for c in getattr(loaded, CLASS_NAMES).numpy()]
    for start in range(0, len(files), _BATCH):
        batch = [(path, *_load_image(path)) for path in files[start:start + _BATCH]]
        good = [data for _, data, _ in batch if data is not None]
        out = serve(**{SERVING_INPUT: tf.constant(good)}) if good else None
        i = 0
        for path, data, error in batch:
            if data is None:
                yield {"file": path, "error": error}
                continue
            yield {
                "file": path,
                "label": out[OUTPUT_LABEL][i].numpy().decode(),
                "confidence": float(out[OUTPUT_CONFIDENCE][i]),
                "probabilities": {c: float(p) for c, p in zip(class_names, out[OUTPUT_PROBABILITIES][i].numpy())},
            }
            i += 1


def predict(
    files: list[str],
    model_dir: str | None = None,
    registry_uri: str | None = None,
    model: str | None = None,
    version: int | None = None,
    alias: str | None = None,
) -> list[dict[str, Any]]:
    """``predict_files`` on a model given by folder or registry reference (see ``resolve_model_dir``)."""
    with tempfile.TemporaryDirectory(prefix="predict-") as scratch:
        local, _ = resolve_model_dir(model_dir, registry_uri, model, version, alias, scratch)
        return list(predict_files(local, files))
