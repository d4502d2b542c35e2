"""The calibration pool: answers of graded quality for a sample of val questions, scored by the judge
and by the rule score so that ``align`` can fit one to the other.

For each sampled QA pair the pool holds the reference answer, a paraphrase, and systematic
corruptions (:data:`VARIANTS`). Rows follow :data:`POOL_COLUMNS`; model outputs (``source`` =
``model:<name>``, ``variant`` = ``model``) can be appended later with :func:`append_rows` in the same
schema (a re-alignment run outside the first pipeline pass, which would otherwise be a cycle).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError
from wafersage.knowledge import KnowledgeBase
from wafersage.phrasing import DISTRIBUTION_PHRASES, ZONE_PHRASES, opposite_clock
from wafersage.taxonomy import CLASS_INDEX, NONE, PATTERNS, confusable_with

VARIANTS: tuple[str, ...] = (
    "reference",
    "paraphrase",
    "swap_type",
    "wrong_zone",
    "opposite_clock",
    "drop_dimension",
    "hallucinated_defect",
    "wrong_root_cause",
    "generic",
    "truncated",
    "negation_flip",
)
POOL_COLUMNS: tuple[str, ...] = (
    "item_id",
    "pair_id",
    "wafer_id",
    "rubric_id",
    "category",
    "question",
    "reference",
    "answer",
    "variant",
    "source",
)
GENERIC = "The wafer map shows a defect pattern; further analysis of the process is recommended."
_ZONE_ORDER = ("center", "inner", "middle", "edge")
_CLASS_RX = {c: re.compile(re.escape(c).replace(r"\-", r"[\s_-]?"), re.IGNORECASE) for c in PATTERNS}
_CLOCK_RX = re.compile(r"\b(\d{1,2}) o'clock\b")


def _other_class(labels: list[str], rng: np.random.Generator, confusable: bool) -> str:
    defects = [c for c in labels if c != NONE]
    pool = [c for d in defects for c in confusable_with(d) if c not in defects] if confusable else []
    if not pool:
        near = {c for d in defects for c in confusable_with(d)}
        pool = [c for c in PATTERNS if c not in defects and c not in near] or ["Scratch"]
    return pool[int(rng.integers(len(pool)))]


def _replace_any(text: str, phrases: list[str], new: str) -> tuple[str, bool]:
    for p in sorted(phrases, key=len, reverse=True):
        rx = re.compile(re.escape(p), re.IGNORECASE)
        if rx.search(text):
            return rx.sub(new, text), True
    return text, False


def paraphrase(text: str, rng: np.random.Generator) -> str:
    """Swap zone/distribution phrases and class spellings for equivalent ones."""
    out = text
    for table in (ZONE_PHRASES, DISTRIBUTION_PHRASES):
        for options in table.values():
            for i, p in enumerate(options):
                if p.lower() in out.lower():
                    alt = options[(i + 1 + int(rng.integers(len(options) - 1))) % len(options)]
                    out, _ = _replace_any(out, [p], alt)
                    break
    for c in PATTERNS:
        out = _CLASS_RX[c].sub(c.lower().replace("-", " "), out)
    out = re.sub(r"^Start with", "Investigate", out)
    out = re.sub(r"^Likely causes:", "Probable causes:", out)
    return out if out != text else f"{text.rstrip('.')}, as the map shows."


def corrupt(
    variant: str, text: str, rec: Mapping[str, Any], kb: KnowledgeBase, rng: np.random.Generator
) -> str:
    """One corrupted version of a reference answer (see :data:`VARIANTS`)."""
    labels = list(rec["labels"])
    r = rec["rubric"]
    if variant == "reference":
        return text
    if variant == "paraphrase":
        return paraphrase(text, rng)
    if variant == "generic":
        return GENERIC
    if variant == "truncated":
        words = text.split()
        return " ".join(words[: max(1, int(len(words) * 0.4))])
    if variant == "negation_flip":
        if re.match(r"^(yes|no)\b", text, re.IGNORECASE):
            return ("No" if text[:3].lower() == "yes" else "Yes") + re.sub(r"^(yes|no)", "", text, flags=re.I)
        flat = re.sub(r"[:;.]\s*", ", ", text.rstrip(".")).strip(", ")
        return f"It is not the case that {flat[0].lower()}{flat[1:]}."
    if variant == "swap_type":
        new = _other_class(labels, rng, confusable=True)
        defects = [c for c in labels if c != NONE] or []
        out, done = text, False
        for d in defects:
            if _CLASS_RX[d].search(out):
                out, done = _CLASS_RX[d].sub(new, out), True
        return out if done else f"{text} This is a {new} pattern."
    if variant == "hallucinated_defect":
        return f"{text} There is also a {_other_class(labels, rng, confusable=False)} pattern."
    if variant == "wrong_zone":
        zone = r["spatial"]["zone"]
        far = [
            z
            for z in _ZONE_ORDER
            if z != zone
            and (zone not in _ZONE_ORDER or abs(_ZONE_ORDER.index(z) - _ZONE_ORDER.index(zone)) >= 2)
        ]
        wrong = far[int(rng.integers(len(far)))] if far else "center"
        out, done = _replace_any(text, ZONE_PHRASES.get(zone, []), ZONE_PHRASES[wrong][0])
        return out if done else f"{text} The fails sit in {ZONE_PHRASES[wrong][0]}."
    if variant == "opposite_clock":
        if _CLOCK_RX.search(text):
            return _CLOCK_RX.sub(lambda m: f"{opposite_clock(int(m.group(1)))} o'clock", text)
        clocks = r["spatial"]["clock_position"] or [int(rng.integers(1, 13))]
        return f"{text} The mass sits around {opposite_clock(clocks[0])} o'clock."
    if variant == "drop_dimension":
        parts = [p for p in re.split(r"(?<=[.;:])\s+", text) if p]
        if len(parts) > 1:
            drop = int(rng.integers(len(parts)))
            return " ".join(p for i, p in enumerate(parts) if i != drop)
        words = text.split()
        return " ".join(words[: max(1, len(words) // 2)])
    if variant == "wrong_root_cause":
        defects = [c for c in labels if c != NONE]
        other = _other_class(labels, rng, confusable=True)
        entry = kb.patterns.get(other)
        if entry is None:
            return text
        own = [kb.patterns[d] for d in defects if d in kb.patterns]
        out, done = text, False
        for e in own:
            for old, new in (
                (e.process_step, entry.process_step),
                (e.equipment_category, entry.equipment_category),
            ):
                if old in out:
                    out, done = out.replace(old, new), True
        return out if done else f"{text} The likely root cause is {entry.process_step}."
    raise WaferSageError("calibration", "unknown variant", variant)


def build_pool(
    pairs: pd.DataFrame,
    records: Mapping[str, Mapping[str, Any]],
    kb: KnowledgeBase,
    n_pairs: int,
    seed: int,
    variants: tuple[str, ...] = VARIANTS,
) -> pd.DataFrame:
    """The pool for ``n_pairs`` QA pairs sampled (stratified by category) from ``pairs`` (VQA rows
    with pair_id, wafer_id, rubric_id, category, question, answer); ``records``: rubric records by
    wafer id."""
    rng = np.random.default_rng(seed)
    pairs = pairs[pairs["wafer_id"].isin(list(records))].sort_values("pair_id").reset_index(drop=True)
    cats = sorted(pairs["category"].unique())
    per = max(1, n_pairs // max(len(cats), 1))
    chosen = []
    for c in cats:
        idx = np.flatnonzero(pairs["category"].to_numpy() == c)
        chosen.extend(rng.choice(idx, size=min(per, len(idx)), replace=False).tolist())
    rows = []
    for i in sorted(chosen):
        p = pairs.iloc[i]
        rec = records[p["wafer_id"]]
        seen: set[str] = set()
        for v in variants:
            ans = corrupt(v, str(p["answer"]), rec, kb, np.random.default_rng([seed, i, VARIANTS.index(v)]))
            if v != "reference" and (ans in seen or not ans.strip()):
                continue
            seen.add(ans)
            rows.append(
                {
                    "item_id": f"{p['pair_id']}:{v}",
                    "pair_id": p["pair_id"],
                    "wafer_id": p["wafer_id"],
                    "rubric_id": p["rubric_id"],
                    "category": p["category"],
                    "question": p["question"],
                    "reference": p["answer"],
                    "answer": ans,
                    "variant": v,
                    "source": "synthetic",
                }
            )
    return pd.DataFrame(rows, columns=list(POOL_COLUMNS))


def append_rows(pool_path: str | Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Append answers (e.g. model outputs) in :data:`POOL_COLUMNS` to a pool file, atomically."""
    missing = [c for c in POOL_COLUMNS if c not in rows.columns]
    if missing:
        raise WaferSageError(pool_path, "pool rows miss columns", ", ".join(missing))
    path = Path(pool_path)
    old = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=list(POOL_COLUMNS))
    out = pd.concat([old, rows[list(POOL_COLUMNS)]], ignore_index=True)
    if out["item_id"].duplicated().any():
        raise WaferSageError(
            pool_path, "duplicate item_id", str(out.loc[out["item_id"].duplicated(), "item_id"].iloc[0])
        )
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False)
    return out


assert set(CLASS_INDEX) >= set(PATTERNS)
