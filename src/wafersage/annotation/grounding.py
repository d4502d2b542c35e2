"""Grounding: the map's analytic attributes as text beside the image in the VLM's prompt.

The mode is fixed when the base model is built (``init_model.grounding``), written into the model
folder's ``wafersage.json``, and read from there by every stage that prompts the model (SFT, GSPO,
evaluation, ``ask``/``serve``, the registered pyfunc), so training and serving always agree.

The attributes come from the map behind the model's input image, never from a label: the die-level
map the rendered image carries (:func:`wafersage.wafers.render.embedded_map`; every image the
pipeline renders, and every map ``serve``/``ask`` read, carry one), else the picture itself
(palette colours back to off/pass/fail per pixel). They are
:func:`wafersage.annotation.attributes.wafer_attributes` without labels, i.e. wafer-level yield and
fail share, cluster count, the dominant defect mass's zone / clock / distribution / area / density
/ elongation, and the label-free rule guess :func:`wafersage.annotation.attributes.infer_pattern`
(left out where a specialist's verdict follows: the model folder records which). The same image
gives the same text everywhere.

Modes: ``image`` (no text, the default), ``image+attributes``, ``attributes`` (the text with a
blank image: the ablation that shows what the image adds).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wafersage.annotation.attributes import wafer_attributes_batch
from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.render import PALETTE, embedded_map

IMAGE, IMAGE_ATTRIBUTES, ATTRIBUTES = "image", "image+attributes", "attributes"
MODES: tuple[str, ...] = (IMAGE, IMAGE_ATTRIBUTES, ATTRIBUTES)
_VALUES = np.array([OFF, PASS, FAIL], dtype=np.uint8)
_COLOURS = np.array([PALETTE[int(v)] for v in _VALUES], dtype=np.int32)


def check_mode(mode: str | None) -> str:
    """A valid grounding mode (``None``: a model folder from before the option, ``image``)."""
    mode = IMAGE if mode is None else str(mode)
    if mode not in MODES:
        raise WaferSageError("params.yaml", "init_model.grounding must be one of " + " | ".join(MODES), mode)
    return mode


def _rgb(image: Any) -> np.ndarray:
    """The pixels of an image (PIL or array) as an (h, w, 3) array (uint8 as given, else int32)."""
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise WaferSageError(None, "grounding needs an RGB image", f"shape {rgb.shape}")
    return rgb if rgb.dtype == np.uint8 else rgb.astype(np.int32)


def _nearest_palette(rgb: np.ndarray) -> np.ndarray:
    """The canonical value of each pixel of ``rgb`` (..., 3): the nearest palette colour (the
    first of equally near ones). Exact palette colours, every pixel of a lossless image, are
    matched directly; only the other pixels measure their distances."""
    out = np.zeros(rgb.shape[:-1], dtype=np.uint8)
    far = np.ones(out.shape, dtype=bool)
    if rgb.dtype == np.uint8:  # one integer per colour
        key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        for value, (r, g, b) in zip(_VALUES, _COLOURS.tolist(), strict=True):
            hit = key == ((r << 16) | (g << 8) | b)
            out[hit] = value
            far &= ~hit
    if far.any():
        px = rgb[far].astype(np.int32)
        out[far] = _VALUES[((px[:, None, :] - _COLOURS[None]) ** 2).sum(axis=-1).argmin(axis=-1)]
    return out


def image_to_map(image: Any) -> np.ndarray:
    """A rendered map image (PIL or array, RGB) back to canonical values, pixel by pixel: each
    pixel takes the nearest palette colour (robust to lossy re-encoding)."""
    return _nearest_palette(_rgb(image))


def images_to_maps(images: Sequence[Any]) -> list[np.ndarray]:
    """:func:`image_to_map` of each image; images of one size are decoded as one stack."""
    arrays = [_rgb(im) for im in images]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    out: list[np.ndarray] = [np.zeros(0, np.uint8)] * len(arrays)
    for group in groups.values():
        for i, m in zip(group, _nearest_palette(np.stack([arrays[i] for i in group])), strict=True):
            out[i] = m
    return out


def _pct(v: float | None) -> str:
    return f"{round(100 * float(v or 0.0))}%"


def attributes_texts(maps: Sequence[np.ndarray], rule_guess: bool = True) -> list[str]:
    """:func:`attributes_text` of each map (computed together, see
    :func:`wafersage.annotation.attributes.wafer_attributes_batch`)."""
    return [_facts(a, rule_guess) for a in wafer_attributes_batch(maps)]


def attributes_text(m: np.ndarray, rule_guess: bool = True) -> str:
    """One line of label-free facts about a canonical map (the grounding text), ending with the
    rule guess unless ``rule_guess`` is false."""
    return attributes_texts([m], rule_guess)[0]


def _facts(a: dict[str, Any], rule_guess: bool) -> str:
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
    if rule_guess:
        parts.append(f"rule guess {a['inferred_pattern']}")
    return "Map facts: " + "; ".join(parts) + "."


class Advisor(Protocol):
    """A helper model shipped in the model folder whose verdict on a map joins the grounding text
    (e.g. :class:`wafersage.modeling.specialist.Specialist`)."""

    def clauses(
        self, maps: Sequence[np.ndarray], dies: Sequence[np.ndarray | None] | None = None
    ) -> list[str]:
        """One text clause per canonical map as decoded from the model's input image, with the
        die-level map behind it where known."""
        ...


@dataclass(frozen=True)
class Grounder:
    """How a model folder's prompts are grounded: the ``mode``, optionally an :class:`Advisor`
    whose clause follows the map facts (modes with text only), and whether the facts end with the
    rule guess (a folder with a specialist leaves it out: on real WM-811K the VLM followed the rule
    guess against a confident specialist, see docs/benchmarks.md)."""

    mode: str = IMAGE
    advisor: Advisor | None = None
    rule_guess: bool = True

    def texts(self, images: Sequence[Any]) -> list[str]:
        """The grounding line of each image (PIL or RGB array), measured on the die-level map it
        carries, else on its pixels; images sharing pixels and map share work, and the distinct
        ones are decoded and measured together."""
        arrays = [np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images]
        dies = [embedded_map(im) for im in images]
        keys = [
            hashlib.md5(
                a.tobytes()
                + str(a.shape).encode()
                + (b"" if d is None else d.tobytes() + str(d.shape).encode())
            ).hexdigest()
            for a, d in zip(arrays, dies, strict=True)
        ]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        seen = dict(zip(first, images_to_maps([arrays[i] for i in first.values()]), strict=True))
        die = {k: dies[i] for k, i in first.items()}
        lines = _texts_cached({k: seen[k] if die[k] is None else die[k] for k in first}, self.rule_guess)
        if self.advisor is not None and seen:
            clauses = self.advisor.clauses(list(seen.values()), list(die.values()))
            lines = {k: f"{lines[k]} {c}" for k, c in zip(seen, clauses, strict=True)}
        return [lines[k] for k in keys]


Grounding = str | Grounder


def as_grounder(grounding: Grounding) -> Grounder:
    """A :class:`Grounder` from a mode name (no advisor) or a grounder."""
    return grounding if isinstance(grounding, Grounder) else Grounder(check_mode(grounding))


#: Attribute texts by (image content, rule guess shown) (a wafer's ten QA pairs share one image).
_TEXTS: dict[tuple[str, bool], str] = {}
_MAX_CACHED = 200_000


def _texts_cached(maps: dict[str, np.ndarray], rule_guess: bool) -> dict[str, str]:
    """The attribute text of each map (by content key), the uncached ones computed together."""
    todo = [k for k in maps if (k, rule_guess) not in _TEXTS]
    texts = attributes_texts([maps[k] for k in todo], rule_guess)
    fresh = {(k, rule_guess): t for k, t in zip(todo, texts, strict=True)}
    lines = {k: fresh[key] if (key := (k, rule_guess)) in fresh else _TEXTS[key] for k in maps}
    if len(_TEXTS) + len(fresh) > _MAX_CACHED:
        _TEXTS.clear()
    _TEXTS.update(fresh)
    return lines


def image_text(image: Any) -> str:
    """:func:`attributes_text` of a rendered map image (PIL), cached by pixel content."""
    return Grounder(IMAGE_ATTRIBUTES).texts([image])[0]


def blank_like(image: Any) -> Any:
    """An all-off-wafer image of the same size (what the ``attributes`` mode shows the model)."""
    from PIL import Image

    return Image.new("RGB", image.size, PALETTE[OFF])


def ground(grounding: Grounding, image: Any, question: str) -> tuple[Any, str]:
    """The (image, user text) the model sees for ``question`` about ``image``."""
    images, texts = ground_all(grounding, [image], [question])
    return images[0], texts[0]


def ground_all(
    grounding: Grounding, images: Sequence[Any], questions: Sequence[str]
) -> tuple[list[Any], list[str]]:
    """:func:`ground` over parallel lists (the advisor runs once over the distinct images)."""
    g = as_grounder(grounding)
    if g.mode == IMAGE:
        return list(images), [str(q) for q in questions]
    texts = g.texts(images)
    shown = [blank_like(im) for im in images] if g.mode == ATTRIBUTES else list(images)
    return shown, [f"{t}\n{q}" for t, q in zip(texts, questions, strict=True)]


def ground_pngs(
    grounding: Grounding, pngs: Sequence[bytes], questions: Sequence[str]
) -> list[tuple[bytes, str]]:
    """:func:`ground_all` for PNG-bytes image cells (the VQA tables): (PNG bytes, user text)."""
    g = as_grounder(grounding)
    if g.mode == IMAGE:
        return [(png, str(q)) for png, q in zip(pngs, questions, strict=True)]
    from PIL import Image

    decoded = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    images, texts = ground_all(g, decoded, questions)
    if g.mode == IMAGE_ATTRIBUTES:
        return list(zip(pngs, texts, strict=True))
    out = []
    for image, text in zip(images, texts, strict=True):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((buf.getvalue(), text))
    return out


def ground_png(grounding: Grounding, png: bytes, question: str) -> tuple[bytes, str]:
    """:func:`ground_pngs` of one cell."""
    return ground_pngs(grounding, [png], [question])[0]
