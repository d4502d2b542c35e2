"""Paraphrase-tolerant, negation-aware phrase matching of one answer against rubric phrase lists.

An answer is normalised once (lower case, whitespace collapsed) and split into word tokens with
their character offsets. A phrase hits when one of its variants (synonyms, see :func:`variants`)
matches a window of the same number of tokens exactly, or, for variants of at least
``min_fuzzy_chars`` characters, with a rapidfuzz ratio of at least ``threshold`` (a window of
whole tokens, so "ring" never hits inside "bring"). A match inside a negated clause does not count;
the negation rule is the one of :mod:`wafersage.annotation.answer_parser` (one implementation project-wide).
Must-hit matches are *masked* before must-avoid phrases are looked for, so a required "edge ring"
cannot also count as a forbidden "ring".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from wafersage.annotation.answer_parser import negated_at
from wafersage.annotation.phrasing import DISTRIBUTION_PHRASES, ZONE_PHRASES

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_MASK = "\x00"
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]

#: Hand-kept equivalences beyond the phrasing tables (each group: interchangeable surface forms).
_GROUPS: tuple[tuple[str, ...], ...] = (
    ("chemical mechanical planarization", "chemical mechanical polishing", "cmp"),
    ("rapid thermal anneal", "rapid thermal annealing", "rta"),
    ("edge ring", "edgering", "ring at the edge", "ring along the edge"),
    ("edge loc", "edgeloc", "edge localized", "edge local"),
    ("near full", "nearfull", "almost the whole wafer", "nearly the whole wafer"),
    ("donut", "doughnut", "annulus", "annular"),
    ("center", "centre"),
    ("central zone", "center zone", "centre zone", "center of the wafer", "wafer center"),
    ("edge zone", "edge", "periphery", "rim", "outer rim", "wafer edge"),
    ("scratch", "scratches"),
    ("streak", "scratch line", "thin line"),
    ("blob", "cluster", "clump"),
    ("no systematic defect", "no defect pattern", "no systematic pattern", "defect free", "normal wafer"),
    ("no concentration", "isolated", "no cluster"),
    ("no specific process", "no specific process step", "no particular process"),
)


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(str(text).lower().replace("-", " ").replace("_", " ")))


def _synonym_table() -> dict[str, frozenset[str]]:
    groups = [tuple(_norm(p) for p in g) for g in _GROUPS]
    for table in (ZONE_PHRASES, DISTRIBUTION_PHRASES):
        for phrases in table.values():
            groups.append(tuple(_norm(re.sub(r"^the ", "", p)) for p in phrases))
    for h in range(1, 13):
        groups.append((f"{h} o'clock", f"{_NUMBERS[h - 1]} o'clock", f"{h} oclock"))
    out: dict[str, set[str]] = {}
    for g in groups:
        for p in g:
            out.setdefault(p, set()).update(g)
    return {k: frozenset(v) for k, v in out.items()}


_SYNONYMS = _synonym_table()


@lru_cache(maxsize=65536)
def variants(phrase: str) -> tuple[str, ...]:
    """Normalised surface forms of a rubric phrase: itself, its synonyms, and the parts of an
    ``a / b`` or ``a; b`` alternative (each with their synonyms); longest first."""
    parts = {_norm(phrase)} | {_norm(p) for p in re.split(r"\s*[/;]\s*|\s+or\s+", phrase) if p.strip()}
    out: set[str] = set()
    for p in parts:
        if p:
            out.add(p)
            out.update(_SYNONYMS.get(p, ()))
    return tuple(sorted(out, key=lambda s: (-len(s), s)))


@dataclass
class Answer:
    """One answer, tokenised once; ``mask`` marks tokens already claimed by a must-hit match."""

    text: str
    tokens: list[str]
    starts: list[int]
    mask: list[bool] = field(default_factory=list)
    _windows: dict[tuple[int, bool], Any] = field(default_factory=dict)  # windows (k>0), indices (-k)

    @classmethod
    def parse(cls, raw: str) -> Answer:
        text = " ".join(str(raw).lower().replace("-", " ").replace("_", " ").split())
        toks, starts = [], []
        for m in _WORD.finditer(text):
            toks.append(m.group())
            starts.append(m.start())
        return cls(text, toks, starts, [False] * len(toks))

    def windows(self, k: int, masked: bool) -> list[str]:
        """Every run of ``k`` tokens joined by spaces (masked tokens blanked when ``masked``)."""
        key = (k, masked)
        if key not in self._windows:
            toks = [_MASK if (masked and m) else t for t, m in zip(self.tokens, self.mask, strict=True)]
            self._windows[key] = [" ".join(toks[i : i + k]) for i in range(len(toks) - k + 1)]
        return self._windows[key]

    def window_set(self, k: int, masked: bool) -> set[str]:
        """The distinct windows of ``k`` tokens (O(1) exact membership)."""
        key = (-k, masked)
        if key not in self._windows:
            self._windows[key] = set(self.windows(k, masked))
        return self._windows[key]

    def joined(self, masked: bool) -> tuple[str, dict[int, int]]:
        """``" tok tok ... "`` and a map from each token's offset in it to the token index."""
        key = (0, masked)
        if key not in self._windows:
            toks = [_MASK if (masked and m) else t for t, m in zip(self.tokens, self.mask, strict=True)]
            offsets, pos = {}, 1
            for i, t in enumerate(toks):
                offsets[pos] = i
                pos += len(t) + 1
            self._windows[key] = (" " + " ".join(toks) + " ", offsets)
        return self._windows[key]

    def occurrences(self, phrase: str, masked: bool) -> list[int]:
        """Token indices where the normalised ``phrase`` starts (whole tokens)."""
        text, offsets = self.joined(masked)
        needle = f" {phrase} "
        out, at = [], text.find(needle)
        while at >= 0:
            out.append(offsets[at + 1])
            at = text.find(needle, at + 1)
        return out

    def claim(self, start: int, k: int) -> None:
        """Mask tokens ``start .. start+k`` (invalidates the masked windows)."""
        for i in range(start, start + k):
            self.mask[i] = True
        self._windows = {key: w for key, w in self._windows.items() if not key[1]}


