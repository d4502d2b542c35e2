"""split: every wafer of the raw table to train / val / test, once, by lot (:mod:`wafersage.wafers.splits`),
gated by Great Expectations; every later stage reads this table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.gates import run_gate
from wafersage.tracking import stage_run
from wafersage.wafers.rawtable import read_raw
from wafersage.wafers.splits import SPLITS, split_table
from wafersage.wafers.taxonomy import primary_label


def gate_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The columns the split suite checks (one row a wafer)."""
    groups = table["lot_id"].fillna("wafer:" + table["wafer_id"])
    per_lot = table.groupby(groups)["split"].transform("nunique").astype("int64")
    return table.assign(splits_per_lot=per_lot)


def summary(table: pd.DataFrame, labels: pd.Series) -> dict[str, Any]:
    """Wafers and lots per split, and wafers per primary label per split."""
    keys = labels.map(lambda v: primary_label(list(v)) or "unlabelled")
    out: dict[str, Any] = {"wafers": len(table)}
    for s in SPLITS:
        part = table["split"] == s
        out[s] = {
            "wafers": int(part.sum()),
            "lots": int(table.loc[part, "lot_id"].dropna().nunique()),
            "per_label": {k: int(n) for k, n in sorted(keys[part.to_numpy()].value_counts().items())},
        }
    return out


def run(params: dict[str, Any], raw: Path, out: Path, metrics: Path) -> dict[str, Any]:
    """Assign, gate and write the split table and its counts atomically."""
    p = validated("split", params)
    df = read_raw(raw, columns=["lot_id"]).reset_index(drop=True)
    ratios = {s: float(p[s]) for s in SPLITS}
    with stage_run("split", p, inputs={"raw": raw}) as mlflow:
        table = split_table(df, ratios, int(p["seed"]))
        gate = run_gate("wafer_splits", gate_frame(table), Path(p["suite"]), None)
        if gate.failures:
            raise WaferSageError(out, "split gate failed", "; ".join(gate.failures))
        m = summary(table, df["labels"])
        m["gate"] = {"success": True, "expectations": gate.evaluated}
        with atomic_outputs((out, False), (metrics, False)) as (t_out, t_metrics):
            table.to_parquet(t_out, index=False)
            t_metrics.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics({f"{s}_wafers": float(m[s]["wafers"]) for s in SPLITS})
    return m
