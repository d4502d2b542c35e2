"""validate_raw: the Great Expectations gate on the raw table; refuses bad data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError
from wafersage.gates import run_gate
from wafersage.tracking import file_md5, stage_run
from wafersage.wafers.rawtable import map_stats, read_raw
from wafersage.wafers.taxonomy import primary_label


def validation_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The columns the raw suite checks: ids, dims, die value range, fail fraction, label key."""
    stats = map_stats(df)
    return pd.DataFrame(
        {
            "wafer_id": df["wafer_id"],
            "rows": df["rows"].astype("int64"),
            "cols": df["cols"].astype("int64"),
            "map_bytes": df["map"].map(len).astype("int64"),
            "expected_bytes": (df["rows"].astype("int64") * df["cols"].astype("int64")),
            **{c: stats[c] for c in stats.columns},
            "label": df["labels"].map(lambda v: primary_label(list(v))),
            "single_label": df["labels"].map(lambda v: v[0] if len(v) == 1 else None),
        }
    )


def run(params: dict[str, Any], raw: Path, suite: Path, report: Path, docs: Path) -> dict[str, Any]:
    """Validate the raw table; on failure raise naming each failed expectation and its row count."""
    df = read_raw(raw)
    frame = validation_frame(df)
    with stage_run("validate_raw", params, inputs={"raw": raw, "suite": suite}) as mlflow:
        result = run_gate("raw_wafers", frame, suite, docs)
        mlflow.log_metrics(
            {"gate_success": float(result.success), "expectations_failed": len(result.failures)}
        )
        if result.docs_index and result.docs_index.exists():
            mlflow.log_artifacts(str(docs), "data_docs")
        if not result.success:
            raise WaferSageError(
                raw, "raw data gate failed", f"{'; '.join(result.failures)}; data docs: {result.docs_index}"
            )
        summary = {
            "success": True,
            "wafers": len(df),
            "expectations": result.evaluated,
            "raw_md5": file_md5(raw),
        }
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
