"""Map -> image: deterministic, fixed palette, fail dies never lost when downscaling.

A rendered image carries the die-level map it was drawn from (:data:`MAP_KEY`: in the PIL image's
``info`` and, saved, as a compressed PNG text chunk), so whoever reads the picture (grounding, the
specialist) measures the map at die resolution rather than from the downscaled pixels.
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.rawtable import MAX_SIDE, MAX_SIDE_LIMIT, MIN_SIDE, check_map, npy_header

#: Fixed palette (RGB) per canonical value.
PALETTE: dict[int, tuple[int, int, int]] = {
    OFF: (255, 255, 255),
    PASS: (70, 130, 180),
    FAIL: (220, 30, 30),
}
_LUT = np.array([PALETTE[OFF], PALETTE[PASS], PALETTE[FAIL]], dtype=np.uint8)
#: The key of the die-level map in a rendered image's ``info`` and PNG text chunks.
MAP_KEY = "wafersage:map"
_DIGITS = np.frombuffer(b"012", dtype=np.uint8)
_MAP_TEXT = re.compile(r"^(\d{1,4})x(\d{1,4}):([012]*)$")
#: The image side when params.yaml does not set ``render.size`` (4 visual tokens; see docs/benchmarks.md).
DEFAULT_SIZE = 64


def check_size(size: int) -> int:
    """Image sides must be positive multiples of 32 (the VLM's patch 16 merged 2x2)."""
    if size <= 0 or size % 32:
        raise WaferSageError(None, "render size must be a positive multiple of 32", f"got {size}")
    return size


def resample(m: np.ndarray, size: int) -> np.ndarray:
    """Fit a canonical map into ``size`` x ``size`` keeping its aspect ratio, centred, padded with
    off-wafer. Each pixel takes the max over the dies it covers (fail > pass > off), so a
    one-die scratch survives downscaling; upscaling repeats dies (nearest)."""
    r, c = m.shape
    scale = size / max(r, c)
    h, w = max(1, round(r * scale)), max(1, round(c * scale))
    rs = np.floor(np.arange(h) * r / h).astype(np.intp)
    cs = np.floor(np.arange(w) * c / w).astype(np.intp)
    img = np.maximum.reduceat(np.maximum.reduceat(m, rs, axis=0), cs, axis=1)
    out = np.full((size, size), OFF, dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def map_text(m: np.ndarray) -> str:
    """A canonical map as text: ``<rows>x<cols>:`` and one digit a die, row by row."""
    m = np.asarray(m, dtype=np.uint8)
    return f"{m.shape[0]}x{m.shape[1]}:" + _DIGITS[m.ravel()].tobytes().decode("ascii")


def map_from_text(text: str, source: object = "image") -> np.ndarray:
    """The canonical map of :func:`map_text`'s text (any other text is a one-line error)."""
    match = _MAP_TEXT.match(text) if isinstance(text, str) and len(text) <= 16 + MAX_SIDE_LIMIT**2 else None
    if match is None:
        raise WaferSageError(source, f"the image's {MAP_KEY} text is not a map", str(text)[:40])
    rows, cols, digits = int(match.group(1)), int(match.group(2)), match.group(3)
    if (
        not (MIN_SIDE <= rows <= MAX_SIDE_LIMIT and MIN_SIDE <= cols <= MAX_SIDE_LIMIT)
        or len(digits) != rows * cols
    ):
        raise WaferSageError(source, f"the image's {MAP_KEY} text has the wrong size", f"{rows}x{cols}")
    return (np.frombuffer(digits.encode("ascii"), dtype=np.uint8) - ord("0")).reshape(rows, cols)


def embedded_map(image: object, source: object = "image") -> np.ndarray | None:
    """The die-level map a rendered image carries (:data:`MAP_KEY`), or ``None``."""
    text = getattr(image, "info", {}).get(MAP_KEY)
    return None if text is None else map_from_text(text, source)


def render_map(m: np.ndarray, size: int = DEFAULT_SIZE) -> Image.Image:
    """The RGB image of a canonical map, carrying the map itself (:data:`MAP_KEY`)."""
    m = np.asarray(m, dtype=np.uint8)
    image = Image.fromarray(_LUT[resample(m, check_size(size))], mode="RGB")
    image.info[MAP_KEY] = map_text(m)
    return image


def save_png(image: Image.Image, target: Path | BytesIO) -> None:
    """``image`` as PNG, its die-level map (if any, and small enough for PIL to read back) in a
    compressed text chunk (deterministic)."""
    info = PngImagePlugin.PngInfo()
    text = image.info.get(MAP_KEY)
    if isinstance(text, str) and len(text) <= PngImagePlugin.MAX_TEXT_CHUNK:
        info.add_text(MAP_KEY, text, zip=True)
    image.save(target, format="PNG", optimize=False, pnginfo=info)


def png_bytes(m: np.ndarray, size: int) -> bytes:
    """The rendered map as PNG bytes (deterministic, the map in a text chunk)."""
    buf = BytesIO()
    save_png(render_map(m, size), buf)
    return buf.getvalue()


def read_npy_map(path: Path, max_side: int | None = None) -> np.ndarray:
    """A canonical map from a .npy file (no pickles), validated; the header (2-D, numeric, sides at
    most ``max_side``, default ``rawtable.MAX_SIDE``) is checked before the array is allocated."""
    side = MAX_SIDE if max_side is None else max_side
    try:
        with open(path, "rb") as fh:
            shape, dtype = npy_header(fh, path, side * side * 8)
            if len(shape) != 2:
                raise WaferSageError(path, "map must be 2-D", f"shape {shape}")
            if not all(MIN_SIDE <= d <= side for d in shape):
                detail = f"{shape[0]}x{shape[1]}, sides must be {MIN_SIDE}..{side}"
                raise WaferSageError(path, "map dimensions out of range", detail)
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
    except FileNotFoundError:
        raise WaferSageError(path, "file not found") from None
    except IsADirectoryError:
        raise WaferSageError(path, "not a readable .npy array", "a folder") from None
    except (ValueError, OSError, EOFError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WaferSageError(path, "not a readable .npy array", detail) from None
    return check_map(arr, "canonical", path, None, max_side=side)


def render_path(src: Path, dst: Path, size: int = DEFAULT_SIZE) -> list[Path]:
    """Render one .npy map to a PNG, or a folder of them to a folder of PNGs (all checked first,
    so a bad map leaves no output)."""
    check_size(size)
    if src.is_dir():
        files = sorted(src.glob("*.npy"))
        if not files:
            raise WaferSageError(src, "no .npy maps in folder")
        maps = [read_npy_map(f) for f in files]
        with atomic_path(dst, directory=True) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            for f, m in zip(files, maps, strict=True):
                save_png(render_map(m, size), tmp / f"{f.stem}.png")
        return [dst / f"{f.stem}.png" for f in files]
    image = render_map(read_npy_map(src), size)
    with atomic_path(dst) as tmp:
        save_png(image, tmp)
    return [dst]


def gallery(
    maps: list[np.ndarray], titles: list[str], size: int = DEFAULT_SIZE, ncols: int = 8
) -> Image.Image:
    """A grid of rendered maps with a caption under each (for MLflow and reports)."""
    from PIL import ImageDraw

    n = len(maps)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    cap = 14
    sheet = Image.new("RGB", (ncols * (size + 4), nrows * (size + cap + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (m, t) in enumerate(zip(maps, titles, strict=True)):
        x, y = (i % ncols) * (size + 4), (i // ncols) * (size + cap + 4)
        sheet.paste(render_map(m, size), (x, y))
        draw.text((x + 2, y + size + 1), t[: size // 6], fill=(0, 0, 0))
    return sheet
