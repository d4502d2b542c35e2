"""The per-answer columns every scored answer table shares: the aligned rule score against the
wafer's rubric and the type labels parsed from the answer beside the truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.score.rules import Item, score_items
from wafersage.wafers.taxonomy import primary_label


def answer_scores(
    df: pd.DataFrame, answers: list[str], records: dict[str, dict[str, Any]], cfg: Any
) -> pd.DataFrame:
    """``answer``, ``rule_score``, ``is_type``, ``truth`` and ``pred`` (primary labels) of each
    answer to the VQA rows ``df``; ``records``: the rubric records by wafer, ``cfg``: the reward."""
    labels = [list(v) for v in df["labels"]]
    items = [
        Item(q, a, r, records[w]["rubric"], lb)
        for q, a, r, w, lb in zip(
            df["question"].astype(str), answers, df["answer"].astype(str), df["wafer_id"], labels, strict=True
        )
    ]
    return pd.DataFrame(
        {
            "answer": answers,
            "rule_score": np.asarray(score_items(items, cfg), dtype=float),
            "is_type": (df["category"] == TYPE_CATEGORY).to_numpy(),
            "truth": [primary_label(lb) or "" for lb in labels],
            "pred": [primary_label(list(parse_labels(a))) or "" for a in answers],
        }
    )
