"""The rubric JSON (docs/architecture.md, "Data contracts"): a versioned pydantic schema and its builder.

A rubric states, per dimension, what a correct answer about one wafer must say (``must_hit``) and
the plausible wrong answers it must not give (``must_avoid``: the confusable classes, the wrong
zone, the opposite clock position, the causes of a confusable pattern). The scoring stage matches
answers against these phrase lists; the VQA stage writes its reference answers from the same fields.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from wafersage.annotation.knowledge import KnowledgeBase
from wafersage.annotation.phrasing import (
    DISTRIBUTION_PHRASES,
    ZONE_PHRASES,
    clock_phrase,
    density_word,
    morph_keyword,
    opposite_clock,
    structure,
)
from wafersage.errors import read_jsonl
from wafersage.wafers import taxonomy
from wafersage.wafers.synthetic import DISTRIBUTION
from wafersage.wafers.taxonomy import NONE, confusable_with

SCHEMA_VERSION = 1
Zone = Literal["center", "inner", "middle", "edge", "whole", "none"]
Distribution = Literal["clustered", "scattered", "ring", "arc", "line", "full", "none"]


class Dimension(BaseModel):
    """Phrases a correct answer must contain and plausible wrong answers it must not."""

    must_hit: list[str] = Field(min_length=1)
    must_avoid: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> Dimension:
        hit = {h.lower() for h in self.must_hit}
        both = [a for a in self.must_avoid if a.lower() in hit]
        if both:
            raise ValueError(f"phrases both required and forbidden: {both}")
        return self


class DefectTypes(Dimension):
    labels: list[str]


class Spatial(Dimension):
    zone: Zone
    distribution: Distribution
    clock_position: list[int]
    coordinates_hint: str


class Morphology(Dimension):
    pattern_type: str
    density: Literal["sparse", "moderate", "dense", "none"]
    geometric_structure: str
    texture: str


class RootCause(Dimension):
    equipment_category: str
    process_step: str
    potential_causes: list[str]
    in_knowledge_base: bool


class Rubric(BaseModel):
    """One wafer's rubric."""

    schema_version: Literal[1] = SCHEMA_VERSION
    wafer_id: str
    defect_types: DefectTypes
    spatial: Spatial
    morphology: Morphology
    root_cause: RootCause
    summary: str = Field(min_length=10)

    def rubric_id(self) -> str:
        """Content address: ``<wafer_id>@<12 hex of the rubric JSON>``."""
        digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
        return f"{self.wafer_id}@{digest}"


def _uniq(items: list[str], drop: list[str] = ()) -> list[str]:
    seen = {d.lower() for d in drop}
    out = []
    for s in items:
        if s and s.lower() not in seen:
            seen.add(s.lower())
            out.append(s)
    return out


