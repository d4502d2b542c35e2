"""Inputs a user sends -> the RGB image the model was trained on (one code path for ``serve``,
``ask`` and the MLflow pyfunc: :func:`model_image`).

A map is read the way ``wafersage ingest`` reads it, then rendered with the pipeline's palette at
the model's image size (:func:`wafersage.wafers.render.render_map`): a canonical ``.npy`` array, a map as
a nested list / JSON text, or a die-level grayscale image (one pixel a die; values within
``{0,1,2}`` or ``{0,128,255}``, as in ``loaders.PNG_ENCODINGS``; mode L/I/I;16/LA/1, a palette
image with gray colours, or an RGB image with equal channels). A colour image is a picture
rendered with :data:`wafersage.wafers.render.PALETTE` (e.g. by ``wafersage render``) and is kept,
resized with nearest neighbour when its size differs; one that carries its die-level map (as
``wafersage render`` and the pipeline write them, checked against its pixels) is re-rendered from
that map. Images and arrays come as PIL images, PNG/JPEG or ``.npy`` bytes or files, ``data:`` URLs
(what OpenAI clients send) or base64 text. Every bad input is a one-line :class:`WaferSageError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wafersage.errors import WaferSageError
from wafersage.wafers.loaders import PNG_ENCODINGS
from wafersage.wafers.rawtable import check_map, npy_header
from wafersage.wafers.render import MAP_KEY, embedded_map, render_map, save_png

log = logging.getLogger("wafersage.serving")
#: Largest image side accepted (pixels) and largest decoded image (pixels) - decompression bombs.
MAX_SIDE = 2048
MAX_PIXELS = 4_000_000
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,(.*)$", re.DOTALL)
NPY_MAGIC = b"\x93NUMPY"
MAP_EXTS = (".npy", ".png")
#: Image modes whose pixel values are gray levels as they are.
_GRAY_MODES = ("L", "I", "I;16", "I;16L", "I;16B", "I;16N")
_ENCODINGS_TEXT = " or ".join("{" + ",".join(map(str, sorted(v))) + "}" for v, _ in PNG_ENCODINGS)


def model_image(value: Any, size: int, source: str = "image", max_side: int = MAX_SIDE) -> Image.Image:
    """What the model sees for ``value``: a map file (``Path``, .npy or .png), a PIL image, PNG/JPEG
    or ``.npy`` bytes, a map array / nested list, or text (a ``data:`` URL, a map as JSON list,
    base64 PNG/.npy) -> the ``size`` x ``size`` RGB image (see the module docstring)."""
    if isinstance(value, Path):
        return _from_file(value, size, max_side)
    if isinstance(value, Image.Image):
        return _from_pil(value, source, size)
    if isinstance(value, bytes | bytearray):
        return decode_bytes(bytes(value), source, size, max_side)
    if isinstance(value, list | np.ndarray):
        return _map_image(value, source, size)
    if not isinstance(value, str) or not value.strip():
        raise WaferSageError(
            source, "image must be base64 PNG, a data URL or a map list", type(value).__name__
        )
    text = value.strip()
    if text.startswith("data:"):
        return decode_data_url(text, size, source, max_side)
    if text.startswith("["):
        try:
            return _map_image(json.loads(text), source, size)
        except json.JSONDecodeError as exc:
            raise WaferSageError(source, "map JSON is invalid", str(exc)) from None
    return decode_bytes(b64decode(text, source), source, size, max_side)


def fit(image: Image.Image, size: int) -> Image.Image:
    """``image`` as RGB, ``size`` x ``size`` (nearest neighbour keeps the palette's colours)."""
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.NEAREST)


def _map_image(m: Any, source: str, size: int) -> Image.Image:
    """A canonical map (array or nested list), validated by ``rawtable.check_map``, rendered."""
    return render_map(check_map(m, "canonical", source, None), size)


def _gray_pixels(image: Image.Image) -> np.ndarray | None:
    """The gray levels of a grayscale image (2-D), or ``None`` for a colour image."""
    mode = image.mode
    if mode in _GRAY_MODES:
        return np.asarray(image)
    if mode in ("1", "LA"):
        return np.asarray(image.convert("L"))
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
    return None


def die_map(image: Image.Image, source: str) -> np.ndarray | None:
    """The canonical map of a die-level grayscale image (read as ``ingest --source png-folder``
    reads a PNG), or ``None`` for a colour image (a rendered picture)."""
    gray = _gray_pixels(image)
    if gray is None:
        return None
    values = frozenset(np.unique(gray).tolist())
    for allowed, encoding in PNG_ENCODINGS:
        if values <= allowed:
            return check_map(gray, encoding, source, None)
    raise WaferSageError(
        source,
        "grayscale image values match no map encoding",
        f"values {sorted(values)[:8]}; expected a subset of {_ENCODINGS_TEXT} (a rendered map is RGB)",
    )


def _from_pil(image: Image.Image, source: str, size: int) -> Image.Image:
    m = die_map(image, source)
    if m is None:
        m = drawn_map(image, source)
    if m is None:
        _warn_bare_picture()
        return fit(image, size)
    return render_map(m, size)


@functools.cache
def _warn_bare_picture() -> None:
    """Say once a process that a picture without its die-level map is read from its pixels."""
    log.warning(
        "a picture without its die-level map is read from its pixels and answered less exactly; "
        "send .npy maps, die-level PNGs or `wafersage render` output"
    )


def drawn_map(image: Image.Image, source: str) -> np.ndarray | None:
    """The die-level map a rendered picture carries (``wafersage render`` writes it into the PNG),
    checked against the picture's own pixels; ``None`` when it carries none."""
    m = embedded_map(image, source)
    if m is None:
        return None
    w, h = image.size
    if w != h or w % 32 or not np.array_equal(np.asarray(render_map(m, w)), np.asarray(image.convert("RGB"))):
        raise WaferSageError(source, f"the image's {MAP_KEY} map does not match its pixels", f"{w}x{h}")
    return m


def decode_bytes(data: bytes, source: str, size: int, max_side: int = MAX_SIDE) -> Image.Image:
    """PNG/JPEG or ``.npy`` bytes -> the model's image (dimension limits checked before decoding)."""
    if data.startswith(NPY_MAGIC):
        fh = io.BytesIO(data)
        npy_header(fh, source, max_side * max_side * 8)  # shape and dtype checked before allocating
        fh.seek(0)
        try:
            arr = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
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
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL: broken chunk
        raise WaferSageError(source, "image data is truncated or corrupt", type(exc).__name__) from None
    return _from_pil(img, source, size)


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


def _from_file(path: Path, size: int, max_side: int) -> Image.Image:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WaferSageError(path, "file not found") from None
    except OSError as exc:
        raise WaferSageError(path, "cannot read file", type(exc).__name__) from None
    if path.suffix.lower() == ".npy" and not data.startswith(NPY_MAGIC):
        raise WaferSageError(path, "not a readable .npy array", "no .npy header")
    return decode_bytes(data, str(path), size, max_side)


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
            path,
            "map must be a .npy canonical map, a die-level grayscale .png or a .png rendered by "
            "`wafersage render`",
        )
    return [path]


def png_data_url(image: Image.Image) -> str:
    """A PIL image as the ``data:image/png;base64,...`` URL OpenAI clients send (a rendered map
    keeps the die-level map it carries)."""
    buf = io.BytesIO()
    save_png(image, buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
