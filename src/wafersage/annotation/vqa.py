"""Rubric-guided VQA synthesis: 8-10 question-answer pairs a wafer over five categories, a
leak-free wafer/lot split, and the loader that turns the tables into a ``datasets.Dataset``.

Every reference answer is written from the wafer's rubric (so it hits the rubric's ``must_hit``
phrases), questions never name a class the wafer carries, and each pair has a curriculum
difficulty (1-3): a base per question kind, +1 for a hard (per the cleaning stage) or mixed wafer.
Each question kind (:data:`QUESTION_KINDS`) has 10-19 written phrasings (direct, imperative, terse,
jargon, yes/no-then-which) and, but for claims, hundreds more composed by
:mod:`~wafersage.annotation.question_grammar`; a share ``vqa.composed_share`` of the questions (half
by default) is asked in a composed one. Part of the wafers get compound questions (type + suspect
step, "is there a defect, and which", type + location, location + shape) whose answers answer
every part, the type first.
Phrasings held out of training live in ``resources/unseen_questions.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation import question_grammar
from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.annotation.descriptions import wafer_rng
from wafersage.annotation.phrasing import (
    DISTRIBUTION_PHRASES,
    ZONE_PHRASES,
    class_list,
    clock_phrase,
    mentions_class,
    opposite_clock,
    percent,
    pick,
    structure,
)
from wafersage.wafers.taxonomy import NONE

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
    "What type of defect pattern is visible on this wafer map?",
    "Which defect pattern does this wafer map show?",
    "Classify the failure signature on this wafer bin map.",
    "What WM-811K defect class best describes this map?",
    "Name the defect pattern visible on this wafer.",
    "Looking at the red failing dies, which failure type is this?",
    "Identify the defect pattern on this wafer map.",
    "Defect type?",
    "What kind of defect is this?",
    "What's the fail signature on this bin map?",
    "Which spatial signature class does this wafermap fall into?",
    "Give the defect class of this wafer.",
    "Pattern class for this map?",
    "What failure mode does this wafer exhibit?",
    "Tell me which defect pattern this is.",
    "How would you categorise the fails on this wafer?",
    "Which WM-811K category is this wafer?",
    "What defect signature do you see here?",
    "Can you classify this wafer map's defect pattern?",
]
Q_COUNT = [
    "Does this map carry one defect pattern or several? List them.",
    "How many distinct failure patterns overlap on this wafer, and which are they?",
    "Is this a single-type or a mixed-type wafer map? Name each pattern.",
    "Single or mixed defect? Which patterns?",
    "Count the defect patterns on this wafer and name them.",
    "How many defect signatures does this map carry, and what are they?",
    "List every defect pattern present on this wafer.",
    "Number of patterns on this wafer, and their classes?",
    "Identify all overlapping defect patterns on this map.",
    "Mixed-type or single-type? Name the patterns.",
    "Which patterns are superimposed on this wafer map, and how many?",
    "Enumerate the failure signatures on this bin map.",
]
Q_ZONE = [
    "Where on the wafer are the failing dies concentrated?",
    "In which zone of the wafer does the failure lie?",
    "Describe the location of the defect region on the wafer.",
    "Which radial zone (core, inner, mid-radius, periphery or whole wafer) holds the fails?",
    "Where are the fails?",
    "Locate the defect region on this wafer map.",
    "Which part of the wafer is affected?",
    "Fail location on the wafer?",
    "Point out the region of the wafer where the dies fail.",
    "What radial position do the fails occupy?",
    "Where is the defect mass located?",
    "In what region of the wafer do you see the failures?",
    "Which zone is hit?",
]
Q_CLOCK = [
    "At which clock position (12 o'clock at the top) is the defect mass?",
    "Which side of the wafer does the failure favour, as a clock position?",
    "Give the angular position of the failing region using clock positions.",
    "Clock position of the defect?",
    "Using a clock face with 12 at the top, where is the failure?",
    "Toward which o'clock direction do the fails lean?",
    "What is the angular location of the fails, as a clock position?",
    "Which side of the wafer is affected? Answer with a clock position.",
    "Where around the circumference is the defect mass, in o'clock terms?",
    "Give the o'clock orientation of the failing region.",
    "Identify the clock position of the defect.",
    "Angular position of the fails?",
]
Q_SYMMETRY = [
    "Is the failure tied to one side of the wafer?",
    "Does the failure have a preferred clock position?",
    "Is the defect region rotationally symmetric or one-sided?",
    "Is the fail pattern one-sided?",
    "Does the defect favour a particular side of the wafer?",
    "Is there an angular preference in the failures?",
    "Are the fails biased toward one clock position?",
    "Is the defect region lopsided toward any side?",
    "Does the failure lean toward one direction on the wafer?",
    "Any azimuthal asymmetry in the fails?",
]
Q_SHAPE = [
    "Describe the shape and texture of the failure region.",
    "What geometric form do the failing dies take?",
    "What does the failing region look like: its outline and texture?",
    "Describe the morphology of the defect.",
    "What shape do the fails form?",
    "Shape of the defect region?",
    "Characterise the outline and texture of the failing dies.",
    "What does the defect look like?",
    "How would you describe the fail region's geometry?",
    "Give the shape and texture of the defect.",
    "Outline and texture of the fails?",
    "What form does the defect take on the map?",
]
Q_SIZE = [
    "How large and how dense is the defect region?",
    "Quantify the failure: area, density and yield.",
    "What share of the dies fails, and how densely packed is the defect region?",
    "What is the yield of this wafer, and how big is the defect?",
    "How many dies fail?",
    "Give the fail count, yield and defect density.",
    "How severe is the failure in terms of area and yield?",
    "Size of the defect region?",
    "Estimate the failing-die share and the density of the defect.",
    "Quantify the fails on this map.",
    "How much of the wafer is lost, and how dense is the defect?",
    "What's the yield hit?",
]
Q_STEP = [
    "Which process step should be investigated first for this failure signature?",
    "What process step most likely produced this pattern?",
    "Which tool group would you inspect first given this map?",
    "Which process step would you suspect?",
    "Identify the process step most likely responsible.",
    "Suspect process step?",
    "Where in the process flow would you start looking?",
    "Which module should the fab check first?",
    "Which tool should we pull for inspection?",
    "Point to the process step behind this signature.",
    "What step in the line would you blame for this?",
    "Which equipment is the first suspect here?",
    "Name the process step to investigate.",
]
Q_CAUSES = [
    "What physical causes could explain this failure signature?",
    "List plausible root causes for this map and the equipment to check.",
    "What could have gone wrong in the fab to produce this map?",
    "Likely root cause?",
    "What are the likely root causes of this pattern?",
    "Why did these dies fail?",
    "Explain what could cause this failure signature.",
    "List the failure mechanisms that could produce this map.",
    "Which physical mechanisms would you suspect, and on which equipment?",
    "Identify possible causes of the fails.",
    "What would you tell the process engineer to look for?",
    "Brainstorm root causes for this signature.",
]
Q_CLAIM = [
    'Is this statement about the map correct? "{claim}" Answer yes or no and explain.',
    "True or false: {claim_lc} Explain briefly.",
    'A colleague says: "{claim}" Do you agree?',
    'Check this claim: "{claim}"',
    "Verify: {claim}",
    'Someone wrote "{claim}" Is that right?',
    'Does the map support this: "{claim}"',
    "Confirm or refute: {claim}",
    "Yes or no: {claim}",
    'An engineer notes: "{claim}" Correct?',
    "Is this true? {claim}",
    "Fact check: {claim}",
    "Would you agree that {claim_bare}?",
    "Is it accurate to say that {claim_bare}?",
]
Q_TYPE_STEP = [
    "What type of defect pattern is visible on this wafer map, and what process step would you suspect?",
    "Which defect pattern is this, and which process step should be investigated?",
    "Classify the failure signature and name the step most likely responsible.",
    "Defect type and suspect step?",
    "Identify the pattern and the tool group to inspect first.",
    "What's the fail signature here, and where in the process flow would you look?",
    "Name the defect class, then the process step you would check.",
    "What kind of defect is this and what step likely caused it?",
    "Pattern and probable process step?",
    "Tell me the defect pattern and which equipment to look at.",
    "Which failure type does this map show, and which module would you suspect?",
    "Classify this map and suggest the process step to investigate.",
]
Q_EXISTS_TYPE = [
    "Is there a defect? If so, which kind?",
    "Does this wafer show a defect pattern? If yes, which one?",
    "Any systematic pattern on this map? If so, what is it?",
    "Is anything wrong with this wafer, and if so what pattern?",
    "Do you see a defect signature here? Which one?",
    "Is there a systematic failure on this wafer? Name it if there is.",
    "Does this map have a defect pattern, and of which class?",
    "Any defect? Which type?",
    "Are there systematic fails here? If yes, classify them.",
    "Does the bin map carry a failure signature? If it does, which one?",
    "Is a defect pattern present? Identify it if so.",
]
Q_TYPE_ZONE = [
    "What pattern is this, and where on the wafer does it sit?",
    "Identify the defect type and its location.",
    "Defect type and location?",
    "Which defect pattern is visible, and in which zone of the wafer?",
    "Classify the failure and say where the failing dies are.",
    "What's the signature and where is it on the wafer?",
    "Name the defect pattern and describe where it lies.",
    "Which failure type is this, and which region does it hit?",
    "Tell me the class of defect and its position on the map.",
    "What defect do you see, and where?",
]
Q_ZONE_SHAPE = [
    "Where are the failing dies, and what shape do they form?",
    "Describe the location and the shape of the defect region.",
    "Location and shape of the fails?",
    "Where is the defect and what does it look like?",
    "Locate the failing region and describe its outline.",
    "Which zone holds the fails, and what geometric form do they take?",
    "Give the position and morphology of the defect.",
    "Where on the wafer is the failure, and how is it shaped?",
    "Map out where the fails are and their shape.",
    "Position and geometry of the defect region?",
]

#: Every question kind: its category and its phrasings. The compound kinds ask two things at once
#: and their answers answer both parts, the defect type first where one is asked.
QUESTION_KINDS: dict[str, tuple[str, list[str]]] = {
    "type": (TYPE_CATEGORY, Q_TYPE),
    "count": (TYPE_CATEGORY, Q_COUNT),
    "type_step": (TYPE_CATEGORY, Q_TYPE_STEP),
    "exists_type": (TYPE_CATEGORY, Q_EXISTS_TYPE),
    "type_zone": (TYPE_CATEGORY, Q_TYPE_ZONE),
    "zone": ("spatial", Q_ZONE),
    "clock": ("spatial", Q_CLOCK),
    "symmetry": ("spatial", Q_SYMMETRY),
    "zone_shape": ("spatial", Q_ZONE_SHAPE),
    "shape": ("morphology", Q_SHAPE),
    "size": ("morphology", Q_SIZE),
    "step": ("root_cause", Q_STEP),
    "causes": ("root_cause", Q_CAUSES),
    "claim": ("consistency", Q_CLAIM),
}
#: The kinds that ask two things at once.
COMPOUND_KINDS: tuple[str, ...] = ("type_step", "exists_type", "type_zone", "zone_shape")
#: The placeholders a claim question may use (see :func:`claim_fields`).
CLAIM_FIELDS: tuple[str, ...] = ("claim", "claim_lc", "claim_bare")
#: Share of wafers whose first type question is a compound one (type + step, yes/no + type, type +
#: location), and whose first spatial question is location + shape.
COMPOUND_TYPE_SHARE = 0.45
COMPOUND_ZONE_SHARE = 0.3
#: Default share of questions asked in a composed phrasing (params ``vqa.composed_share``).
COMPOSED_SHARE = 0.5


def phrasings(kind: str) -> list[str]:
    """Every phrasing of ``kind``: the written ones, then the composed ones."""
    return list(dict.fromkeys([*QUESTION_KINDS[kind][1], *question_grammar.phrasings(kind)]))


def claim_fields(claim: str) -> dict[str, str]:
    """A claim sentence as each :data:`CLAIM_FIELDS` placeholder writes it."""
    lc = claim[0].lower() + claim[1:]
    return {"claim": claim, "claim_lc": lc, "claim_bare": lc.rstrip(".")}


def normalise_question(text: str) -> str:
    """Lower-case words and digits only, single-spaced (for comparing phrasings)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


