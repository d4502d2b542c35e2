"""The words wafersage uses for attributes, and the rule that keeps class names out of questions.

One place for: how a zone, a clock position, a distribution, a density or a pattern is said (with
several phrasings each, picked by a seeded generator), and the surface forms of each class name.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from wafersage.annotation.answer_parser import spelling_pattern
from wafersage.wafers import taxonomy
from wafersage.wafers.taxonomy import NONE

#: How each zone is said (first entry = the canonical phrase used in rubrics).
ZONE_PHRASES: dict[str, list[str]] = {
    "center": [
        "the central zone",
        "the middle of the wafer",
        "the core of the wafer",
        "the wafer's central area",
    ],
    "inner": ["the inner zone", "the inner part of the wafer", "the area just outside the core"],
    "middle": ["the middle ring of the wafer", "the mid-radius zone", "halfway between core and rim"],
    "edge": ["the edge zone", "the wafer periphery", "the outer rim", "the outermost band of dies"],
    "whole": ["the whole wafer", "the entire wafer surface", "all zones of the wafer"],
}
#: How each distribution is said.
DISTRIBUTION_PHRASES: dict[str, list[str]] = {
    "clustered": ["clustered", "a compact cluster", "a tight group of failing dies", "a dense blob"],
    "scattered": ["scattered", "spread randomly", "dispersed without structure", "sprinkled across the map"],
    "ring": ["ring-shaped", "an annular band", "a circular band", "a closed or nearly closed ring"],
    "arc": ["arc-shaped", "a crescent along the rim", "a partial arc", "an edge-hugging crescent"],
    "line": ["linear", "a thin line", "a narrow streak", "an elongated trail of dies"],
    "full": ["covering nearly everything", "an almost complete failure", "blanket failure"],
}
#: Geometric structure and texture of each pattern (morphology dimension).
STRUCTURE: dict[str, tuple[str, str]] = {
    "Center": ("a roughly circular blob around the wafer centre", "solid and dense"),
    "Donut": ("an annulus with a passing core", "banded, with a clear hole"),
    "Edge-Loc": ("a crescent touching the rim on one side", "dense near the rim, thinning inwards"),
    "Edge-Ring": ("a thin band along the circumference", "continuous or nearly continuous"),
    "Loc": ("a compact blob away from the rim", "patchy but contiguous"),
    "Near-full": ("failure across almost the whole wafer", "uniformly dense"),
    "Random": ("no coherent shape", "salt-and-pepper"),
    "Scratch": ("a long narrow streak", "thin and continuous with small gaps"),
    NONE: ("no coherent shape", "isolated single fails"),
}
#: The one word a morphology answer must use for each pattern (a substring of its structure).
MORPH_KEYWORD: dict[str, str] = {
    "Center": "blob",
    "Donut": "annulus",
    "Edge-Loc": "crescent",
    "Edge-Ring": "band",
    "Loc": "blob",
    "Near-full": "almost the whole wafer",
    "Random": "no coherent shape",
    "Scratch": "streak",
    NONE: "isolated",
}
#: Opposite clock positions are 6 hours apart.
CLOCK_WORDS = {h: f"{h} o'clock" for h in range(1, 13)}

#: Surface forms of each class name (lower-case regexes); a question must not match its own.
CLASS_TERMS: dict[str, str] = {
    "Center": r"\bcent(?:er|re)\b",
    "Donut": r"\bdou?gh?nut\b",
    "Edge-Loc": r"\bedge[- _]?loc\b",
    "Edge-Ring": r"\bedge[- _]?ring\b",
    "Loc": r"\bloc\b",
    "Near-full": r"\bnear[- _]?full\b",
    "Random": r"\brandom\b",
    "Scratch": r"\bscratch(?:es)?\b",
}


def structure(name: str) -> tuple[str, str]:
    """(geometric structure, texture) of class ``name``; a class :data:`STRUCTURE` does not know
    (a configured taxonomy's own) is described by its name."""
    return STRUCTURE.get(name) or (f"the {name} signature", "as the fab defines the class")


def morph_keyword(name: str) -> str:
    """The word a morphology answer must use for ``name`` (a substring of its :func:`structure`)."""
    return MORPH_KEYWORD.get(name) or f"{name} signature"


def class_term(name: str) -> str:
    """The regex of ``name``'s surface forms: :data:`CLASS_TERMS`', else its name and configured
    synonyms (any case, any run of space, ``-`` or ``_`` between words)."""
    if name in CLASS_TERMS:
        return CLASS_TERMS[name]
    forms = dict.fromkeys(spelling_pattern(s) for s in taxonomy.active().spellings(name))
    return r"\b(?:" + "|".join(forms) + r")\b"


def mentions_class(text: str, labels: list[str] | tuple[str, ...]) -> bool:
    """Whether ``text`` names any of ``labels`` (any spelling of :func:`class_term`)."""
    low = text.lower()
    return any(re.search(class_term(c), low) for c in labels if c != NONE)


def pick(rng: np.random.Generator, options: list[str]) -> str:
    """One option, seeded."""
    return options[int(rng.integers(len(options)))]


def clock_phrase(clock: int | None) -> str:
    """``"3 o'clock"``, or a phrase for a rotationally symmetric / central mass."""
    return CLOCK_WORDS[int(clock)] if clock else "no preferred clock position"


def opposite_clock(clock: int) -> int:
    """The clock position six hours away."""
    return (int(clock) + 5) % 12 + 1


def density_word(density: float | None) -> str:
    """sparse / moderate / dense from the fail share inside the defect region."""
    d = density or 0.0
    return "dense" if d >= 0.75 else "moderate" if d >= 0.5 else "sparse"


def class_list(labels: list[str]) -> str:
    """``Center``, ``Center and Scratch``, ``Center, Loc and Scratch``."""
    if len(labels) <= 1:
        return labels[0] if labels else NONE
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def percent(v: float | None) -> str:
    """A share as a rounded percentage."""
    return f"{round(100 * (v or 0.0))}%"


def pattern_sentence(p: dict[str, Any], rng: np.random.Generator) -> str:
    """One fluent sentence about one pattern's defect mass."""
    name = p["class"]
    if not p.get("separable", True):
        return f"The {name} component is faint and could not be separated from the other fails."
    zone = pick(rng, ZONE_PHRASES.get(p["zone"] or "whole", ZONE_PHRASES["whole"]))
    dist = pick(rng, DISTRIBUTION_PHRASES.get(p["distribution"] or "clustered", ["clustered"]))
    where = f" around {clock_phrase(p['clock'])}" if p.get("clock") else ""
    templates = [
        "The {name} signature is {dist}, located in {zone}{where}.",
        "A {name} pattern appears as {dist} in {zone}{where}.",
        "In {zone}{where} the map shows {dist}, typical of {name}.",
        "{zone_cap}{where} carries {dist} of fails, the {name} component.",
    ]
    t = pick(rng, templates)
    return t.format(name=name, dist=dist, zone=zone, where=where, zone_cap=zone[0].upper() + zone[1:])
