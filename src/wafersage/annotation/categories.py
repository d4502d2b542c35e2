"""The VQA question categories (the ``category`` column of ``data/vqa/*.parquet``)."""

from __future__ import annotations

#: The category whose answers name the defect type (scored with the answer parser).
TYPE_CATEGORY = "type"
CATEGORIES: tuple[str, ...] = (TYPE_CATEGORY, "spatial", "morphology", "root_cause", "consistency")
