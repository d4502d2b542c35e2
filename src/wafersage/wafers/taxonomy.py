"""The defect taxonomy: the one place that names the classes and how sources spell them.

The classes are configurable (params ``taxonomy``: an ordered ``classes`` list, ``none`` first,
and ``synonyms``). One taxonomy is *active* in a process: every stage's command activates the one
of params.yaml before it runs (:func:`activate`), a model folder carries the one it was trained
with (``taxonomy`` in its ``wafersage.json``, activated when a predictor loads the folder), and
everything else asks for the active one at call time (:func:`classes`, :func:`class_index`,
:func:`patterns`, :func:`canonical`, ...), never binding a class list at import. The default is
WM-811K's nine classes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from wafersage.errors import WaferSageError

log = logging.getLogger(__name__)

NONE = "none"

#: WM-811K's nine failure types, in the default class order (the synthetic generator's classes).
WM811K_CLASSES: tuple[str, ...] = (
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
#: How the WM-811K sources spell a class besides its own name (any case).
WM811K_SYNONYMS: dict[str, tuple[str, ...]] = {
    NONE: ("normal",),
    "Edge-Loc": ("edgeloc", "edge_loc"),
    "Edge-Ring": ("edgering", "edge_ring"),
    "Near-full": ("nearfull", "near_full"),
}

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

#: Confusions engineers actually make, used to inject realistic label noise (symmetric pairs);
#: pairs with a class the active taxonomy lacks are ignored.
CONFUSABLE: tuple[tuple[str, str], ...] = (
    ("Loc", "Edge-Loc"),
    ("Edge-Loc", "Edge-Ring"),
    ("Center", "Loc"),
    ("Donut", "Edge-Ring"),
    ("Random", "Near-full"),
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")


@dataclass(frozen=True)
class Taxonomy:
    """An ordered class list (``none`` first) and the extra spellings of each class.

    The constructor checks it: ``none`` first, no duplicate (case-insensitive), names of letters,
    digits, ``-``, ``_``, ``.`` and spaces (no ``+``: it joins mixed labels), synonyms only of
    listed classes, and no spelling that names two classes. A broken one raises ``ValueError``
    with one line naming the key (``classes`` or ``synonyms.<class>``)."""

    classes: tuple[str, ...]
    synonyms: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        syn = self.synonyms.items() if isinstance(self.synonyms, Mapping) else self.synonyms
        object.__setattr__(self, "synonyms", tuple((str(k), tuple(str(s) for s in v)) for k, v in syn))
        check_classes(self.classes)
        check_synonyms(self.classes, dict(self.synonyms))

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Taxonomy:
        """From params' ``taxonomy`` section (or the ``taxonomy`` of a model folder's ``wafersage.json``)."""
        return cls(tuple(data.get("classes") or WM811K_CLASSES), dict(data.get("synonyms") or {}))

    def as_dict(self) -> dict[str, Any]:
        """The params ``taxonomy`` section (as a model folder's ``wafersage.json`` keeps it)."""
        return {"classes": list(self.classes), "synonyms": {k: list(v) for k, v in self.synonyms}}

    @cached_property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @cached_property
    def patterns(self) -> tuple[str, ...]:
        return self.classes[1:]

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Every spelling, lower-cased, -> its class."""
        out = {c.lower(): c for c in self.classes}
        for c, spellings in self.synonyms:
            out.update({s.strip().lower(): c for s in spellings})
        return out

    def spellings(self, name: str) -> tuple[str, ...]:
        """``name`` and its synonyms."""
        return (name, *dict(self.synonyms).get(name, ()))

    def label_regex(self) -> str:
        """A raw-table label key: one class, or patterns ``+``-joined (the GX raw suite's regex)."""
        one = "|".join(_literal(c) for c in self.classes)
        more = "|".join(_literal(c) for c in self.patterns)
        return f"^(?:{one})(?:\\+(?:{more}))*$"


def _literal(name: str) -> str:
    """A class name as a regex literal (names hold letters, digits, space, ``-``, ``_``, ``.``)."""
    return name.replace(".", r"\.")


def check_classes(classes: Iterable[str]) -> None:
    """``none`` first, no duplicates, well-formed names; raise ``ValueError`` saying which."""
    classes = list(classes)
    if not classes or classes[0] != NONE:
        raise ValueError(f"'{NONE}' must be the first class (got {classes[:3]!r})")
    seen: dict[str, str] = {}
    for c in classes:
        if not _NAME.match(c):
            raise ValueError(f"class {c!r}: letters, digits, '-', '_', '.' or spaces only")
        if c.lower() in seen:
            raise ValueError(f"duplicate class {c!r}")
        seen[c.lower()] = c
    if len(classes) < 2:
        raise ValueError("needs at least one class besides 'none'")


def check_synonyms(classes: tuple[str, ...], synonyms: Mapping[str, Iterable[str]]) -> None:
    """Synonyms of listed classes only, and no spelling naming two classes."""
    owner = {c.lower(): c for c in classes}
    for c, spellings in synonyms.items():
        if c not in classes:
            raise ValueError(f"synonyms.{c}: not a class of taxonomy.classes")
        for s in spellings:
            key = str(s).strip().lower()
            if not key:
                raise ValueError(f"synonyms.{c}: empty spelling")
            if owner.get(key, c) != c:
                raise ValueError(f"synonyms.{c}: {s!r} already names {owner[key]!r}")
            owner[key] = c


WM811K = Taxonomy(WM811K_CLASSES, WM811K_SYNONYMS)
_active: Taxonomy = WM811K


def active() -> Taxonomy:
    """The taxonomy in force in this process."""
    return _active


def activate(taxonomy: Taxonomy | Mapping[str, Any] | None) -> Taxonomy:
    """Make ``taxonomy`` (a :class:`Taxonomy` or a params ``taxonomy`` mapping; ``None``: WM-811K)
    the active one; returns it."""
    global _active
    t = WM811K if taxonomy is None else taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.of(taxonomy)
    if t != _active:
        log.info("taxonomy: %d classes (%s)", len(t.classes), ", ".join(t.classes))
    _active = t
    return t


def classes() -> tuple[str, ...]:
    """The active classes, ``none`` first: the order of every class index in the project."""
    return _active.classes


def class_index() -> dict[str, int]:
    """Class name -> its index in :func:`classes`."""
    return _active.index


def patterns() -> tuple[str, ...]:
    """The defect patterns (every class but ``none``)."""
    return _active.patterns


def canonical(name: str) -> str:
    """Return the canonical class name for ``name``; raise ``KeyError`` when it is unknown."""
    key = str(name).strip().lower()
    aliases = _active.aliases
    if key not in aliases:
        raise KeyError(name)
    return aliases[key]


def confusable_with(name: str) -> list[str]:
    """Classes an engineer is likely to mistake ``name`` for (besides ``none``)."""
    index = _active.index
    out = [b for a, b in CONFUSABLE if a == name] + [a for a, b in CONFUSABLE if b == name]
    return sorted({c for c in out if c in index}, key=index.__getitem__)


def order_key(name: str) -> tuple[int, str]:
    """Sort key in taxonomy order (a name outside it last, alphabetically)."""
    return (_active.index.get(name, len(_active.classes)), name)


def primary_label(labels: list[str] | tuple[str, ...]) -> str | None:
    """One class per wafer for stratification: ``None`` unlabelled, the single label, or a
    ``+``-joined combination for mixed-type maps (in taxonomy order)."""
    if len(labels) == 0:
        return None
    return "+".join(sorted(labels, key=order_key))


def require(names: Iterable[str], what: str) -> None:
    """Refuse (one-line :class:`~wafersage.errors.WaferSageError`) when the active taxonomy lacks
    a class that ``what`` (a source, the generator) produces."""
    missing = [c for c in names if c not in _active.index]
    if missing:
        raise WaferSageError(
            "params.yaml", f"taxonomy.classes lacks classes {what} produces", ", ".join(missing)
        )
