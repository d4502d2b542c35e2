"""The rule score: per-answer features (phrase matching, type F1, polarity, BLEU/ROUGE, length and
echo ratios) and their vectorised combination under a :class:`~wafersage.score.config.ScoreConfig`.

Features depend on the config only through the matching parameters, so :func:`features` can be
computed once per matching setting and :func:`combine` re-run cheaply for every weight setting (the
``align`` stage does exactly that). Formulas (arrays over the batch, ``d`` a rubric dimension)::

    C_d = hits_d / n_must_hit_d            H_d = min(1, hit_slope * C_d)
    (scoped: C_d = phrases hit by answer and reference / phrases the reference hits)
    A_d = max(0, 1 - avoid_step * n_f_d)   D_d = hit_weight * H_d + (1 - hit_weight) * A_d * H_d ** avoid_gate
    rubric = sum_d w_d D_d / sum_d w_d     (d in scope: all weighted dims, or those the reference covers)
    mix = sum_c w_c x_c / sum_c w_c   (c: rubric, type_f1, polarity, bleu, rouge, embedding; where defined)
    score = mix * length_factor * echo_factor * max(0, 1 - avoid_global_step * sum_d n_f_d)
            * (wrong types named <= type_spam_cap)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.phrasing import ZONE_PHRASES, clock_phrase, morph_keyword
from wafersage.score import matching
from wafersage.score.config import DIMENSIONS, ScoreConfig
from wafersage.score.textmetrics import bleu4, embedding_cosine, lcs_share, rouge_l
from wafersage.wafers import taxonomy
from wafersage.wafers.taxonomy import NONE

_POLAR = {"yes": 1, "true": 1, "correct": 1, "agree": 1, "no": 0, "false": 0, "incorrect": 0, "disagree": 0}
_POLAR_RX = re.compile(r"\b(yes|no|true|false|correct|incorrect|agree|disagree)\b")
#: Floor of the reference length in the length ratio (short references, e.g. "Center.").
MIN_REF_TOKENS = 8


@dataclass(frozen=True)
class Item:
    """What the rule score needs about one answer."""

    question: str
    answer: str
    reference: str
    rubric: Mapping[str, Any]
    labels: Sequence[str]


@dataclass
class Features:
    """Matching and text features of a batch (one row an answer); ``nan`` = not defined."""

    hits: np.ndarray  # (n, 4) must-hit phrases hit
    n_hit: np.ndarray  # (n, 4) must-hit phrases in the rubric
    avoids: np.ndarray  # (n, 4) must-avoid phrases present
    ref_cover: np.ndarray  # (n, 4) must-hit phrases the reference itself hits
    type_f1: np.ndarray
    n_wrong_types: np.ndarray  # defect types named that the wafer does not carry
    polarity: np.ndarray
    bleu: np.ndarray
    rouge: np.ndarray
    length_ratio: np.ndarray
    echo: np.ndarray
    empty: np.ndarray
    hits_ref: np.ndarray  # (n, 4) must-hit phrases hit by both the answer and the reference
    embedding: np.ndarray | None = None


def _phrases(rubric: Mapping[str, Any], key: str) -> list[list[str]]:
    return [list((rubric.get(d) or {}).get(key) or []) for d in DIMENSIONS]


def _avoid(rubric: Mapping[str, Any], expand: bool) -> list[list[str]]:
    """The rubric's must-avoid lists, plus (``expand``) the wrong values its structured fields imply."""
    base = _phrases(rubric, "must_avoid")
    if not expand:
        return base
    sp = rubric.get("spatial") or {}
    labels = tuple((rubric.get("defect_types") or {}).get("labels") or ())
    extra = derived_avoid(labels, str(sp.get("zone")), tuple(sp.get("clock_position") or ()))
    hit = _phrases(rubric, "must_hit")
    out = []
    for b, e, hs in zip(base, extra, hit, strict=True):
        skip = {x.lower() for x in hs} | {x.lower() for x in b}
        out.append(b + [x for x in e if x.lower() not in skip])
    return out


