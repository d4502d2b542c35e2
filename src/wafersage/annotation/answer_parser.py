"""Free-text answer to a defect-type question -> the set of taxonomy classes it asserts.

Shared by every stage that scores a model's answers (SFT, GSPO rewards, evaluation). Matching is
on whole words, lower-cased, with the spellings engineers use ("edge ring", "edge-ring", "ring at
the edge", "near full", "no defect", ...). A mention inside a negated clause ("no scratch is
visible", "not an edge ring", "rather than Loc") does not count. A pattern mention wins over a
"none" phrase; an answer naming no class yields the empty set.
"""

from __future__ import annotations

import re
from functools import lru_cache

from wafersage.wafers import taxonomy
from wafersage.wafers.taxonomy import NONE

#: Phrases (regular expressions over lower-cased text) for each class, most specific first.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Edge-Ring": (
        r"edge[\s_-]*ring",
        r"ring[\s-]+(?:at|along|around|on|near)\s+(?:the\s+)?(?:wafer\s+)?(?:edge|rim|periphery)",
        r"(?:peripheral|perimeter|circumferential)\s+ring",
    ),
    "Edge-Loc": (
        r"edge[\s_-]*loc(?:al(?:i[sz]ed)?)?",
        r"(?:local(?:i[sz]ed)?|clustered)\s+(?:cluster\s+|defects?\s+)?(?:at|near|on|along)\s+(?:the\s+)?(?:wafer\s+)?edge",
    ),
    "Near-full": (
        r"near[\s_-]*full",
        r"(?:almost|nearly)\s+(?:the\s+)?(?:entire|whole|full)",
        r"full[\s-]+wafer",
    ),
    "Donut": (r"donut", r"doughnut", r"annul(?:us|ar)"),
    "Center": (r"cent(?:er|re)(?:\s+(?:cluster|blob|pattern|defect))?",),
    "Scratch": (r"scratch(?:es)?", r"scratch[\s-]*like"),
    "Random": (r"random(?:ly)?", r"scattered\s+(?:randomly|across)"),
    "Loc": (r"loc", r"local(?:i[sz]ed)?(?:\s+cluster)?"),
    NONE: (
        r"no\s+(?:visible\s+)?(?:defect|pattern|failure)s?(?:\s+pattern)?",
        r"defect[\s-]*free",
        r"normal",
        r"none",
        r"clean\s+wafer",
    ),
}

#: Order in which classes claim text: longer, more specific patterns before the ones they contain
#: (Edge-Loc before Loc, Edge-Ring and Donut before any bare "ring"). A class of a configured
#: taxonomy outside this table claims after these (longest name first), before ``none``.
_ORDER = ("Edge-Ring", "Edge-Loc", "Near-full", "Donut", "Scratch", "Random", "Center", "Loc", NONE)


def spelling_pattern(spelling: str) -> str:
    """A regex for one spelling of a class name: lower-case, any run of space, ``-`` or ``_``
    between its words (``Edge-Loc`` -> ``edge[\\s_-]*loc``)."""
    words = [w for w in re.split(r"[\s_-]+", spelling.strip().lower()) if w]
    return r"[\s_-]*".join(re.escape(w) for w in words)


def class_phrases(name: str) -> tuple[str, ...]:
    """The phrases (regexes) that name class ``name`` in the active taxonomy: the table's own for
    a WM-811K class, and the class's name and configured synonyms (every class)."""
    own = SYNONYMS.get(name, ())
    return own + tuple(
        p for p in dict.fromkeys(map(spelling_pattern, taxonomy.active().spellings(name))) if p not in own
    )


@lru_cache(maxsize=8)
def _compiled_for(t: taxonomy.Taxonomy) -> list[tuple[str, re.Pattern[str]]]:
    known = [c for c in _ORDER if c in t.index]
    extra = sorted((c for c in t.classes if c not in _ORDER), key=lambda c: (-len(c), c))
    order = [*known[:-1], *extra, NONE] if known and known[-1] == NONE else [*known, *extra]
    return [(c, re.compile(r"\b(?:" + "|".join(class_phrases(c)) + r")\b")) for c in order]


def compiled() -> list[tuple[str, re.Pattern[str]]]:
    """Each class of the active taxonomy with its compiled phrases, in claiming order."""
    return _compiled_for(taxonomy.active())


#: A negation cue before a mention, within the same clause.
_NEGATION = re.compile(
    r"\b(?:no|not|without|neither|nor|never|rather\s+than|instead\s+of|isn't|is\s+not|aren't|absent|"
    r"unlike|excluding|rules?\s+out|ruled\s+out)\b[^.;:,!?]*$"
)
#: "around the center" and the like locate another pattern; they do not name the Center class.
_LOCATION = re.compile(
    r"\b(?:around|at|near|in|toward|towards|from|off|of)\s+(?:the\s+)?(?:wafer(?:'s)?\s+)?cent(?:er|re)\b"
)
#: A clause boundary: negation does not reach across it.
_CLAUSE = re.compile(r"[.;:!?]|,\s*(?:but|and|while|whereas)\b|\bbut\b")


def negated_at(text: str, start: int) -> bool:
    """Whether a negation ("no", "not", "without", ...) governs the word at ``start`` of ``text``:
    searched in its own clause only. The one negation rule of the project (answer parser, rule
    score and judge all use it)."""
    before = text[:start]
    clauses = _CLAUSE.split(before)
    return bool(_NEGATION.search(clauses[-1] if clauses else before))


def parse_labels(answer: str) -> set[str]:
    """The classes an answer asserts (empty when it names none)."""
    text = " ".join(str(answer).lower().split())
    text = _LOCATION.sub(lambda m: " " * len(m.group()), text)
    taken = [False] * len(text)
    found: set[str] = set()
    for cls, rx in compiled():
        for m in rx.finditer(text):
            if any(taken[m.start() : m.end()]):
                continue
            taken[m.start() : m.end()] = [True] * (m.end() - m.start())
            if cls == NONE or not negated_at(text, m.start()):
                found.add(cls)
    if len(found) > 1:
        found.discard(NONE)
    return found


def parse_primary(answer: str) -> str | None:
    """One label for single-label scoring: the parsed classes ``+``-joined in taxonomy order (as
    ``taxonomy.primary_label`` does), or ``None`` when the answer names no class."""
    labels = sorted(parse_labels(answer), key=taxonomy.class_index().__getitem__)
    return "+".join(labels) if labels else None