@lru_cache(maxsize=16384)
def _plan(phrases: tuple[str, ...], min_fuzzy_chars: int) -> tuple[dict, dict]:
    """Variants of ``phrases`` grouped by token count: ``{k: (variants, phrase indices)}`` for the
    exact pass (all variants) and for the fuzzy pass (variants of at least ``min_fuzzy_chars``)."""
    exact: dict[int, tuple[list[str], list[int]]] = {}
    fuzzy: dict[int, tuple[list[str], list[int]]] = {}
    for pi, p in enumerate(phrases):
        for v in variants(p):
            k = v.count(" ") + 1
            for plan, ok in ((exact, True), (fuzzy, len(v) >= min_fuzzy_chars)):
                if ok:
                    vs, ids = plan.setdefault(k, ([], []))
                    vs.append(v)
                    ids.append(pi)
    return exact, fuzzy


def find_spans(
    ans: Answer, phrases: list[str], threshold: float, min_fuzzy_chars: int, masked: bool
) -> dict[int, tuple[int, int]]:
    """``{phrase index: (start, n_tokens)}`` of the phrases that match: exact variants first (set
    lookups), then fuzzy ones (one rapidfuzz ``cdist`` call per window length)."""
    if not ans.tokens or not phrases:
        return {}
    exact, fuzzy = _plan(tuple(phrases), min_fuzzy_chars)
    found: dict[int, tuple[int, int]] = {}
    for k, (vs, ids) in exact.items():
        present = ans.window_set(k, masked)
        for v, pi in zip(vs, ids, strict=True):
            if pi in found or v not in present:
                continue
            for i in ans.occurrences(v, masked):
                if not negated_at(ans.text, ans.starts[i]):
                    found[pi] = (i, k)
                    break
    if threshold >= 100 or len(found) == len(phrases):
        return found
    for k, (vs, ids) in fuzzy.items():
        wins = ans.windows(k, masked)
        if not wins or all(pi in found for pi in ids):
            continue
        m = process.cdist(vs, wins, scorer=fuzz.ratio, score_cutoff=threshold, workers=1)
        rows, cols = np.nonzero(m)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            pi = ids[r]
            if pi not in found and not negated_at(ans.text, ans.starts[c]):
                found[pi] = (c, k)
    return found


def match_rubric(
    ans: Answer,
    must_hit: list[list[str]],
    must_avoid: list[list[str]],
    threshold: float,
    min_fuzzy_chars: int,
    hit_ids: set[int] | None = None,
) -> tuple[list[int], list[int]]:
    """Per dimension: number of must-hit phrases hit, number of must-avoid phrases present.

    The longer match wins: a must-avoid match that strictly contains a must-hit match ("edge loc"
    around a required "loc") is claimed first and the must-hit phrases are looked for elsewhere. Then
    every must-hit match (all dimensions) is masked before the must-avoid phrases are looked for, so
    a required "edge ring" does not count as a forbidden "ring". ``hit_ids``, when given, receives the
    flat indices (over all dimensions) of the phrases hit."""
    hflat = [(d, p) for d, phrases in enumerate(must_hit) for p in phrases]
    aflat = [(d, p) for d, phrases in enumerate(must_avoid) for p in phrases]
    hphr, aphr = [p for _, p in hflat], [p for _, p in aflat]
    hspans = find_spans(ans, hphr, threshold, min_fuzzy_chars, masked=False)
    counted: set[int] = set()
    if hspans and aphr:
        for i, (s2, k2) in find_spans(ans, aphr, threshold, min_fuzzy_chars, masked=False).items():
            if any(k2 > k and s2 <= s and s2 + k2 >= s + k for s, k in hspans.values()):
                counted.add(i)
                ans.claim(s2, k2)
        if counted:
            hspans = find_spans(ans, hphr, threshold, min_fuzzy_chars, masked=True)
    hits = [0] * len(must_hit)
    for i, span in hspans.items():
        hits[hflat[i][0]] += 1
        ans.claim(*span)
        if hit_ids is not None:
            hit_ids.add(i)
    avoids = [0] * len(must_avoid)
    for i in counted | set(find_spans(ans, aphr, threshold, min_fuzzy_chars, masked=True)):
        avoids[aflat[i][0]] += 1
    return hits, avoids


def tokens(text: str) -> list[str]:
    """Normalised word tokens (the tokenisation of BLEU/ROUGE and the echo check)."""
    return _WORD.findall(str(text).lower().replace("-", " ").replace("_", " "))