@lru_cache(maxsize=1)
def _question_index() -> tuple[dict[str, str], tuple[tuple[re.Pattern[str], str], ...]]:
    exact: dict[str, str] = {}
    patterns = []
    for kind in QUESTION_KINDS:
        for q in phrasings(kind):
            if "{" not in q:
                exact[q] = kind
                continue
            rx = re.escape(q)
            for f in CLAIM_FIELDS:
                rx = rx.replace(re.escape("{" + f + "}"), f"(?P<{f}>.+)")
            patterns.append((re.compile(rx + r"\Z", re.S), kind))
    return exact, tuple(patterns)


def parse_question(question: str) -> tuple[str, dict[str, str]] | None:
    """The kind of a synthesised question and, for a claim question, its :func:`claim_fields`;
    ``None`` for a question no phrasing here produces."""
    exact, patterns = _question_index()
    if question in exact:
        return exact[question], {}
    for rx, kind in patterns:
        m = rx.match(question)
        if m is None:
            continue
        got = {k: v for k, v in m.groupdict().items() if v}
        claim = got.get("claim") or next(iter(got.values()), "")
        claim = claim[:1].upper() + claim[1:]
        if "claim_bare" in got:
            claim += "."
        return kind, claim_fields(claim)
    return None


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


def qa_pairs(
    rec: dict[str, Any], seed: int = 0, composed_share: float = COMPOSED_SHARE
) -> list[dict[str, Any]]:
    """The QA pairs of one rubric record (wafer id, labels, tag, attributes, rubric); a share
    ``composed_share`` of the questions composed (0 draws nothing for it: written phrasings only)."""
    rng = wafer_rng(rec["wafer_id"], seed, "vqa")
    r = rec["rubric"]
    labels = [c for c in rec["labels"] if c != NONE]
    attrs = rec["attributes"]
    sp, mo, rc = r["spatial"], r["morphology"], r["root_cause"]
    pairs: list[tuple[str, str, str, int, bool | None]] = []

    def add(kind: str, answer: str, base: int, truth: bool | None = None, **fmt: str) -> None:
        cat, qs = QUESTION_KINDS[kind]
        if composed_share > 0 and question_grammar.FRAMES.get(kind) and rng.random() < composed_share:
            question = question_grammar.sample(rng, kind)  # composed phrasings name no class
        else:
            options = [q.format(**fmt) for q in qs]
            options = [q for q in options if not mentions_class(q, labels)] or ["Describe this wafer map."]
            question = pick(rng, options)
        pairs.append((cat, question, answer, _bump(base, rec), truth))

    # the answers the compound questions combine
    if labels:
        why = "; ".join(f"{c}: {structure(c)[0]}" for c in labels)
        names = class_list(labels)
        if len(labels) > 1:
            lead = pick(
                rng, [f"A mixed-type map: {names}.", f"Mixed: {names}.", f"This wafer combines {names}."]
            )
        else:
            lead = pick(
                rng, [f"{names}.", f"It is a {names} pattern.", f"The map shows {names}.", f"Class: {names}."]
            )
        type_ans = f"{lead} {why[0].upper() + why[1:]}."
        exists_ans = f"Yes. {type_ans}"
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
        zone_ans = f"In {_zone_phrase(sp['zone'])}{where}{band}; the fails are {dist}."
    else:
        type_ans = pick(
            rng,
            [
                "none: no systematic defect pattern, only isolated failing dies.",
                "No defect pattern (class none); the fails are isolated.",
                "This is a normal wafer (none): no systematic defect pattern.",
            ],
        )
        exists_ans = pick(
            rng,
            [
                "No: no systematic defect pattern (none), only isolated failing dies.",
                "No. The wafer is normal (none), with no systematic defect pattern.",
            ],
        )
        zone_ans = "There is no concentration: the few failing dies are isolated across the wafer."
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
    step_ans = None
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
        else:
            step_ans = "None in particular: no systematic pattern, so no specific process step is implicated."
    # type: the first question is sometimes a compound one, its answer naming the type first
    compound = {"exists_type": (exists_ans, 1), "type_zone": (f"{type_ans} {zone_ans}", 2)}
    if step_ans is not None:
        tail = step_ans if labels else "No specific process step is implicated."
        compound["type_step"] = (f"{type_ans} {tail}", 2)
    kind = pick(rng, sorted(compound)) if rng.random() < COMPOUND_TYPE_SHARE else "type"
    add(kind, *compound.get(kind, (type_ans, 1)))
    if labels:
        n = len(labels)
        count = "One pattern" if n == 1 else f"{['Two', 'Three', 'Four'][min(n, 4) - 2]} patterns"
        mix = "single-type" if n == 1 else "mixed-type"
        add(
            "count",
            pick(rng, [f"{count}: {names}.", f"{count} ({mix}): {names}.", f"A {mix} map with {names}."]),
            2,
        )
    else:
        add("count", "No pattern at all: the map is a normal wafer with no systematic defect.", 2)
    # spatial
    if rng.random() < COMPOUND_ZONE_SHARE:
        add("zone_shape", f"{zone_ans} {shape_ans}", 2)
    else:
        add("zone", zone_ans, 1)
    if labels and sp["clock_position"]:
        clocks = ", ".join(clock_phrase(c) for c in sp["clock_position"])
        add("clock", f"Around {clocks}; {sp['coordinates_hint']}.", 2)
    elif labels:
        add(
            "symmetry",
            "No: the failure has no preferred clock position; it is centred or symmetric around the wafer.",
            2,
        )
    else:
        add("symmetry", "No: with only isolated fails there is no preferred clock position.", 2)
    # morphology
    add("shape", shape_ans, 2)
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
    add("size", size_ans, 3)
    # root cause
    if step_ans is not None:
        add("step", step_ans, 2)
        if labels:
            step, tool = rc["process_step"], rc["equipment_category"]
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
            add("causes", cause_ans, 3)
        else:
            add(
                "causes",
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
        add("claim", ans, base, truth, **claim_fields(claim))
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
