"""The component images: the one place their name and tags are kept.

Every KFP component of this project runs in one of these images (the project and its pinned
dependencies installed, see ``docker/Dockerfile``): the CPU image (plain ``tensorflow``) or the
GPU image (``tensorflow[and-cuda]``: the CUDA 12 and cuDNN 9 libraries inside, the node supplies
only the NVIDIA driver). ``docker/build-image.sh`` and ``docker/kind-up.sh`` read the constants
below with ``sed``: keep each one a plain ``NAME = "value"`` line. Override the image when compiling with
``kfp-finetune compile --image REF`` (or the ``KFP_FINETUNE_IMAGE`` variable, read only when the
command runs, never at import time).
"""

import re

IMAGE_NAME = "ghcr.io/kfp-finetune/kfp-finetune"
IMAGE_TAG = "0.1.0"
GPU_IMAGE_TAG = "0.1.0-gpu"
COMPONENT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG}"
GPU_COMPONENT_IMAGE = f"{IMAGE_NAME}:{GPU_IMAGE_TAG}"


def check_reference(ref: str) -> str:
    """Checks a container image reference against the OCI distribution grammar.

    The grammar is ``distribution/reference`` (the one Docker, containerd and Kubernetes parse):
    ``[host[:port]/]path[:tag][@algorithm:hex]``, where each path component is lowercase
    letters and digits joined by ``.``, ``_``, ``__`` or dashes, a tag is up to 128 of
    ``[A-Za-z0-9_.-]`` not starting with ``.`` or ``-``, a digest's hex part has at least 32
    digits, and the name is at most 255 characters.

    Args:
        ref: e.g. ``ghcr.io/kfp-finetune/kfp-finetune:0.1.0``, ``localhost:5000/img@sha256:<64 hex>``.

    Returns:
        ``ref`` unchanged.

    Raises:
        ValueError: ``ref`` is not a reference (names it and the expected form).
    """
    match = _REFERENCE.fullmatch(ref)
    if match is None or len(match.group(1)) > 255:
        why = "is not a valid image reference" if match is None else "has a name longer than 255 characters"
        raise ValueError(
            f"image {ref!r} {why}: expected [HOST[:PORT]/]PATH[:TAG][@ALGORITHM:HEX] with PATH in lower case, "
            "e.g. ghcr.io/org/image:1.0"
        )
    return ref


def _reference_pattern() -> re.Pattern[str]:
    alphanumeric = r"[a-z0-9]+"
    component = rf"{alphanumeric}(?:(?:[._]|__|-+){alphanumeric})*"
    domain_part = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    host = rf"(?:{domain_part}(?:\.{domain_part})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
    name = rf"(?:{host}/)?{component}(?:/{component})*"
    tag = r"[\w][\w.-]{0,127}"
    digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
    return re.compile(rf"({name})(?::{tag})?(?:@{digest})?")


_REFERENCE = _reference_pattern()
