"""validate_vqa: the Great Expectations gate on the VQA tables; a failure stops the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.annotation.phrasing import mentions_class
from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError, read_jsonl, read_parquet
from wafersage.gates import run_gate
from wafersage.tracking import stage_run
from wafersage.wafers.splits import SPLITS


def read_splits(vqa_dir: Path) -> pd.DataFrame:
    """The three split tables concatenated (without the image bytes)."""
    parts = []
    for s in SPLITS:
        path = Path(vqa_dir) / f"{s}.parquet"
        df = read_parquet(path, "VQA split")
        df["image_bytes"] = df["image"].map(
            lambda v: len(v["bytes"]) if isinstance(v, dict) and v.get("bytes") else 0
        )
        parts.append(df.drop(columns=["image"]).assign(file_split=s))
    return pd.concat(parts, ignore_index=True)


def validation_frame(df: pd.DataFrame, rubric_ids: set[str]) -> pd.DataFrame:
    """The columns the VQA suite checks (one row a QA pair)."""
    splits_per_wafer = df.groupby("wafer_id")["split"].transform("nunique")
    lots = df["lot_id"].fillna("wafer:" + df["wafer_id"])
    splits_per_lot = df.groupby(lots)["split"].transform("nunique")
    return pd.DataFrame(
        {
            "pair_id": df["pair_id"],
            "question": df["question"],
            "answer": df["answer"],
            "question_len": df["question"].str.len(),
            "answer_len": df["answer"].str.len(),
            "category": df["category"],
            "difficulty": df["difficulty"].astype("int64"),
            "split_matches_file": df["split"] == df["file_split"],
            "split_category": df["file_split"] + ":" + df["category"],
            "split_difficulty": df["file_split"] + ":" + df["difficulty"].astype(str),
            "splits_per_wafer": splits_per_wafer.astype("int64"),
            "splits_per_lot": splits_per_lot.astype("int64"),
            "rubric_resolves": df["rubric_id"].isin(rubric_ids),
            "question_names_class": [
                mentions_class(q, list(v)) for q, v in zip(df["question"], df["labels"], strict=True)
            ],
            "image_bytes": df["image_bytes"].astype("int64"),
        }
    )


def run(
    params: dict[str, Any], vqa_dir: Path, rubrics: Path, suite: Path, report: Path, docs: Path
) -> dict[str, Any]:
    """Validate the VQA tables; on failure raise one line naming each failed expectation."""
    df = read_splits(vqa_dir)
    ids = {r["rubric_id"] for r in read_jsonl(rubrics)}
    frame = validation_frame(df, ids)
    with stage_run(
        "validate_vqa", params, inputs={"vqa": vqa_dir, "rubrics": rubrics, "suite": suite}
    ) as mlflow:
        result = run_gate("vqa_pairs", frame, suite, docs)
        mlflow.log_metrics(
            {"gate_success": float(result.success), "expectations_failed": len(result.failures)}
        )
        if not result.success:
            raise WaferSageError(
                vqa_dir,
                "VQA data gate failed",
                f"{'; '.join(result.failures)}; data docs: {result.docs_index}",
            )
        summary = {
            "success": True,
            "pairs": len(df),
            "expectations": result.evaluated,
            **{f"pairs.{s}": int((df["file_split"] == s).sum()) for s in SPLITS},
        }
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
