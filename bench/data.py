"""Benchmark data: scikit-learn's handwritten digits written as class folders of image files.

Nothing is downloaded: the 1,797 bundled 8x8 digits (``sklearn.datasets.load_digits``) are the
source. ``write_digit_jpegs`` upscales them to RGB JPEGs of 96 px, the size
the project's throughput figures were first measured at; past 1,797 images each further copy is shifted by a pixel, so every file
has distinct content (the preprocess step groups identical images as duplicates).
"""

from __future__ import annotations

import os


def write_digit_jpegs(out_dir: str, num_images: int, size: int = 96, num_classes: int = 10, quality: int = 90) -> int:
    """Writes ``num_images`` digit JPEGs as ``<out_dir>/<digit>/<index>.jpg``.

    Args:
        out_dir: Output folder (created).
        num_images: How many files to write; images cycle over the digits of the first
            ``num_classes`` classes.
        size: Width and height in pixels (bicubic upscale of the 8x8 originals).
        num_classes: Use the digits ``0 .. num_classes - 1`` only.
        quality: JPEG quality (Pillow's scale, 1-95).

    Returns:
        The number of files written (``num_images``).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = [i for i, t in enumerate(data.target) if int(t) < num_classes]
    for n in range(num_images):
        index = keep[n % len(keep)]
        shift = n // len(keep)
        pixels = np.round(data.images[index] * 255.0 / 16.0).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BICUBIC)
        if shift:
            # A one-pixel roll per extra copy keeps every file's content (and hash) distinct.
            image = Image.fromarray(np.roll(np.asarray(image), shift, axis=1))
        folder = os.path.join(out_dir, str(int(data.target[index])))
        os.makedirs(folder, exist_ok=True)
        image.convert("RGB").save(os.path.join(folder, f"{n:05d}.jpg"), format="JPEG", quality=quality)
    return num_images


def list_files(data_dir: str) -> list[str]:
    """Every file under ``data_dir``'s class folders, sorted."""
    return sorted(
        os.path.join(data_dir, c, f) for c in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, c))
        for f in os.listdir(os.path.join(data_dir, c))
    )
