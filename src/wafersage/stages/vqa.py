"""vqa: rubric records -> QA pairs with rendered images, in the split stage's train/val/test,
written as ``data/vqa/{train,val,test}.parquet``; metrics in ``reports/vqa/metrics.json``.

The split was decided once over every wafer of the raw table (:mod:`wafersage.wafers.splits`), so a
cleaning verdict or a label correction that lets a wafer in or keeps it out moves no other wafer
between train, val and test."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wafersage.annotation.attributes import agreement_summary, truth_agreement
from wafersage.annotation.categories import CATEGORIES
from wafersage.annotation.vqa import frame, qa_pairs
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_jsonl
from wafersage.tracking import stage_run
from wafersage.wafers.rawtable import decode_map, read_raw
from wafersage.wafers.render import DEFAULT_SIZE, check_size, gallery, png_bytes
from wafersage.wafers.splits import SPLITS, wafer_splits

SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("wafer_id", pa.string()),
        ("lot_id", pa.string()),
        ("split", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("category", pa.string()),
        ("difficulty", pa.int8()),
        ("rubric_id", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("tag", pa.string()),
        ("claim_true", pa.bool_()),
    ]
)


def synthesize(records: list[dict[str, Any]], seed: int, composed_share: float) -> list[dict[str, Any]]:
    """All QA pairs of all rubric records."""
    pairs: list[dict[str, Any]] = []
    for rec in records:
        pairs.extend(qa_pairs(rec, seed, composed_share))
    return pairs


def attribute_accuracy(raw: pd.DataFrame, records: list[dict[str, Any]]) -> dict[str, float]:
    """Agreement of the analytic attributes with the generator's truth (synthetic rows only)."""
    if "pattern_params" not in raw:
        return {}
    pp = raw.set_index("wafer_id")["pattern_params"]
    rows = [(r["wafer_id"], pp.get(r["wafer_id"]), r["attributes"]) for r in records]
    rows = [x for x in rows if isinstance(x[1], str) and x[1]]
    if not rows:
        return {}
    df = pd.DataFrame({"wafer_id": [x[0] for x in rows], "pattern_params": [x[1] for x in rows]})
    return {k: round(v, 4) for k, v in agreement_summary(truth_agreement(df, [x[2] for x in rows])).items()}


def run(
    params: dict[str, Any],
    rubrics: Path,
    raw: Path,
    out_dir: Path,
    metrics: Path,
    render_size: int = DEFAULT_SIZE,
    splits: Path | None = None,
) -> dict[str, Any]:
    """Synthesize the pairs, put each wafer's in its split (the split stage's table), and write the
    VQA tables and metrics atomically."""
    params = validated("vqa", params)
    seed = int(params["seed"])
    check_size(render_size)
    records = read_jsonl(rubrics)
    if not records:
        raise WaferSageError(rubrics, "no rubric records")
    df = read_raw(raw).set_index("wafer_id", drop=False)
    missing = [r["wafer_id"] for r in records if r["wafer_id"] not in df.index]
    if missing:
        raise WaferSageError(rubrics, "wafer not in the raw table", missing[0])
    inputs = {"rubrics": rubrics, "raw": raw, **({"splits": splits} if splits else {})}
    with stage_run("vqa", params, inputs=inputs) as mlflow:
        pairs = synthesize(records, seed, float(params["composed_share"]))
        split_of = dict(zip(df["wafer_id"].astype(str), wafer_splits(df, splits), strict=True))
        for p in pairs:
            p["split"] = split_of[p["wafer_id"]]

        cache: dict[str, bytes] = {}

        def image(wid: str) -> bytes:
            if wid not in cache:
                row = df.loc[wid]
                cache[wid] = png_bytes(decode_map(row["map"], row["rows"], row["cols"]), render_size)
            return cache[wid]

        table = frame(pairs, image)
        cats = Counter(table["category"])
        diffs = Counter(table["difficulty"].astype(int))
        summary: dict[str, Any] = {
            "pairs": len(table),
            "wafers": int(table["wafer_id"].nunique()),
            "pairs_per_category": {c: int(cats.get(c, 0)) for c in CATEGORIES},
            "pairs_per_difficulty": {str(d): int(diffs.get(d, 0)) for d in (1, 2, 3)},
        }
        acc = attribute_accuracy(df.reset_index(drop=True), records)
        if acc:
            summary["attribute_accuracy"] = acc
        out_dir = Path(out_dir)
        with atomic_outputs((out_dir, True), (metrics, False)) as (tmp, tmp_metrics):
            tmp.mkdir(parents=True, exist_ok=True)
            for s in SPLITS:
                part = table[table["split"] == s].reset_index(drop=True)
                pq.write_table(
                    pa.Table.from_pandas(part, schema=SCHEMA, preserve_index=False),
                    tmp / f"{s}.parquet",
                    compression="zstd",
                )
            tmp_metrics.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _log(mlflow, table, summary, df, records)
    return summary


def _log(mlflow: Any, table: pd.DataFrame, summary: dict[str, Any], raw: pd.DataFrame, records: list) -> None:
    flat = {"pairs": summary["pairs"], "wafers": summary["wafers"]}
    for key in ("pairs_per_category", "pairs_per_difficulty", "attribute_accuracy"):
        flat.update({f"{key}/{k}": v for k, v in summary.get(key, {}).items()})
    for (s, c), n in table.groupby(["split", "category"]).size().items():
        flat[f"split/{s}/{c}"] = int(n)
    for (s, d), n in table.groupby(["split", "difficulty"]).size().items():
        flat[f"split/{s}/difficulty_{d}"] = int(n)
    mlflow.log_metrics({k: float(v) for k, v in flat.items()})
    sample = table.groupby("category", sort=True).head(4)
    mlflow.log_table(
        data=sample[["wafer_id", "split", "category", "difficulty", "question", "answer"]].reset_index(
            drop=True
        ),
        artifact_file="sample_pairs.json",
    )
    ids = list(dict.fromkeys(sample["wafer_id"]))[:8]
    maps = [decode_map(raw.loc[w, "map"], raw.loc[w, "rows"], raw.loc[w, "cols"]) for w in ids]
    labels = {r["wafer_id"]: "+".join(r["labels"]) for r in records}
    mlflow.log_image(gallery(maps, [labels[w] for w in ids]), "examples.png")
