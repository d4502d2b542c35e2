"""Compositional question phrasings: frames per question kind, expanded over interchangeable
wordings (the pattern noun, the map noun, how the fails are named, an optional lead-in), so that
VQA synthesis asks each kind in hundreds of ways and a model learns what a question asks rather
than its exact words. No wording names a defect class (questions never give the answer away)."""

from __future__ import annotations

import re
from functools import cache
from itertools import product

import numpy as np

#: The interchangeable wordings a frame's ``{slot}`` expands to.
SLOTS: dict[str, tuple[str, ...]] = {
    "map": ("this wafer", "this wafer map", "this map", "this bin map", "this die map", "the wafer"),
    "pattern": (
        "defect pattern",
        "failure pattern",
        "fail pattern",
        "failure signature",
        "defect signature",
        "defect class",
        "defect category",
        "failure mode",
        "defect type",
    ),
    "patterns": ("defect patterns", "failure signatures", "fail patterns", "defect types", "signatures"),
    "fails": ("the failing dies", "the fails", "the bad dies", "the failures", "the rejected dies"),
    "region": ("the defect region", "the failing region", "the fail cluster", "the defect", "the yield loss"),
    "what": ("What", "Which"),
    "name": ("Name", "Identify", "Classify", "State", "Report", "Determine"),
    "ask": ("Can you", "Could you", "Please"),
    "tell": ("name", "identify", "tell me", "classify"),
    "show": ("does {map} show", "is on {map}", "do you see on {map}", "best describes {map}"),
    "where": ("Where on {map}", "In which zone of {map}", "In what part of {map}", "Where exactly"),
    "sit": ("are {fails}", "do {fails} sit", "is {region}", "does the failure lie"),
    "zone": ("Which zone", "Which region", "Which part of the wafer", "What area"),
    "hit": ("is hit", "holds the fails", "is affected", "contains {fails}", "shows the failures"),
    "clock": ("which clock position", "which o'clock direction", "what clock angle", "which o'clock sector"),
    "side": ("one-sided", "lopsided", "symmetric", "skewed toward one side", "biased to one side"),
    "subject": ("the failure", "the defect", "the fail pattern", "{region}"),
    "shape": ("shape", "outline", "geometric form", "geometry", "morphology"),
    "form": ("form", "take", "make", "trace"),
    "size": ("large", "big", "dense", "severe", "extensive"),
    "amount": (
        "How many dies",
        "What share of the dies",
        "What fraction of the dies",
        "What percentage of dies",
    ),
    "figure": (
        "the yield",
        "the fail count",
        "the failing-die count",
        "the defect density",
        "the yield and fail count",
    ),
    "step": ("process step", "tool", "module", "tool group", "fab step", "piece of equipment"),
    "suspect": ("would you suspect", "should be checked first", "is to blame", "most likely caused this"),
    "causes": ("root causes", "physical mechanisms", "failure mechanisms", "causes", "process faults"),
    "explain": ("could explain", "might produce", "would account for", "are behind"),
    "this": ("this signature", "these fails", "this map", "the failing dies"),
    "likely": ("plausible", "likely", "possible", "probable"),
    "exists": (
        "Is there a defect pattern",
        "Do you see a failure signature",
        "Is there a systematic pattern",
        "Is there any defect",
    ),
    "ifso": ("If so", "If yes", "If there is one"),
    "which": ("which one?", "what kind?", "name it.", "which class?"),
}
#: The frames of each question kind (``{slot}`` = one of :data:`SLOTS`; nested slots expand too).
FRAMES: dict[str, tuple[str, ...]] = {
    "type": (
        "{what} {pattern} {show}?",
        "{name} the {pattern} of {map}.",
        "{pattern} for {map}?",
        "{ask} {tell} the {pattern} of {map}?",
    ),
    "count": (
        "How many {patterns} are on {map}, and which are they?",
        "How many {patterns} overlap on {map}? Name each.",
        "Is {map} single-type or mixed-type? List the {patterns}.",
        "List all the {patterns} present on {map}.",
        "One {pattern} or several on {map}? Name them.",
    ),
    "zone": (
        "{where} {sit}?",
        "{zone} of {map} {hit}?",
        "Locate {region} on {map}.",
        "Give the radial position of {fails}.",
    ),
    "clock": (
        "At {clock} {sit}?",
        "Toward {clock} do {fails} lean on {map}?",
        "Using a clock face with 12 at the top, where {sit}?",
        "Report the clock position of {region} on {map}.",
    ),
    "symmetry": (
        "Is {subject} {side}?",
        "Is {subject} on {map} {side}?",
        "Do {fails} favour one side of {map}?",
        "Does {subject} have a preferred direction?",
    ),
    "shape": (
        "{what} {shape} do {fails} {form}?",
        "Describe the {shape} and texture of {region}.",
        "What does {region} look like on {map}?",
        "{shape} of {region}?",
    ),
    "size": (
        "{amount} fail on {map}?",
        "Report {figure} of {map}.",
        "How {size} is {region}?",
        "What is {figure} here, and how {size} is {region}?",
    ),
    "step": (
        "{what} {step} {suspect}?",
        "Which {step} should the fab inspect for {this}?",
        "Name the {step} behind {this}.",
        "Where in the line would you look first for {this}?",
    ),
    "causes": (
        "What {causes} {explain} {this}?",
        "List {likely} {causes} for {this}.",
        "Which {causes} would you suspect behind {this}?",
        "Suggest {likely} {causes} and the equipment to check.",
    ),
    "type_step": (
        "{what} {pattern} {show}, and which {step} {suspect}?",
        "{name} the {pattern} and the {step} behind it.",
        "{pattern} and suspect {step}?",
    ),
    "exists_type": (
        "{exists} on {map}? {ifso}, {which}",
        "Does {map} carry a {pattern}? {ifso}, {which}",
    ),
    "type_zone": (
        "{what} {pattern} {show}, and where {sit}?",
        "{name} the {pattern} and where {region} lies.",
        "{pattern} and location on {map}?",
    ),
    "zone_shape": (
        "{where} {sit}, and what is its {shape}?",
        "Locate {region} and describe its {shape}.",
        "Location and {shape} of {region}?",
    ),
}
#: Lead-ins some phrasings get (one that ends in a comma lower-cases what follows).
LEADS: tuple[str, ...] = ("", "Quick question: ", "For the yield review: ", "Looking at the bin map, ")
_SLOT = re.compile(r"\{(\w+)\}")


