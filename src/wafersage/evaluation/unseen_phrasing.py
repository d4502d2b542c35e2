"""Questions worded in ways the models never saw in training: the evaluate stage's sampled test
pairs asked again with a held-out phrasing of the same question kind
(``resources/unseen_questions.yaml``, never a synthesis template), answered by every model and
scored as the seen pairs are (the rule score; macro-F1 of the parsed defect type on type
questions), beside the seen figures on the same pairs, their ratio and the paired difference.

``metrics.json`` gets ``unseen_phrasing.{n, n_type, phrasings}`` and, per model,
``unseen_phrasing.<model>.{type_macro_f1, rule_score, ci, seen, ratio, diff}``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.annotation.phrasing import mentions_class
from wafersage.annotation.vqa import CLAIM_FIELDS, QUESTION_KINDS, parse_question
from wafersage.errors import WaferSageError
from wafersage.evaluation import stats
from wafersage.evaluation.answer_scores import answer_scores
from wafersage.registry.promotion import item_metric
from wafersage.wafers.taxonomy import NONE

RESOURCE = "resources/unseen_questions.yaml"
METRICS: tuple[str, ...] = ("type_macro_f1", "rule_score")
_FIELD = re.compile(r"\{(\w*)\}")


def load_unseen(path: str | Path | None = None) -> dict[str, list[str]]:
    """Held-out phrasings by question kind (the packaged file unless ``path``); a claim phrasing
    must hold a claim placeholder, any other phrasing none."""
    import yaml

    where = str(path) if path else f"wafersage/{RESOURCE}"
    text = Path(path).read_text() if path else resources.files("wafersage").joinpath(RESOURCE).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WaferSageError(where, "not valid YAML", str(e).splitlines()[0]) from None
    if not isinstance(data, dict) or not data:
        raise WaferSageError(where, "unseen phrasings must map question kinds to lists")
    out: dict[str, list[str]] = {}
    for kind, qs in data.items():
        if kind not in QUESTION_KINDS:
            raise WaferSageError(where, "unknown question kind", str(kind))
        if not isinstance(qs, list) or not qs or not all(isinstance(q, str) and q.strip() for q in qs):
            raise WaferSageError(where, "phrasings must be a non-empty list of strings", str(kind))
        for q in qs:
            fields = set(_FIELD.findall(q))
            if (kind == "claim") != bool(fields) or not fields <= set(CLAIM_FIELDS):
                raise WaferSageError(where, "bad placeholder use in a phrasing", q)
        out[str(kind)] = [q.strip() for q in qs]
    return out


def unseen_items(
    df: pd.DataFrame, n: int, seed: int, unseen: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """Up to ``n`` rows of ``df`` (seeded sample, table order) whose question kind has held-out
    phrasings, each asked with one of them (seeded; never one naming a class the wafer carries);
    ``seen_question`` and ``kind`` added."""
    unseen = load_unseen() if unseen is None else unseen
    parsed = [parse_question(str(q)) for q in df["question"]]
    idx = [i for i, got in enumerate(parsed) if got is not None and got[0] in unseen]
    rng = np.random.default_rng(seed)
    if len(idx) > n:
        idx = sorted(int(i) for i in rng.choice(idx, size=max(int(n), 0), replace=False))
    rows, questions, kinds = [], [], []
    for i in idx:
        kind, fields = parsed[i]  # type: ignore[misc]
        labels = [c for c in df["labels"].iloc[i] if c != NONE]
        options = [q.format(**fields) for q in unseen[kind]]
        options = [q for q in options if not mentions_class(q, labels)]
        if not options:
            continue
        rows.append(i)
        questions.append(options[int(rng.integers(len(options)))])
        kinds.append(kind)
    out = df.iloc[rows].reset_index(drop=True).copy()
    out["seen_question"] = out["question"]
    out["question"] = questions
    out["kind"] = kinds
    return out


def _point(rows: pd.DataFrame, metric: str) -> float | None:
    """``metric`` over ``rows`` (no resampling), rounded; ``None`` when undefined."""
    v = float(item_metric(rows, metric)(np.ones((1, len(rows))))[0]) if len(rows) else float("nan")
    return stats.rounded({"v": v})["v"]


def score_models(
    df: pd.DataFrame,
    answers_by_model: dict[str, list[str]],
    seen_items: pd.DataFrame,
    records: dict[str, dict[str, Any]],
    cfg: Any,
    p: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics (see the module docstring) and a per-kind breakdown of each model's answers to the
    unseen phrasings; ``seen_items``: the evaluate stage's items table (model, item_id, ...)."""
    n_boot, seed, conf = int(p["n_boot"]), int(p["seed"]), float(p["confidence"])
    metrics: dict[str, Any] = {
        "n": len(df),
        "n_type": int((df["category"] == TYPE_CATEGORY).sum()),
        "phrasings": int(df["question"].nunique()),
    }
    detail: dict[str, Any] = {}
    for model, answers in answers_by_model.items():
        rows = answer_scores(df, answers, records, cfg)
        rows.insert(0, "item_id", df["item_id"].to_numpy())
        rows.insert(1, "kind", df["kind"].to_numpy())
        seen = (
            seen_items[seen_items["model"] == model].set_index("item_id").loc[rows["item_id"]].reset_index()
        )
        out: dict[str, Any] = {"ci": {}, "seen": {}, "ratio": {}, "diff": {}}
        for m in METRICS:
            r = stats.rounded(stats.ci(item_metric(rows, m), len(rows), n_boot, seed, conf))
            out[m] = r["value"]
            out["ci"][m] = {"low": r["ci_low"], "high": r["ci_high"]}
            s = _point(seen, m)
            out["seen"][m] = s
            out["ratio"][m] = round(r["value"] / s, 4) if r["value"] is not None and s else None
            out["diff"][m] = stats.rounded(
                stats.paired_diff(item_metric(rows, m), item_metric(seen, m), len(rows), n_boot, seed, conf)
            )
        metrics[model] = out
        detail[model] = {
            str(k): {
                "n": len(g),
                "rule_score": round(float(g["rule_score"].mean()), 4),
                "seen_rule_score": round(float(seen.loc[g.index, "rule_score"].mean()), 4),
            }
            for k, g in rows.groupby("kind")
        }
    return metrics, detail
