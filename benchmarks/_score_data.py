"""Shared by the reward benchmarks: rubric records and VQA pairs for synthetic wafers, built with the
pipeline's own modules (attributes -> rubric -> QA pairs), so no pipeline run is needed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from wafersage.attributes import wafer_attributes
from wafersage.knowledge import load_knowledge_base
from wafersage.rawtable import decode_map
from wafersage.rubric import build_rubric
from wafersage.synthetic import SyntheticConfig, generate
from wafersage.vqa import qa_pairs


def records_and_pairs(n_wafers: int, seed: int) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """Rubric records by wafer id and their QA pairs."""
    kb = load_knowledge_base()
    recs = {}
    for r in generate(SyntheticConfig(n_wafers=n_wafers, seed=seed)).itertuples():
        labels = list(r.labels)
        attrs = wafer_attributes(decode_map(r.map, r.rows, r.cols), labels)
        rub = build_rubric(r.wafer_id, labels, attrs, kb, "benchmark wafer summary")
        recs[r.wafer_id] = {
            "wafer_id": r.wafer_id,
            "labels": labels,
            "attributes": attrs,
            "rubric": rub.model_dump(mode="json"),
            "rubric_id": rub.rubric_id(),
            "tag": "typical",
        }
    pairs = pd.DataFrame([p for rec in recs.values() for p in qa_pairs(rec)])
    return recs, pairs
