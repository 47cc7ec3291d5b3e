"""``kfp-finetune predict``: classify image files through an exported serving signature."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

_BATCH = 64


def resolve_model_dir(
    model_dir: str | None, registry_uri: str | None, model: str | None, version: int | None, alias: str | None, scratch: str
) -> tuple[str, dict[str, Any]]:
    """The local folder of the serving SavedModel to use, and where it came from.

    Either ``model_dir`` (a serving SavedModel folder, e.g. a registry version folder or a
    finetune output's ``serving/``) or ``registry_uri`` + ``model`` + (``version`` or ``alias``).

    Raises:
        ValueError: neither or both ways given, or a registry reference missing its model name.
        components.registry.RegistryError: the model, version or alias does not exist.
        FileNotFoundError: ``model_dir`` holds no ``saved_model.pb``.
    """
    if bool(model_dir) == bool(registry_uri):
        raise ValueError("give either --model-dir DIR or --registry-uri URI --model NAME (--version N | --alias ENV)")
    if model_dir:
        if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
            raise FileNotFoundError(f"{model_dir!r} holds no saved_model.pb (expected a serving SavedModel folder)")
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


def predict_files(model_dir: str, files: list[str]) -> Iterator[dict[str, Any]]:
    """Classifies image files with the SavedModel's ``serving_default`` signature.

    Yields, per file in order: ``{"file", "label", "confidence" (in [0, 1]), "probabilities"
    ({class name: probability})}``.

    Files may be in any format ``components.images`` accepts (PNG, JPEG, GIF, BMP, WEBP, TIFF,
    ...); they are normalized as in preprocessing before they reach the signature.

    Raises:
        FileNotFoundError: a file does not exist (named; checked before any prediction).
        ValueError: a file is not a readable image (named).
    """
    import tensorflow as tf

    from components import images

    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"no such image file: {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures["serving_default"]
    class_names = [c.decode() for c in loaded.class_names.numpy()]
    for start in range(0, len(files), _BATCH):
        batch = files[start:start + _BATCH]
        contents = []
        for path in batch:
            with open(path, "rb") as f:
                data = f.read()
            # The same normalization as preprocessing: WEBP, TIFF, CMYK or EXIF-rotated photos
            # reach the signature as TensorFlow decodes them correctly.
            try:
                contents.append(images.normalize_image(data))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path!r} is not a readable image: {e}") from e
        out = serve(image_bytes=tf.constant(contents))
        for i, path in enumerate(batch):
            yield {
                "file": path,
                "label": out["label"][i].numpy().decode(),
                "confidence": float(out["confidence"][i]),
                "probabilities": {c: float(p) for c, p in zip(class_names, out["probabilities"][i].numpy())},
            }


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
