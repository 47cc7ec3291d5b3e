"""The component image: the one place its name and tag are kept.

Every KFP component of this project runs in this image (it has the project and its pinned
dependencies installed, see ``docker/Dockerfile``). Override it when compiling with
``kfp-finetune compile --image REF`` (or the ``KFP_FINETUNE_IMAGE`` variable, read only when the
command runs, never at import time).
"""

IMAGE_NAME = "ghcr.io/kfp-finetune/kfp-finetune"
IMAGE_TAG = "0.1.0"
COMPONENT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG}"
