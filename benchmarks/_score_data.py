"""Shared by the reward benchmarks: rubric records and VQA pairs for synthetic wafers, built with the
pipeline's own modules (attributes -> rubric -> QA pairs), so no pipeline run is needed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import rubric_record
from wafersage.annotation.vqa import qa_pairs
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import SyntheticConfig, generate


def records_and_pairs(n_wafers: int, seed: int) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """Rubric records by wafer id and their QA pairs."""
    kb = load_knowledge_base()
    recs = {}
    for r in generate(SyntheticConfig(n_wafers=n_wafers, seed=seed)).itertuples():
        labels = list(r.labels)
        attrs = wafer_attributes(decode_map(r.map, r.rows, r.cols), labels)
        recs[r.wafer_id] = rubric_record(r.wafer_id, labels, attrs, kb, "benchmark wafer summary")
    pairs = pd.DataFrame([p for rec in recs.values() for p in qa_pairs(rec)])
    return recs, pairs