@lru_cache(maxsize=4096)
def derived_avoid(labels: tuple[str, ...], zone: str, clocks: tuple[int, ...]) -> tuple[list[str], ...]:
    """Per dimension, wrong claims implied by a wafer's labels, zone and clock positions: the other
    classes, far zones, clock hours 3+ away (any hour for a symmetric mass), other patterns' shape
    words and the process steps / equipment of patterns the wafer does not carry."""
    kb = load_knowledge_base()
    own = {c for c in labels if c != NONE}
    types = [c for c in taxonomy.patterns() if c not in own]
    spatial: list[str] = []
    order = ("center", "inner", "middle", "edge")
    if zone in order:
        spatial += [
            ZONE_PHRASES[z][0].removeprefix("the ")
            for z in order
            if abs(order.index(z) - order.index(zone)) >= 2
        ]
    far = [h for h in range(1, 13) if all(min(abs(h - c) % 12, 12 - abs(h - c) % 12) >= 3 for c in clocks)]
    spatial += [clock_phrase(h) for h in far]
    own_words = {morph_keyword(c) for c in own}
    morph = sorted({morph_keyword(c) for c in taxonomy.patterns() if c not in own} - own_words)
    own_parts = {p for c in own if c in kb.patterns for p in _kb_parts(kb.patterns[c])}
    root = sorted(
        {
            p
            for c in taxonomy.patterns()
            if c not in own and c in kb.patterns
            for p in _kb_parts(kb.patterns[c])
        }
        - own_parts
    )
    return types, spatial, morph, root


def _kb_parts(entry: Any) -> list[str]:
    return [p for p in re.split(r"\s*/\s*|\s*;\s*", entry.process_step) if p] + [entry.equipment_category]


def _polarity(text: str) -> int | None:
    m = _POLAR_RX.fullmatch(" ".join(matching.tokens(text)[:1]))  # the verdict is the first word
    return None if m is None else _POLAR[m.group(1)]


def set_f1(pred: set[str], truth: set[str]) -> float:
    """F1 of two label sets (both empty: 1)."""
    if not pred and not truth:
        return 1.0
    tp = len(pred & truth)
    return 0.0 if tp == 0 else 2 * tp / (len(pred) + len(truth))


@lru_cache(maxsize=8192)
def _reference_view(
    reference: str, must_hit: tuple[tuple[str, ...], ...], threshold: float, min_chars: int
) -> tuple:
    """What depends on the reference only (cached: a GSPO group shares one reference)."""
    ref = matching.Answer.parse(reference)
    ids: set[int] = set()
    cover, _ = matching.match_rubric(ref, [list(p) for p in must_hit], [], threshold, min_chars, ids)
    return (
        tuple(cover),
        frozenset(ids),
        frozenset(parse_labels(reference)),
        _polarity(reference),
        tuple(matching.tokens(reference)),
    )


def item_features(item: Item, threshold: float, min_chars: int, expand: bool = False) -> tuple:
    """The feature tuple of one answer (see :class:`Features`)."""
    must_hit, must_avoid = _phrases(item.rubric, "must_hit"), _avoid(item.rubric, expand)
    n_hit = [len(p) for p in must_hit]
    cover, ref_ids, ref_types, ref_pol, ref_toks = _reference_view(
        item.reference, tuple(tuple(p) for p in must_hit), threshold, min_chars
    )
    toks = matching.tokens(item.answer)
    if not toks:
        return [0] * 4, n_hit, [0] * 4, list(cover), 0.0, 0, np.nan, 0.0, 0.0, 0.0, 0.0, True, [0] * 4
    ans = matching.Answer.parse(item.answer)
    ids: set[int] = set()
    hits, avoids = matching.match_rubric(ans, must_hit, must_avoid, threshold, min_chars, ids)
    dim_of = [d for d, p in enumerate(must_hit) for _ in p]
    hits_ref = [0] * 4
    for i in ids & ref_ids:
        hits_ref[dim_of[i]] += 1
    pred = parse_labels(item.answer)
    truth = {c for c in item.labels} or {NONE}
    f1 = set_f1(pred, truth) if (ref_types or pred) else np.nan
    pol = _polarity(item.answer)
    polarity = np.nan if ref_pol is None else float(pol == ref_pol)
    q = matching.tokens(item.question)
    return (
        hits,
        n_hit,
        avoids,
        list(cover),
        f1,
        len(pred - truth - {NONE}),
        polarity,
        bleu4(toks, list(ref_toks)),
        rouge_l(toks, list(ref_toks)),
        len(toks) / max(len(ref_toks), MIN_REF_TOKENS),
        lcs_share(toks, q),
        False,
        hits_ref,
    )


