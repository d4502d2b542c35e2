"""The calibration pool: answers of graded quality for a sample of val questions, scored by the judge
and by the rule score so that ``align`` can fit one to the other.

For each sampled QA pair the pool holds the reference answer, a paraphrase, and systematic
corruptions (:data:`VARIANTS`). Rows follow :data:`POOL_COLUMNS`.

Model outputs close the loop without a DVC cycle: ``evaluate`` writes each model's answers to val
pairs (``source`` = ``model:<name>``, ``variant`` = ``model``); ``wafersage absorb`` copies them
into the version-controlled ``calibration/`` folder (:func:`absorb`, one content-named file per
evaluation); the judge stage depends on that folder and adds its rows to the next pool
(:func:`read_absorbed`), so the next ``dvc repro`` re-grades them and re-aligns the reward.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.knowledge import KnowledgeBase
from wafersage.annotation.phrasing import DISTRIBUTION_PHRASES, ZONE_PHRASES, opposite_clock
from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError, read_parquet
from wafersage.wafers import taxonomy
from wafersage.wafers.taxonomy import NONE, confusable_with

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


@lru_cache(maxsize=64)
def _class_rx(c: str) -> re.Pattern[str]:
    """A class name as a whole word: "Loc" matches neither "o'clock" nor "Edge-Loc"."""
    return re.compile(r"(?<![\w'-])" + re.escape(c).replace(r"\-", r"[\s_-]?") + r"(?![\w-])", re.IGNORECASE)


_CLOCK_RX = re.compile(r"\b(\d{1,2}) o'clock\b")


def _other_class(labels: list[str], rng: np.random.Generator, confusable: bool) -> str:
    defects = [c for c in labels if c != NONE]
    pool = [c for d in defects for c in confusable_with(d) if c not in defects] if confusable else []
    if not pool:
        near = {c for d in defects for c in confusable_with(d)}
        pool = [c for c in taxonomy.patterns() if c not in defects and c not in near] or ["Scratch"]
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
    for c in taxonomy.patterns():
        out = _class_rx(c).sub(c.lower().replace("-", " "), out)
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
            if _class_rx(d).search(out):
                out, done = _class_rx(d).sub(new, out), True
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


def _checked_rows(df: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    missing = [c for c in POOL_COLUMNS if c not in df.columns]
    if missing:
        raise WaferSageError(source, "pool rows miss columns", ", ".join(missing))
    df = df[list(POOL_COLUMNS)]
    bad = df[["item_id", "pair_id", "wafer_id", "question", "answer"]].isna().any(axis=1)
    if bad.any():
        raise WaferSageError(source, "pool row with an empty key or answer", row=int(np.flatnonzero(bad)[0]))
    if df["item_id"].duplicated().any():
        raise WaferSageError(
            source, "duplicate item_id", str(df.loc[df["item_id"].duplicated(), "item_id"].iloc[0])
        )
    return df


def absorb(outputs: str | Path, folder: str | Path) -> tuple[Path, bool]:
    """Copy model outputs (``evaluate``'s ``model_outputs.parquet``) into ``folder`` as
    ``model_outputs-<md5>.parquet``; returns (path, whether it was new). Same content, same file."""
    import hashlib

    src = Path(outputs)
    df = read_parquet(src, "model outputs", "run `dvc repro evaluate` first")
    df = _checked_rows(df, src)
    if df.empty:
        raise WaferSageError(src, "no model outputs to absorb", "evaluate.pool_pairs is 0?")
    digest = hashlib.md5(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:12]
    dst = Path(folder) / f"model_outputs-{digest}.parquet"
    if dst.exists():
        return dst, False
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        df.to_parquet(tmp, index=False)
    return dst, True


def read_absorbed(
    folder: str | Path | None, pair_ids: set[str], wafer_ids: set[str]
) -> tuple[pd.DataFrame, int]:
    """The absorbed model outputs in ``folder`` (every ``*.parquet``, name order) whose pair and
    wafer exist in this pipeline's val split and rubrics, first copy of each item kept; and the
    number of stale rows left out (from an earlier dataset)."""
    empty = pd.DataFrame(columns=list(POOL_COLUMNS))
    if folder is None or not Path(folder).is_dir():
        return empty, 0
    frames = []
    for f in sorted(Path(folder).glob("*.parquet")):
        frames.append(_checked_rows(read_parquet(f, "absorbed model outputs"), f))
    if not frames:
        return empty, 0
    df = pd.concat(frames, ignore_index=True).drop_duplicates("item_id")
    fresh = df["pair_id"].astype(str).isin(pair_ids) & df["wafer_id"].astype(str).isin(wafer_ids)
    return df[fresh].reset_index(drop=True), int((~fresh).sum())
