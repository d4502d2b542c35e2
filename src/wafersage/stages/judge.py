"""judge: build the calibration pool from val QA pairs (plus the model outputs absorbed into
``calibration/``) and score every answer with the judge."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import read_records
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.score.calibration import build_pool, read_absorbed
from wafersage.score.judges import JudgeItem, make_judge
from wafersage.tracking import stage_run

VQA_COLUMNS = ("pair_id", "wafer_id", "rubric_id", "category", "question", "answer")


def read_val(vqa: Path) -> pd.DataFrame:
    """The val split of the VQA tables (``vqa`` a folder or one parquet file)."""
    path = vqa / "val.parquet" if vqa.is_dir() else vqa
    df = read_parquet(path, "VQA val split")
    missing = [c for c in VQA_COLUMNS if c not in df.columns]
    if missing:
        raise WaferSageError(path, "VQA table misses columns", ", ".join(missing))
    return df


def _png(image: Any) -> bytes | None:
    if isinstance(image, dict):
        return image.get("bytes")
    return image if isinstance(image, bytes) else None


def judge_items(
    pool: pd.DataFrame, records: dict[str, dict[str, Any]], images: dict[str, bytes]
) -> list[JudgeItem]:
    """One :class:`JudgeItem` a pool row."""
    out = []
    for r in pool.itertuples():
        rec = records[r.wafer_id]
        out.append(
            JudgeItem(
                r.question,
                r.answer,
                r.reference,
                rec["rubric"],
                rec["labels"],
                rec["attributes"],
                images.get(r.pair_id),
            )
        )
    return out


def run(
    params: dict[str, Any],
    vqa: Path,
    rubrics: Path,
    pool_out: Path,
    scores_out: Path,
    metrics: Path,
    absorbed: Path | None = None,
) -> dict[str, Any]:
    """Write the pool (synthetic variants plus the model outputs absorbed into ``absorbed``) and the
    judge scores (``item_id, judge, score, rationale``) atomically."""
    params = validated("judge", params)
    records = read_records(rubrics)
    val = read_val(vqa)
    unknown = sorted(set(val["wafer_id"]) - set(records))
    if unknown:
        raise WaferSageError(vqa, "VQA wafer has no rubric", unknown[0])
    kb = load_knowledge_base(params["knowledge_base"])
    extra, n_stale = read_absorbed(absorbed, set(val["pair_id"].astype(str)), set(records))
    with stage_run("judge", params, inputs={"vqa": vqa, "rubrics": rubrics}) as mlflow:
        pool = build_pool(val, records, kb, int(params["n_pairs"]), int(params["seed"]))
        pool = pd.concat([pool, extra[~extra["item_id"].isin(pool["item_id"])]], ignore_index=True)
        images = {}
        if "image" in val.columns and params["judge"] != "reference":
            images = {p: _png(i) for p, i in zip(val["pair_id"], val["image"], strict=True)}
        judge = make_judge(params, params["cache_dir"])
        verdicts = judge.judge(judge_items(pool, records, images))
        scores = pd.DataFrame(
            {
                "item_id": pool["item_id"],
                "judge": judge.name,
                "score": [v.score for v in verdicts],
                "rationale": [v.rationale for v in verdicts],
            }
        )
        n_nan = int(sum(math.isnan(v.score) for v in verdicts))
        summary: dict[str, Any] = {
            "items": len(pool),
            "pairs": int(pool["pair_id"].nunique()),
            "absorbed_items": len(extra),
            "absorbed_stale": n_stale,
            "unscored": n_nan,
            "mean_score": round(float(scores["score"].mean()), 4),
            **{
                f"mean_score.{k}": round(float(v), 4)
                for k, v in scores.groupby(pool["variant"])["score"].mean().items()
            },
            **{f"judge_stats.{k}": int(v) for k, v in sorted(getattr(judge, "stats", {}).items())},
        }
        if len(pool) == 0:
            raise WaferSageError(vqa, "calibration pool is empty")
        with atomic_outputs((pool_out, False), (scores_out, False), (metrics, False)) as (
            t_pool,
            t_scores,
            t_m,
        ):
            pool.to_parquet(t_pool, index=False)
            scores.to_parquet(t_scores, index=False)
            t_m.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics({k.replace(".", "/"): float(v) for k, v in summary.items()})
    return summary