def features(items: Sequence[Item], config: ScoreConfig, embedding: bool | None = None) -> Features:
    """Features of a batch under ``config``'s matching parameters (embedding cosine only when its
    weight is positive, or when ``embedding`` is True)."""
    rows = [
        item_features(it, config.fuzzy_threshold, config.min_fuzzy_chars, config.expand_avoid) for it in items
    ]
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 13
    f = Features(
        hits=np.asarray(cols[0], dtype=float).reshape(-1, 4),
        n_hit=np.asarray(cols[1], dtype=float).reshape(-1, 4),
        avoids=np.asarray(cols[2], dtype=float).reshape(-1, 4),
        ref_cover=np.asarray(cols[3], dtype=float).reshape(-1, 4),
        type_f1=np.asarray(cols[4], dtype=float),
        n_wrong_types=np.asarray(cols[5], dtype=float),
        polarity=np.asarray(cols[6], dtype=float),
        bleu=np.asarray(cols[7], dtype=float),
        rouge=np.asarray(cols[8], dtype=float),
        length_ratio=np.asarray(cols[9], dtype=float),
        echo=np.asarray(cols[10], dtype=float),
        empty=np.asarray(cols[11], dtype=bool),
        hits_ref=np.asarray(cols[12], dtype=float).reshape(-1, 4),
    )
    if embedding or (embedding is None and config.w_embedding > 0):
        f.embedding = embedding_cosine([it.answer for it in items], [it.reference for it in items])
    return f


def dimension_scores(f: Features, config: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(D, in_scope)``: per-dimension scores (n, 4) and which dimensions count for each answer."""
    w = np.array([config.dim_weights.get(d, 0.0) for d in DIMENSIONS])
    has = f.n_hit > 0
    scope = has & (w > 0)
    if config.scope_by_reference:
        scope = scope & (f.ref_cover > 0)
    if config.scope_by_reference:  # coverage of what the reference says, not of every rubric phrase
        coverage = np.divide(f.hits_ref, f.ref_cover, out=np.zeros_like(f.hits), where=f.ref_cover > 0)
    else:
        coverage = np.divide(f.hits, f.n_hit, out=np.zeros_like(f.hits), where=has)
    h = np.minimum(1.0, config.hit_slope * coverage)
    n_f = f.avoids
    if config.scope_by_reference:  # a wrong claim outside the asked dimensions still costs
        n_f = n_f + (f.avoids * ~scope).sum(axis=1, keepdims=True)
    a = np.maximum(0.0, 1.0 - config.avoid_step * n_f)
    d = config.hit_weight * h + (1 - config.hit_weight) * a * np.power(h, config.avoid_gate)
    return d, scope


def combine(f: Features, config: ScoreConfig) -> dict[str, np.ndarray]:
    """Every component and the overall ``score`` in [0, 1], vectorised over the batch."""
    d, scope = dimension_scores(f, config)
    w = np.array([config.dim_weights.get(x, 0.0) for x in DIMENSIONS]) * scope
    wsum = w.sum(axis=1)
    rubric = np.where(wsum > 0, (d * w).sum(axis=1) / np.where(wsum > 0, wsum, 1), np.nan)
    comps = {
        "rubric": rubric,
        "type_f1": f.type_f1,
        "polarity": f.polarity,
        "bleu": f.bleu,
        "rouge": f.rouge,
        "embedding": f.embedding if f.embedding is not None else np.full(len(f.bleu), np.nan),
    }
    num = np.zeros(len(f.bleu))
    den = np.zeros(len(f.bleu))
    for name, wc in config.weights().items():
        if wc <= 0:
            continue
        x = comps[name]
        ok = ~np.isnan(x)
        num += np.where(ok, wc * np.nan_to_num(x), 0.0)
        den += np.where(ok, wc, 0.0)
    mix = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    factor = np.ones_like(mix)
    if config.length_cap > 0:
        factor *= np.minimum(1.0, config.length_cap / np.maximum(f.length_ratio, 1e-9))
    if config.echo_cap > 0:
        over = np.clip((f.echo - config.echo_cap) / max(1 - config.echo_cap, 1e-9), 0.0, 1.0)
        factor *= 1.0 - over
    if config.avoid_global_step > 0:  # a wrong claim costs the whole answer, as a judge would have it
        factor *= np.maximum(0.0, 1.0 - config.avoid_global_step * f.avoids.sum(axis=1))
    if config.type_spam_cap > 0:
        factor *= f.n_wrong_types <= config.type_spam_cap
    score = np.clip(mix * factor, 0.0, 1.0) * ~f.empty
    out = {f"dim_{name}": d[:, i] for i, name in enumerate(DIMENSIONS)}
    out.update({k: v for k, v in comps.items()})
    out["score"] = score
    return out


def score_items(items: Sequence[Item], config: ScoreConfig) -> np.ndarray:
    """The overall rule score of each answer, in [0, 1]."""
    return combine(features(items, config), config)["score"]
