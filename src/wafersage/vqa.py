"""Rubric-guided VQA synthesis: 8-10 question-answer pairs a wafer over five categories, a
leak-free wafer/lot split, and the loader that turns the tables into a ``datasets.Dataset``.

Every reference answer is written from the wafer's rubric (so it hits the rubric's ``must_hit``
phrases), questions never name a class the wafer carries, and each pair has a curriculum
difficulty (1-3): a base per question kind, +1 for a hard (per the cleaning stage) or mixed wafer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.descriptions import wafer_rng
from wafersage.phrasing import (
    DISTRIBUTION_PHRASES,
    STRUCTURE,
    ZONE_PHRASES,
    class_list,
    clock_phrase,
    mentions_class,
    opposite_clock,
    percent,
    pick,
)
from wafersage.taxonomy import NONE

CATEGORIES: tuple[str, ...] = ("type", "spatial", "morphology", "root_cause", "consistency")
SPLITS: tuple[str, ...] = ("train", "val", "test")
COLUMNS: tuple[str, ...] = (
    "pair_id",
    "wafer_id",
    "lot_id",
    "split",
    "image",
    "question",
    "answer",
    "category",
    "difficulty",
    "rubric_id",
    "labels",
    "tag",
    "claim_true",
)

Q_TYPE = [
    "Which defect pattern does this wafer map show?",
    "Classify the failure signature on this wafer bin map.",
    "What WM-811K defect class best describes this map?",
    "Name the defect pattern visible on this wafer.",
    "Looking at the red failing dies, which failure type is this?",
]
Q_COUNT = [
    "Does this map carry one defect pattern or several? List them.",
    "How many distinct failure patterns overlap on this wafer, and which are they?",
    "Is this a single-type or a mixed-type wafer map? Name each pattern.",
]
Q_ZONE = [
    "Where on the wafer are the failing dies concentrated?",
    "In which zone of the wafer does the failure lie?",
    "Describe the location of the defect region on the wafer.",
    "Which radial zone (core, inner, mid-radius, periphery or whole wafer) holds the fails?",
]
Q_CLOCK = [
    "At which clock position (12 o'clock at the top) is the defect mass?",
    "Which side of the wafer does the failure favour, as a clock position?",
    "Give the angular position of the failing region using clock positions.",
]
Q_SYMMETRY = [
    "Is the failure tied to one side of the wafer?",
    "Does the failure have a preferred clock position?",
    "Is the defect region rotationally symmetric or one-sided?",
]
Q_SHAPE = [
    "Describe the shape and texture of the failure region.",
    "What geometric form do the failing dies take?",
    "What does the failing region look like: its outline and texture?",
]
Q_SIZE = [
    "How large and how dense is the defect region?",
    "Quantify the failure: area, density and yield.",
    "What share of the dies fails, and how densely packed is the defect region?",
]
Q_STEP = [
    "Which process step should be investigated first for this failure signature?",
    "What process step most likely produced this pattern?",
    "Which tool group would you inspect first given this map?",
]
Q_CAUSES = [
    "What physical causes could explain this failure signature?",
    "List plausible root causes for this map and the equipment to check.",
    "What could have gone wrong in the fab to produce this map?",
]
Q_CLAIM = [
    'Is this statement about the map correct? "{claim}" Answer yes or no and explain.',
    "True or false: {claim_lc} Explain briefly.",
    'A colleague says: "{claim}" Do you agree?',
]


def _bump(base: int, rec: dict[str, Any]) -> int:
    hard = rec.get("tag") == "hard" or len([c for c in rec["labels"] if c != NONE]) > 1
    return min(3, base + int(hard))


def _zone_phrase(zone: str) -> str:
    return ZONE_PHRASES.get(zone, ["no particular zone"])[0]


def _claims(rec: dict[str, Any], rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """Candidate (true claim, false claim, base difficulty) triples about the wafer."""
    r = rec["rubric"]
    sp = r["spatial"]
    attrs = rec["attributes"]
    y = attrs["yield"] or 0.0
    out = []
    thr = 0.9 if y < 0.8 or y >= 0.95 else 0.8
    above = f"The wafer's yield is above {round(thr * 100)}%."
    below = f"The wafer's yield is below {round(thr * 100)}%."
    out.append((above, below, 1) if y >= thr else (below, above, 1))
    zone = sp["zone"]
    if zone in ("center", "inner", "middle", "edge"):
        order = ["center", "inner", "middle", "edge"]
        wrong = order[(order.index(zone) + 2) % 4]
        out.append(
            (
                f"The failing dies are concentrated in {_zone_phrase(zone)}.",
                f"The failing dies are concentrated in {_zone_phrase(wrong)}.",
                1,
            )
        )
    if sp["clock_position"]:
        c = sp["clock_position"][0]
        out.append(
            (
                f"The defect mass sits around {clock_phrase(c)}.",
                f"The defect mass sits around {clock_phrase(opposite_clock(c))}.",
                2,
            )
        )
    dist = sp["distribution"]
    if dist in DISTRIBUTION_PHRASES:
        wrong_d = {
            "clustered": "line",
            "line": "ring",
            "ring": "clustered",
            "arc": "line",
            "scattered": "ring",
            "full": "line",
        }
        out.append(
            (
                f"The failing dies form {DISTRIBUTION_PHRASES[dist][1]}.",
                f"The failing dies form {DISTRIBUTION_PHRASES[wrong_d[dist]][1]}.",
                2,
            )
        )
    return out


def qa_pairs(rec: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """The QA pairs of one rubric record (wafer id, labels, tag, attributes, rubric)."""
    rng = wafer_rng(rec["wafer_id"], seed, "vqa")
    r = rec["rubric"]
    labels = [c for c in rec["labels"] if c != NONE]
    attrs = rec["attributes"]
    sp, mo, rc = r["spatial"], r["morphology"], r["root_cause"]
    pairs: list[tuple[str, str, str, int, bool | None]] = []

    def add(cat: str, qs: list[str], answer: str, base: int, truth: bool | None = None, **fmt: str) -> None:
        options = [q.format(**fmt) for q in qs]
        options = [q for q in options if not mentions_class(q, labels)] or ["Describe this wafer map."]
        pairs.append((cat, pick(rng, options), answer, _bump(base, rec), truth))

    # type
    if labels:
        why = "; ".join(f"{c}: {STRUCTURE[c][0]}" for c in labels)
        names = class_list(labels)
        if len(labels) > 1:
            lead = pick(
                rng, [f"A mixed-type map: {names}.", f"Mixed: {names}.", f"This wafer combines {names}."]
            )
        else:
            lead = pick(
                rng, [f"{names}.", f"It is a {names} pattern.", f"The map shows {names}.", f"Class: {names}."]
            )
        add("type", Q_TYPE, f"{lead} {why[0].upper() + why[1:]}.", 1)
        n = len(labels)
        count = "One pattern" if n == 1 else f"{['Two', 'Three', 'Four'][min(n, 4) - 2]} patterns"
        kind = "single-type" if n == 1 else "mixed-type"
        add(
            "type",
            Q_COUNT,
            pick(rng, [f"{count}: {names}.", f"{count} ({kind}): {names}.", f"A {kind} map with {names}."]),
            2,
        )
    else:
        add(
            "type",
            Q_TYPE,
            pick(
                rng,
                [
                    "none: no systematic defect pattern, only isolated failing dies.",
                    "No defect pattern (class none); the fails are isolated.",
                    "This is a normal wafer (none): no systematic defect pattern.",
                ],
            ),
            1,
        )
        add("type", Q_COUNT, "No pattern at all: the map is a normal wafer with no systematic defect.", 2)
    # spatial
    if labels:
        band = ""
        main = max(attrs["patterns"], key=lambda p: p.get("n_dies", 0)) if attrs["patterns"] else {}
        if main.get("r_inner") is not None and sp["zone"] != "whole":
            band = f", between {main['r_inner']:.2f} and {main['r_outer']:.2f} of the radius"
        where = (
            f" around {', '.join(clock_phrase(c) for c in sp['clock_position'])}"
            if sp["clock_position"]
            else ""
        )
        dist = DISTRIBUTION_PHRASES.get(sp["distribution"], ["spread"])[0]
        add("spatial", Q_ZONE, f"In {_zone_phrase(sp['zone'])}{where}{band}; the fails are {dist}.", 1)
        if sp["clock_position"]:
            clocks = ", ".join(clock_phrase(c) for c in sp["clock_position"])
            add("spatial", Q_CLOCK, f"Around {clocks}; {sp['coordinates_hint']}.", 2)
        else:
            add(
                "spatial",
                Q_SYMMETRY,
                "No: the failure has no preferred clock "
                "position; it is centred or symmetric around the wafer.",
                2,
            )
    else:
        add(
            "spatial",
            Q_ZONE,
            "There is no concentration: the few failing dies are isolated across the wafer.",
            1,
        )
        add("spatial", Q_SYMMETRY, "No: with only isolated fails there is no preferred clock position.", 2)
    # morphology
    shape = mo["geometric_structure"][0].upper() + mo["geometric_structure"][1:]
    if labels:
        shape_ans = pick(
            rng,
            [
                f"{shape}; texture {mo['texture']}, {mo['density']} density.",
                f"{shape}. The texture is {mo['texture']} and the fail density {mo['density']}.",
                f"{mo['density'].capitalize()} fails forming {mo['geometric_structure']} ({mo['texture']}).",
            ],
        )
    else:
        shape_ans = f"{shape}: only {mo['texture']}, no defect region."
    add("morphology", Q_SHAPE, shape_ans, 2)
    main_p = [p for p in attrs["patterns"] if p.get("separable")]
    extra = ""
    if main_p:
        p = max(main_p, key=lambda q: q.get("n_dies", 0))
        extra = f" The main defect region covers {percent(p.get('area_fraction'))} of the dies"
        if p.get("distribution") in ("ring", "arc"):
            extra += f" over about {p['coverage_deg']:.0f} degrees of arc"
        elif p.get("distribution") == "line":
            extra += f", elongated {p['elongation']:.1f}:1"
        extra += "."
    dens = f"{mo['density']} density" if labels else "no dense region"
    y, nf, nd = percent(attrs["yield"]), attrs["n_fail"], attrs["n_dies"]
    size_ans = pick(
        rng,
        [
            f"Yield is {y} ({nf} of {nd} dies fail), {dens} in {attrs['n_components']} cluster(s).{extra}",
            f"{nf} of {nd} dies fail (yield {y}); {dens}, "
            f"{attrs['n_components']} cluster(s) of fails.{extra}",
            f"{attrs['n_components']} cluster(s), {dens}; "
            f"{nf} failing dies out of {nd}, a yield of {y}.{extra}",
        ],
    )
    add("morphology", Q_SIZE, size_ans, 3)
    # root cause
    if rc["in_knowledge_base"]:
        if labels:
            step, tool = rc["process_step"], rc["equipment_category"]
            step_ans = pick(
                rng,
                [
                    f"Start with {step} ({tool}).",
                    f"The most likely step is {step}; inspect the {tool}.",
                    f"Investigate {step} first, on the {tool}.",
                    f"This signature points to {step}, so check the {tool}.",
                ],
            )
            add("root_cause", Q_STEP, step_ans, 2)
            causes = list(rc["potential_causes"])
            picked = [causes[i] for i in sorted(rng.permutation(len(causes))[: min(len(causes), 3)])]
            listed = "; ".join(picked)
            cause_ans = pick(
                rng,
                [
                    f"Likely causes: {listed}. Check the {tool} ({step}).",
                    f"Candidates are {listed}; they all sit in {step} on the {tool}.",
                    f"Look at the {tool}: {listed}.",
                ],
            )
            add("root_cause", Q_CAUSES, cause_ans, 3)
        else:
            add(
                "root_cause",
                Q_STEP,
                "None in particular: no systematic pattern, so no specific process step is implicated.",
                2,
            )
            add(
                "root_cause",
                Q_CAUSES,
                "No specific process cause: the isolated fails match baseline random defectivity.",
                3,
            )
    # consistency: one true and one false claim
    claims = _claims(rec, rng)
    order = rng.permutation(len(claims))
    t_claim, _, t_base = claims[order[0]]
    _, f_claim, f_base = claims[order[1 % len(claims)]]
    for claim, truth, base in ((t_claim, True, t_base), (f_claim, False, f_base)):
        if truth:
            ans = pick(
                rng,
                [
                    f"Yes. {claim}",
                    f"Yes, that is correct: {claim[0].lower() + claim[1:]}",
                    f"Yes; {claim[0].lower() + claim[1:]}",
                ],
            )
        else:
            fix = _correct(claim, rec)
            ans = pick(
                rng,
                [
                    f"No. {fix}",
                    f"No, that is wrong: {fix[0].lower() + fix[1:]}",
                    f"No; in fact {fix[0].lower() + fix[1:]}",
                ],
            )
        add("consistency", Q_CLAIM, ans, base, truth, claim=claim, claim_lc=claim[0].lower() + claim[1:])
    if rng.random() < 0.5:  # vary which claim comes first
        pairs[-2], pairs[-1] = pairs[-1], pairs[-2]
    out = []
    for k, (cat, q, a, d, claim) in enumerate(pairs):
        out.append(
            {
                "pair_id": f"{rec['wafer_id']}#{k}",
                "wafer_id": rec["wafer_id"],
                "lot_id": rec.get("lot_id"),
                "question": q,
                "answer": a,
                "category": cat,
                "difficulty": d,
                "rubric_id": rec["rubric_id"],
                "labels": list(rec["labels"]),
                "tag": rec.get("tag"),
                "claim_true": claim,
            }
        )
    return out


def _correct(false_claim: str, rec: dict[str, Any]) -> str:
    sp = rec["rubric"]["spatial"]
    y = rec["attributes"]["yield"] or 0.0
    if "yield" in false_claim:
        return f"The yield is {percent(y)}."
    if "clock" in false_claim:
        return f"The defect mass sits around {', '.join(clock_phrase(c) for c in sp['clock_position'])}."
    if "concentrated" in false_claim:
        return f"The failing dies are concentrated in {_zone_phrase(sp['zone'])}."
    return f"The failing dies form {DISTRIBUTION_PHRASES.get(sp['distribution'], ['no structure'])[1]}."


def assign_splits(
    wafer_ids: list[str], lot_ids: list[str | None], ratios: dict[str, float], seed: int
) -> dict[str, str]:
    """wafer id -> split; whole lots go to one split (wafers without a lot are their own group).
    Groups are shuffled with ``seed`` and each goes to the split furthest below its target."""
    groups: dict[str, list[str]] = {}
    for w, lot in zip(wafer_ids, lot_ids, strict=True):
        groups.setdefault(f"lot:{lot}" if lot else f"wafer:{w}", []).append(w)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    total = sum(ratios.values())
    target = {s: ratios.get(s, 0.0) / total * len(wafer_ids) for s in SPLITS}
    have = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    for i, k in enumerate(keys):
        # the first groups seed each non-empty split, so small sets still get val and test
        empty = [s for s in SPLITS if have[s] == 0 and target[s] > 0]
        split = empty[0] if empty and i < 3 else max(SPLITS, key=lambda s: target[s] - have[s])
        for w in groups[k]:
            out[w] = split
        have[split] += len(groups[k])
    return out


def image_struct(png: bytes) -> dict[str, Any]:
    """The Hugging Face ``Image`` storage of one PNG."""
    return {"bytes": png, "path": None}


def load_vqa_dataset(path: str | Path) -> Any:
    """A VQA table as a ``datasets.Dataset`` whose ``image`` column decodes to PIL images."""
    import datasets

    ds = datasets.Dataset.from_parquet(str(path))
    return ds.cast_column("image", datasets.Image())


def frame(pairs: list[dict[str, Any]], images: Callable[[str], bytes]) -> pd.DataFrame:
    """Pairs as a table in :data:`COLUMNS` order, with the image of each wafer."""
    df = pd.DataFrame(pairs)
    df["image"] = [image_struct(images(w)) for w in df["wafer_id"]]
    return df[list(COLUMNS)]
