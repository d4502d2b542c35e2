"""Grounding: the map's analytic attributes as text beside the image in the VLM's prompt.

The mode is fixed when the base model is built (``init_model.grounding``), written into the model
folder's ``wafersage.json``, and read from there by every stage that prompts the model (SFT, GSPO,
evaluation, ``ask``/``serve``, the registered pyfunc), so training and serving always agree.

The attributes come from the model's own input image (the rendered map, palette colours back to
off/pass/fail per pixel), never from a label: :func:`wafersage.attributes.wafer_attributes`
without labels, i.e. wafer-level yield and fail share, cluster count, the dominant defect mass's
zone / clock / distribution / area / density / elongation, and the label-free rule guess
:func:`wafersage.attributes.infer_pattern`. The same image gives the same text everywhere.

Modes: ``image`` (no text, the default), ``image+attributes``, ``attributes`` (the text with a
blank image: the ablation that shows what the image adds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from wafersage.encoding import FAIL, OFF, PASS
from wafersage.errors import WaferSageError

IMAGE, IMAGE_ATTRIBUTES, ATTRIBUTES = "image", "image+attributes", "attributes"
MODES: tuple[str, ...] = (IMAGE, IMAGE_ATTRIBUTES, ATTRIBUTES)


def check_mode(mode: str | None) -> str:
    """A valid grounding mode (``None``: a model folder from before the option, ``image``)."""
    mode = IMAGE if mode is None else str(mode)
    if mode not in MODES:
        raise WaferSageError("params.yaml", "init_model.grounding must be one of " + " | ".join(MODES), mode)
    return mode


def image_to_map(image: Any) -> np.ndarray:
    """A rendered map image (PIL or array, RGB) back to canonical values, pixel by pixel: each
    pixel takes the nearest palette colour (robust to lossy re-encoding)."""
    from wafersage.render import PALETTE

    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.int32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise WaferSageError(None, "grounding needs an RGB image", f"shape {rgb.shape}")
    values = np.array([OFF, PASS, FAIL], dtype=np.uint8)
    colours = np.array([PALETTE[int(v)] for v in values], dtype=np.int32)
    dist = ((rgb[:, :, None, :] - colours[None, None]) ** 2).sum(axis=-1)
    return values[dist.argmin(axis=-1)]


def _pct(v: float | None) -> str:
    return f"{round(100 * float(v or 0.0))}%"


def attributes_text(m: np.ndarray) -> str:
    """One line of label-free facts about a canonical map (the grounding text)."""
    from wafersage.attributes import wafer_attributes

    a = wafer_attributes(m)
    main = a["main"]
    n = int(a["n_components"])
    parts = [f"yield {_pct(a['yield'])}", f"{n} cluster" + ("" if n == 1 else "s")]
    if main.get("n_dies"):
        where = f"{main['distribution']} in the {main['zone']} zone"
        if main.get("clock") is not None:
            where += f" at {main['clock']} o'clock"
        parts += [
            f"main defect {where}",
            f"area {_pct(main.get('area_fraction'))}",
            f"density {_pct(main.get('density'))}",
            f"elongation {round(float(main.get('elongation') or 1.0), 1)}",
        ]
    else:
        parts.append("no defect cluster")
    parts.append(f"rule guess {a['inferred_pattern']}")
    return "Map facts: " + "; ".join(parts) + "."


#: Grounding texts by image content (a wafer's ten QA pairs share one image).
_TEXTS: dict[str, str] = {}
_MAX_CACHED = 200_000


def image_text(image: Any) -> str:
    """:func:`attributes_text` of a rendered map image (PIL), cached by pixel content."""
    arr = np.asarray(image.convert("RGB"))
    key = hashlib.md5(arr.tobytes() + str(arr.shape).encode()).hexdigest()
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) >= _MAX_CACHED:
            _TEXTS.clear()
        text = _TEXTS[key] = attributes_text(image_to_map(arr))
    return text


def blank_like(image: Any) -> Any:
    """An all-off-wafer image of the same size (what the ``attributes`` mode shows the model)."""
    from PIL import Image

    from wafersage.render import PALETTE

    return Image.new("RGB", image.size, PALETTE[OFF])


def ground(mode: str, image: Any, question: str) -> tuple[Any, str]:
    """The (image, user text) the model sees for ``question`` about ``image`` under ``mode``."""
    mode = check_mode(mode)
    if mode == IMAGE:
        return image, str(question)
    text = f"{image_text(image)}\n{question}"
    return (blank_like(image) if mode == ATTRIBUTES else image), text


def ground_all(mode: str, images: Sequence[Any], questions: Sequence[str]) -> tuple[list[Any], list[str]]:
    """:func:`ground` over parallel lists."""
    if check_mode(mode) == IMAGE:
        return list(images), [str(q) for q in questions]
    pairs = [ground(mode, im, q) for im, q in zip(images, questions, strict=True)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def ground_png(mode: str, png: bytes, question: str) -> tuple[bytes, str]:
    """:func:`ground` for a PNG-bytes image cell (the VQA tables), PNG bytes back."""
    if check_mode(mode) == IMAGE:
        return png, str(question)
    import io

    from PIL import Image

    image, text = ground(mode, Image.open(io.BytesIO(png)).convert("RGB"), question)
    if mode == IMAGE_ATTRIBUTES:
        return png, text
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), text
