"""Analytic wafer descriptions: the paper's four variants (full analysis, spatial-only,
root-cause-only, structured JSON) written from the map's attributes, offline, in many phrasings
(the phrasing is drawn from a generator seeded by the wafer id, so reruns are identical)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from wafersage.annotation.knowledge import KnowledgeBase
from wafersage.annotation.phrasing import (
    class_list,
    density_word,
    pattern_sentence,
    percent,
    pick,
    structure,
)
from wafersage.wafers.taxonomy import NONE

VARIANTS: tuple[str, ...] = ("full", "spatial", "root_cause", "structured")


def wafer_rng(wafer_id: str, seed: int, salt: str = "") -> np.random.Generator:
    """A generator seeded by the wafer id (stable across runs and row orders)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{salt}:{wafer_id}".encode()).digest()[:8], "little")
    return np.random.default_rng(h)


def _overview(labels: list[str], attrs: dict[str, Any], rng: np.random.Generator) -> str:
    y = percent(attrs["yield"])
    defects = [c for c in labels if c != NONE]
    if not defects:
        return pick(
            rng,
            [
                "This wafer shows no systematic failure "
                f"pattern; yield is {y} and the few fails are isolated.",
                f"No defect signature: {y} of the dies pass and the failing ones are scattered singly.",
                f"A clean map at {y} yield, with only isolated failing dies and no spatial structure.",
            ],
        )
    kind = "a mixed-type map combining" if len(defects) > 1 else "a"
    name = class_list(defects)
    suffix = " pattern" if len(defects) == 1 else " patterns"
    return pick(
        rng,
        [
            f"This is {kind} {name}{suffix} at {y} yield.",
            f"The wafer map shows {kind} {name}{suffix}; {y} of the dies pass.",
            f"Yield is {y}, and the failing dies form {kind} {name}{suffix}.",
        ],
    )


def spatial_text(labels: list[str], attrs: dict[str, Any], rng: np.random.Generator) -> str:
    """Where the defect mass lies: zone, clock position, radial band, distribution."""
    pats = attrs["patterns"]
    if not pats:
        main = attrs["main"]
        if main["n_dies"] == 0:
            return "There are no failing dies to locate."
        return (
            f"The failing dies ({percent(attrs['fail_fraction'])} of the wafer) are isolated, with no "
            f"concentration in any zone; the largest group has {main['n_dies']} dies."
        )
    parts = [pattern_sentence(p, rng) for p in pats]
    p = max(pats, key=lambda q: q.get("n_dies", 0))
    if p.get("r_inner") is not None:
        parts.append(
            pick(
                rng,
                [
                    f"Most of its fails lie between {p['r_inner']:.2f} "
                    f"and {p['r_outer']:.2f} of the wafer radius.",
                    f"Radially it spans roughly {p['r_inner']:.2f}-{p['r_outer']:.2f} of the radius.",
                ],
            )
        )
    return " ".join(parts)


def morphology_text(labels: list[str], attrs: dict[str, Any], rng: np.random.Generator) -> str:
    """Shape, density, size and texture of each defect mass."""
    pats = [p for p in attrs["patterns"] if p.get("separable")]
    if not pats:
        return f"No coherent shape: {structure(NONE)[1]}."
    out = []
    for p in pats:
        shape, texture = structure(p["class"])
        dens = density_word(p.get("density"))
        area = percent(p.get("area_fraction"))
        extra = ""
        if p.get("distribution") == "line":
            extra = (
                f", elongated {p['elongation']:.1f}:1 and oriented "
                f"about {p['orientation_deg']:.0f} degrees from vertical"
            )
        elif p.get("distribution") in ("ring", "arc"):
            extra = f", covering about {p['coverage_deg']:.0f} degrees of arc"
        out.append(
            pick(
                rng,
                [
                    f"The {p['class']} mass is {shape}, "
                    f"{dens} and {texture}, about {area} of the dies{extra}.",
                    f"Shape: {shape} ({dens}, {texture}){extra}; it takes up {area} of the wafer.",
                    f"It reads as {shape}: {texture}, {dens} fail density, {area} of all dies{extra}.",
                ],
            )
        )
    return " ".join(out)


def root_cause_text(labels: list[str], kb: KnowledgeBase, rng: np.random.Generator) -> str:
    """Likely process step, equipment and causes, from the knowledge base."""
    defects = [c for c in labels if c != NONE]
    if not defects:
        return (
            "No process excursion is indicated; the isolated fails are consistent with baseline defectivity."
        )
    out = []
    for c in defects:
        e = kb.patterns.get(c)
        if e is None:
            out.append(f"The knowledge base has no entry for {c}; its cause needs further analysis.")
            continue
        causes = "; ".join(e.potential_causes[:2])
        out.append(
            pick(
                rng,
                [
                    f"{c} signatures usually point to {e.process_step} ({e.equipment_category}): {causes}.",
                    f"For {c}, check {e.equipment_category} "
                    f"first; the step is {e.process_step}, e.g. {causes}.",
                    f"Suspect {e.process_step} on the {e.equipment_category} "
                    f"for {c}; typical causes: {causes}.",
                ],
            )
        )
    return " ".join(out)


def structured(labels: list[str], attrs: dict[str, Any], kb: KnowledgeBase) -> str:
    """The structured-JSON variant: the facts, without prose."""
    pats = attrs["patterns"]
    defects = [c for c in labels if c != NONE]
    return json.dumps(
        {
            "defect_type": defects or [NONE],
            "yield": attrs["yield"],
            "patterns": [
                {
                    "class": p["class"],
                    "zone": p.get("zone"),
                    "clock_position": p.get("clock"),
                    "distribution": p.get("distribution"),
                    "density": density_word(p.get("density")),
                    "area_fraction": p.get("area_fraction"),
                }
                for p in pats
            ],
            "root_cause": {c: kb.patterns[c].process_step for c in defects if c in kb.patterns},
        },
        sort_keys=True,
    )


def analytic_descriptions(
    wafer_id: str, labels: list[str], attrs: dict[str, Any], kb: KnowledgeBase, seed: int = 0
) -> dict[str, str]:
    """The four description variants of one wafer."""
    rng = wafer_rng(wafer_id, seed, "describe")
    spatial = spatial_text(labels, attrs, rng)
    morph = morphology_text(labels, attrs, rng)
    cause = root_cause_text(labels, kb, rng)
    return {
        "full": " ".join([_overview(labels, attrs, rng), spatial, morph, cause]),
        "spatial": spatial,
        "root_cause": cause,
        "structured": structured(labels, attrs, kb),
    }
