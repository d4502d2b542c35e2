"""Inputs a user sends -> the RGB image the model was trained on.

Accepted: a canonical ``.npy`` map (rendered here with the pipeline's palette at the model's image
size), a PNG (or any PIL image, e.g. one written by ``wafersage render``; resized with nearest
neighbour when its size differs), a ``data:`` URL of either (what OpenAI clients send), base64 PNG
text, or a map as a nested list / JSON text. Every bad input is a :class:`WaferSageError`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wafersage.errors import WaferSageError
from wafersage.render import read_npy_map, render_map

#: Largest image side accepted (pixels) and largest decoded image (pixels) - decompression bombs.
MAX_SIDE = 2048
MAX_PIXELS = 4_000_000
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,(.*)$", re.DOTALL)
NPY_MAGIC = b"\x93NUMPY"
MAP_EXTS = (".npy", ".png")


def fit(image: Image.Image, size: int) -> Image.Image:
    """``image`` as RGB, ``size`` x ``size`` (nearest neighbour keeps the palette's colours)."""
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.NEAREST)


def _map_image(m: Any, source: str, size: int) -> Image.Image:
    """A canonical map (array or nested list), validated by ``rawtable.check_map``, rendered."""
    from wafersage.rawtable import check_map

    return render_map(check_map(m, "canonical", source, None), size)


def decode_bytes(data: bytes, source: str, size: int, max_side: int = MAX_SIDE) -> Image.Image:
    """PNG/JPEG or ``.npy`` bytes -> the model's image (dimension limits checked before decoding)."""
    if data.startswith(NPY_MAGIC):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise WaferSageError(source, "not a readable .npy array", str(exc).splitlines()[0]) from None
        return _map_image(arr, source, size)
    try:
        img = Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise WaferSageError(source, "not a readable image", type(exc).__name__) from None
    w, h = img.size
    if max(w, h) > max_side or w * h > MAX_PIXELS:
        raise WaferSageError(source, f"image too large (max {max_side} px a side)", f"{w}x{h}")
    try:
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise WaferSageError(source, "image data is truncated or corrupt", type(exc).__name__) from None
    return fit(img, size)


def decode_data_url(url: str, size: int, source: str = "image_url", max_side: int = MAX_SIDE) -> Image.Image:
    """A ``data:<mime>;base64,<payload>`` URL (image/png, image/jpeg, application/x-npy,
    application/octet-stream) -> the model's image."""
    if not isinstance(url, str):
        raise WaferSageError(source, "image_url.url must be a string")
    m = _DATA_URL.match(url.strip())
    if m is None:
        raise WaferSageError(source, "image must be a data URL (data:image/png;base64,...)", url[:40])
    if not m.group(3):
        raise WaferSageError(source, "data URL must be base64-encoded", url[:40])
    return decode_bytes(b64decode(m.group(4), source), source, size, max_side)


def b64decode(text: str, source: str) -> bytes:
    """Strict base64 (whitespace ignored); bad padding or characters are a one-line error."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WaferSageError(source, "invalid base64", str(exc)) from None


def decode_value(value: Any, size: int, source: str = "image") -> Image.Image:
    """A pyfunc/registry input cell: base64 PNG or .npy text, a data URL, a map as a nested list
    or as JSON text, or PIL image / raw bytes."""
    if isinstance(value, Image.Image):
        return fit(value, size)
    if isinstance(value, bytes | bytearray):
        return decode_bytes(bytes(value), source, size)
    if isinstance(value, list | np.ndarray):
        return _map_image(value, source, size)
    if not isinstance(value, str) or not value.strip():
        raise WaferSageError(
            source, "image must be base64 PNG, a data URL or a map list", type(value).__name__
        )
    text = value.strip()
    if text.startswith("data:"):
        return decode_data_url(text, size, source)
    if text.startswith("["):
        try:
            return _map_image(json.loads(text), source, size)
        except json.JSONDecodeError as exc:
            raise WaferSageError(source, "map JSON is invalid", str(exc)) from None
    return decode_bytes(b64decode(text, source), source, size)


def map_files(path: Path) -> list[Path]:
    """``path`` itself (a .npy or .png) or the .npy/.png files of a folder, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in MAP_EXTS)
        if not files:
            raise WaferSageError(path, "no .npy or .png maps in folder")
        return files
    if not path.exists():
        raise WaferSageError(path, "file not found")
    if path.suffix.lower() not in MAP_EXTS:
        raise WaferSageError(
            path, "map must be a .npy canonical map or a .png rendered by `wafersage render`"
        )
    return [path]


def read_map_file(path: Path, size: int) -> Image.Image:
    """A .npy canonical map (validated, rendered) or a .png (checked, fitted) as the model's image."""
    if path.suffix.lower() == ".npy":
        return render_map(read_npy_map(path), size)
    return decode_bytes(path.read_bytes(), str(path), size)


def png_data_url(image: Image.Image) -> str:
    """A PIL image as the ``data:image/png;base64,...`` URL OpenAI clients send."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
