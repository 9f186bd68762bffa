"""Image payload helpers shared by the writers: JPEG encoding and header checks (Pillow).

The tf.data pipeline decodes JPEG with ``tf.io.decode_jpeg`` (see ``pipeline.py``); Pillow is
only used when writing, where images arrive one at a time from a converter.
"""
import io

import numpy as np
from PIL import Image

_MODES = {1: "L", 3: "RGB"}
JPEG_MAGIC = b"\xff\xd8"


def check_uint8_hwc(image, what="image"):
    """Returns ``image`` as a uint8 [H, W, C] array (C in 1, 3) or raises a ValueError."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[-1] not in _MODES:
        raise ValueError(f"{what} must be [H, W, C] with C in (1, 3), got shape {image.shape}")
    return image


def encode_jpeg(image, quality=95):
    """uint8 [H, W, C] -> JPEG bytes (Pillow defaults: 4:2:0 chroma subsampling for RGB)."""
    image = check_uint8_hwc(image)
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image, _MODES[image.shape[-1]]).save(
        buf, format="JPEG", quality=quality
    )
    return buf.getvalue()


def _open_jpeg(data):
    if not data.startswith(JPEG_MAGIC):
        raise ValueError("image bytes are not a JPEG (missing the FF D8 start-of-image marker)")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:  # Pillow raises several types for a broken header
        raise ValueError(f"unreadable JPEG header: {e}") from e
    return img


def jpeg_shape(data):
    """(H, W, C) of JPEG bytes from the header only (no decode); C is 1 for grayscale, else 3."""
    img = _open_jpeg(data)
    return (img.height, img.width, 1 if img.mode == "L" else 3)


def decode_jpeg(data, channels=3):
    """JPEG bytes -> uint8 [H, W, channels] (full decode; used when writing raw from bytes)."""
    try:
        img = _open_jpeg(data).convert(_MODES[channels])
    except OSError as e:  # Pillow reports truncated or corrupt image data as OSError
        raise ValueError(f"corrupt JPEG data: {e}") from e
    return np.asarray(img, np.uint8).reshape(img.height, img.width, channels)
