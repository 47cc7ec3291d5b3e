"""Image files as users' cameras, scanners and tools produce them: inspect, validate, normalize.

TensorFlow's ``tf.io.decode_image`` (used by the transform graph in training and serving) reads
PNG, JPEG, GIF and BMP, but not WEBP or TIFF, ignores the EXIF orientation that phones write into
JPEGs, and fails on CMYK JPEGs. ``inspect_image`` decodes every file once with Pillow to prove it
is whole; ``normalize_image`` re-encodes what TensorFlow would misread as a lossless PNG (RGB,
or L for grayscale), leaving the bytes of everything else untouched.
"""

from __future__ import annotations

import io
import threading
from typing import Any

# Pillow formats we accept (by what the file *is*, not its name).
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO"})
# Extensions taken as image files (other files in a class folder are listed as skipped).
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".ico",
)
# Kept byte-for-byte: TensorFlow decodes these exactly as Pillow shows them.
_NATIVE = {"PNG": {"L", "LA", "RGB", "RGBA", "P"}, "JPEG": {"L", "RGB"}, "GIF": {"P", "L", "RGB", "RGBA"}}
_EXIF_ORIENTATION = 0x0112
# Names that operating systems and tools leave in folders: never data, never a class.
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", "@eadir", "lost+found", "$recycle.bin", ".ds_store", "icon\r"}
DEFAULT_MAX_PIXELS = 50_000_000
# Pillow's own guard (Image.MAX_IMAGE_PIXELS, about 89 million pixels) is lifted only while a
# header is read again to name its size; the lock keeps other threads from opening images then.
_HEADER_LOCK = threading.Lock()


def is_junk(name: str) -> bool:
    """True for names tools and operating systems leave in folders (hidden files included)."""
    return name.startswith(".") or name.startswith("~$") or name.lower() in _JUNK_NAMES


def _orientation(img: Any) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a damaged EXIF block: Pillow raises assorted errors; the pixels may be fine
        return 1


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Checks that ``data`` is a whole image, without ever decoding a decompression bomb.

    The header's declared size is checked against ``max_pixels`` *before* any pixel is decoded;
    then the image is fully decoded once (a truncated file fails here, not at 3 a.m. in training).

    Returns:
        ``{"ok": True, "format", "mode", "width", "height", "channels", "convert"}`` where
        ``convert`` says whether ``normalize_image`` will re-encode it; or
        ``{"ok": False, "reason"}`` with a human-readable reason.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        return {"ok": False, "reason": "empty file (0 bytes)"}
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt, mode = img.format, img.mode
            if width * height > max_pixels:
                return {"ok": False, "reason": f"{width}x{height} pixels exceeds the limit of {max_pixels} (max_pixels)"}
            if fmt not in ACCEPTED_FORMATS:
                return {"ok": False, "reason": f"image format {fmt} is not supported"}
            if width < 1 or height < 1:
                return {"ok": False, "reason": f"empty image ({width}x{height})"}
            orientation = _orientation(img)
            img.load()
    except UnidentifiedImageError:
        return {"ok": False, "reason": "not a readable image (unknown format)"}
    except Image.DecompressionBombError:
        # Pillow refuses to open an image of more than twice its own limit and says so in its
        # own words; the documented reason names the declared size and this project's limit.
        width, height = _declared_size(data)
        if width * height > max_pixels:
            return {"ok": False, "reason": f"{width}x{height} pixels exceeds the limit of {max_pixels} (max_pixels)"}
        return {"ok": False, "reason": f"{width}x{height} pixels exceeds Pillow's decompression-bomb limit of "
                                       f"{2 * Image.MAX_IMAGE_PIXELS} (2 x PIL.Image.MAX_IMAGE_PIXELS)"}
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # what Pillow raises for damaged data
        return {"ok": False, "reason": f"damaged image: {e}"}
    convert = mode not in _NATIVE.get(fmt, set()) or orientation != 1
    channels = {"1": 1, "L": 1, "P": 3, "LA": 2, "PA": 4, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3, "I": 1, "F": 1, "I;16": 1}.get(mode, 0)
    return {"ok": True, "format": fmt, "mode": mode, "width": width, "height": height, "channels": channels, "convert": convert}


def _declared_size(data: bytes) -> tuple[int, int]:
    """The width and height an image's header declares, read with Pillow's decompression-bomb
    guard lifted; no pixel is decoded (``Image.open`` reads the header only)."""
    from PIL import Image

    with _HEADER_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def normalize_image(data: bytes) -> bytes:
    """The bytes TensorFlow should decode for this image (see the module docstring).

    Unchanged for PNG (8/16-bit L, LA, RGB, RGBA, palette), JPEG (L, RGB, upright) and GIF.
    Anything else (WEBP, TIFF, BMP, CMYK JPEG, EXIF-rotated JPEG, 1-bit, 32-bit integer ...) is
    rotated upright, converted to RGB (grayscale stays L, transparency is composited on white)
    and re-encoded as PNG.

    Raises:
        PIL.UnidentifiedImageError, OSError: ``data`` is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        if img.mode in _NATIVE.get(img.format, set()) and _orientation(img) == 1:
            return data
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I") or img.mode == "F":
            # 16-bit (and 32-bit) grayscale from scanners and microscopes: keep the top 8 bits.
            import numpy as np

            pixels = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(pixels / 256.0 if pixels.max() > 255 else pixels, 0, 255).astype(np.uint8), mode="L")
        elif img.mode in ("1", "L"):
            img = img.convert("L")
        elif "A" in img.getbands() or img.mode == "P":
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            img = img.convert("RGB")
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue()