def _fill(text: str) -> list[str]:
    """Every expansion of ``text``'s slots (the first slot first, recursively)."""
    m = _SLOT.search(text)
    if m is None:
        return [text]
    out: list[str] = []
    for choice in SLOTS[m.group(1)]:
        out.extend(_fill(text[: m.start()] + choice + text[m.end() :]))
    return out


def _lead(lead: str, q: str) -> str:
    return lead + (q[0].lower() + q[1:] if lead.endswith(", ") else q)


@cache
def frame_phrasings(kind: str) -> tuple[tuple[str, ...], ...]:
    """Per frame of ``kind``, every phrasing it makes with each lead-in, in a fixed order."""
    out = []
    for frame in FRAMES.get(kind, ()):
        bare = [q[0].upper() + q[1:] for q in _fill(frame)]
        out.append(tuple(dict.fromkeys(_lead(lead, q) for lead, q in product(LEADS, bare))))
    return tuple(out)


def phrasings(kind: str) -> list[str]:
    """Every phrasing of ``kind`` the frames make, deduplicated, in a fixed order."""
    return list(dict.fromkeys(q for qs in frame_phrasings(kind) for q in qs))


def sample(rng: np.random.Generator, kind: str) -> str:
    """One phrasing of ``kind``: a frame, then one of its phrasings, each uniformly (so a frame with
    many slots does not crowd out the rest)."""
    frames = frame_phrasings(kind)
    qs = frames[int(rng.integers(len(frames)))]
    return qs[int(rng.integers(len(qs)))]
