"""The component images: the one place their name and tags are kept.

Every KFP component of this project runs in one of these images (the project and its pinned
dependencies installed, see ``docker/Dockerfile``): the CPU image (plain ``tensorflow``) or the
GPU image (``tensorflow[and-cuda]``: the CUDA 12 and cuDNN 9 libraries inside, the node supplies
only the NVIDIA driver). ``docker/build-image.sh`` and ``docker/kind-up.sh`` read the constants
below with ``sed``: keep each one a plain ``NAME = "value"`` line. Override the image when compiling with
``kfp-finetune compile --image REF`` (or the ``KFP_FINETUNE_IMAGE`` variable, read only when the
command runs, never at import time).
"""

IMAGE_NAME = "ghcr.io/kfp-finetune/kfp-finetune"
IMAGE_TAG = "0.1.0"
GPU_IMAGE_TAG = "0.1.0-gpu"
COMPONENT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG}"
GPU_COMPONENT_IMAGE = f"{IMAGE_NAME}:{GPU_IMAGE_TAG}"
