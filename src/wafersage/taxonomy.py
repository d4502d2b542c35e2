"""The defect taxonomy: the one place that names the classes and how sources spell them."""

from __future__ import annotations

NONE = "none"

#: WM-811K's nine failure types, in the order used for every class index in the project.
CLASSES: tuple[str, ...] = (
    NONE,
    "Center",
    "Donut",
    "Edge-Loc",
    "Edge-Ring",
    "Loc",
    "Near-full",
    "Random",
    "Scratch",
)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: The eight defect patterns (every class but ``none``).
PATTERNS: tuple[str, ...] = CLASSES[1:]

#: MixedWM38's one-hot column order (``arr_1`` of the .npz and ``label`` of the processed pickle).
MIXEDWM38_ORDER: tuple[str, ...] = (
    "Center",
    "Donut",
    "Edge-Loc",
    "Edge-Ring",
    "Loc",
    "Near-full",
    "Scratch",
    "Random",
)

#: How the sources spell a class, lower-cased, mapped to the canonical name.
ALIASES: dict[str, str] = {
    **{c.lower(): c for c in CLASSES},
    "normal": NONE,
    "none": NONE,
    "edge-loc": "Edge-Loc",
    "edgeloc": "Edge-Loc",
    "edge_loc": "Edge-Loc",
    "edge-ring": "Edge-Ring",
    "edgering": "Edge-Ring",
    "edge_ring": "Edge-Ring",
    "near-full": "Near-full",
    "nearfull": "Near-full",
    "near_full": "Near-full",
}

#: Confusions engineers actually make, used to inject realistic label noise (symmetric pairs).
CONFUSABLE: tuple[tuple[str, str], ...] = (
    ("Loc", "Edge-Loc"),
    ("Edge-Loc", "Edge-Ring"),
    ("Center", "Loc"),
    ("Donut", "Edge-Ring"),
    ("Random", "Near-full"),
)


def canonical(name: str) -> str:
    """Return the canonical class name for ``name``; raise ``KeyError`` when it is unknown."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise KeyError(name)
    return ALIASES[key]


def confusable_with(name: str) -> list[str]:
    """Classes an engineer is likely to mistake ``name`` for (besides ``none``)."""
    out = [b for a, b in CONFUSABLE if a == name] + [a for a, b in CONFUSABLE if b == name]
    return sorted(set(out), key=CLASS_INDEX.__getitem__)


def primary_label(labels: list[str] | tuple[str, ...]) -> str | None:
    """One class per wafer for stratification: ``None`` unlabelled, the single label, or a
    ``+``-joined combination for mixed-type maps (in taxonomy order)."""
    if len(labels) == 0:
        return None
    return "+".join(sorted(labels, key=lambda c: (CLASS_INDEX.get(c, len(CLASSES)), c)))