def _main_pattern(attrs: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """The pattern the spatial/morphology dimensions describe: the largest separable one."""
    pats = [p for p in attrs["patterns"] if p.get("separable")]
    if pats:
        return max(pats, key=lambda p: p.get("n_dies", 0))
    return {**attrs["main"], "class": labels[0] if labels else NONE}


def _distribution(name: str, p: dict[str, Any]) -> str:
    """A class's spatial distribution: WM-811K's fixed one, else the measured one (or clustered)."""
    return DISTRIBUTION.get(name) or p.get("distribution") or "clustered"


def _wrong_zones(zone: str, present: set[str]) -> list[str]:
    """Zones two or more steps from ``zone`` where no pattern of the wafer lies."""
    order = ["center", "inner", "middle", "edge"]
    if zone == "whole":
        return ["localized", "edge zone only"]
    if zone not in order:
        return []
    i = order.index(zone)
    far = [order[j] for j in range(4) if abs(j - i) >= 2 and order[j] not in present]
    return [_zone_term(z) for z in far]


def _zone_term(zone: str) -> str:
    """The canonical zone phrase without its article (``central zone``, ``edge zone``)."""
    return ZONE_PHRASES[zone][0].replace("the ", "", 1)


def build_rubric(
    wafer_id: str, labels: list[str], attrs: dict[str, Any], kb: KnowledgeBase, summary: str
) -> Rubric:
    """The rubric of one wafer from its labels, analytic attributes and the knowledge base."""
    labels = sorted(labels, key=taxonomy.class_index().__getitem__)
    defects = [c for c in labels if c != NONE]
    confusable = _uniq([c for d in defects for c in confusable_with(d) if c not in defects])
    if defects:
        types = DefectTypes(labels=labels, must_hit=defects, must_avoid=_uniq([*confusable, "no defect"]))
    else:
        types = DefectTypes(
            labels=[NONE], must_hit=["no systematic defect"], must_avoid=["Random", "Loc", "Scratch"]
        )

    if not defects:
        spatial = Spatial(
            zone="none",
            distribution="none",
            clock_position=[],
            coordinates_hint="isolated fails only",
            must_hit=["no concentration"],
            must_avoid=["cluster", "ring", "streak"],
        )
        morph = Morphology(
            pattern_type=NONE,
            density="none",
            geometric_structure=structure(NONE)[0],
            texture=structure(NONE)[1],
            must_hit=["isolated"],
            must_avoid=["ring", "streak", "cluster"],
        )
    else:
        p = _main_pattern(attrs, defects)
        zone = p.get("zone") or ("whole" if p["class"] in ("Near-full", "Random") else "edge")
        # WM-811K's classes fix their distribution (the measured one stays in the attributes); a
        # configured class has the measured one
        dist = _distribution(p["class"], p)
        clocks = sorted({int(q["clock"]) for q in attrs["patterns"] if q.get("clock")})
        hint = _coordinates_hint(p)
        hit = [_zone_term(zone)]
        avoid = _wrong_zones(zone, {q.get("zone") for q in attrs["patterns"] if q.get("zone")})
        if clocks:
            hit += [clock_phrase(c) for c in clocks]
            avoid += [clock_phrase(opposite_clock(c)) for c in clocks if opposite_clock(c) not in clocks]
        hit.append(DISTRIBUTION_PHRASES[dist][0])
        present = {_distribution(c, p) for c in defects}
        wrong_dist = [DISTRIBUTION[c] for c in confusable if DISTRIBUTION[c] not in present]
        avoid += [DISTRIBUTION_PHRASES[d][0] for d in wrong_dist]
        spatial = Spatial(
            zone=zone,
            distribution=dist,
            clock_position=clocks,
            coordinates_hint=hint,
            must_hit=_uniq(hit),
            must_avoid=_uniq(avoid, drop=hit),
        )
        main_first = [p["class"], *[c for c in defects if c != p["class"]]]
        shape = " with ".join(structure(c)[0] for c in main_first)
        texture = structure(p["class"])[1]
        dens = density_word(p.get("density")) if p["class"] not in ("Random",) else "sparse"
        m_hit = [morph_keyword(c) for c in defects] + [dens]
        m_avoid = [morph_keyword(c) for c in confusable]
        morph = Morphology(
            pattern_type=" + ".join(defects),
            density=dens,
            geometric_structure=shape,
            texture=texture,
            must_hit=_uniq(m_hit),
            must_avoid=_uniq(m_avoid, drop=m_hit),
        )
    root = _root_cause(defects, confusable, kb)
    return Rubric(
        wafer_id=wafer_id,
        defect_types=types,
        spatial=spatial,
        morphology=morph,
        root_cause=root,
        summary=summary,
    )


def rubric_record(
    wafer_id: str,
    labels: list[str],
    attrs: dict[str, Any],
    kb: KnowledgeBase,
    summary: str,
    tag: str = "typical",
) -> dict[str, Any]:
    """One wafer's record as ``data/rubrics/rubrics.jsonl`` holds it (labels, attributes, rubric),
    built straight from its attributes: for tests and benchmarks that skip the describe stage."""
    rub = build_rubric(wafer_id, labels, attrs, kb, summary)
    return {
        "wafer_id": wafer_id,
        "labels": labels,
        "attributes": attrs,
        "rubric": rub.model_dump(mode="json"),
        "rubric_id": rub.rubric_id(),
        "tag": tag,
    }


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rubric records (``rubrics.jsonl``) by wafer id."""
    return {r["wafer_id"]: r for r in read_jsonl(path)}


def _coordinates_hint(p: dict[str, Any]) -> str:
    cx, cy = p.get("centroid_x"), p.get("centroid_y")
    if cx is None:
        return "spread over the wafer"
    radii = f"{p.get('r_inner')}-{p.get('r_outer')}"
    return f"centroid at x={cx:+.2f}, y={cy:+.2f} (normalised, y down); radii {radii}"


def _root_cause(defects: list[str], confusable: list[str], kb: KnowledgeBase) -> RootCause:
    known = [d for d in defects if d in kb.patterns]
    if not defects:
        return RootCause(
            equipment_category="none",
            process_step="none",
            potential_causes=["baseline random defectivity"],
            in_knowledge_base=True,
            must_hit=["no specific process"],
            must_avoid=[kb.patterns[c].process_step for c in ("Scratch", "Edge-Ring") if c in kb.patterns],
        )
    if not known:
        return RootCause(
            equipment_category="unknown",
            process_step="unknown",
            potential_causes=[f"no knowledge-base entry for {', '.join(defects)}"],
            in_knowledge_base=False,
            must_hit=["further analysis"],
        )
    entries = [kb.patterns[d] for d in known]
    hit = _uniq([e.process_step for e in entries] + [e.equipment_category for e in entries])
    avoid = [kb.patterns[c].process_step for c in confusable if c in kb.patterns]
    return RootCause(
        equipment_category="; ".join(_uniq([e.equipment_category for e in entries])),
        process_step="; ".join(_uniq([e.process_step for e in entries])),
        potential_causes=_uniq([c for e in entries for c in e.potential_causes]),
        in_knowledge_base=len(known) == len(defects) and not set(defects) & set(kb.generic),
        must_hit=hit,
        must_avoid=_uniq(avoid, drop=hit),
    )


def rubric_json_schema() -> dict[str, Any]:
    """The JSON schema of :class:`Rubric` (for documentation and external tools)."""
    return Rubric.model_json_schema()


def dumps(rubric: Rubric) -> str:
    """Canonical JSON of a rubric."""
    return json.dumps(rubric.model_dump(mode="json"), sort_keys=True)
