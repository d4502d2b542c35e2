"""ingest: any supported source -> the canonical raw table (``data/raw/wafers.parquet``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.tracking import file_md5, stage_run
from wafersage.wafers.loaders import SOURCES, DieTableOptions, Limits, load
from wafersage.wafers.rawtable import decode_map, write_raw
from wafersage.wafers.render import gallery
from wafersage.wafers.synthetic import SyntheticConfig, generate
from wafersage.wafers.taxonomy import MIXEDWM38_ORDER, primary_label, require


def build_table(
    source: str,
    paths: list[Path],
    synthetic: dict[str, Any],
    limits: Limits | None = None,
    die_table: DieTableOptions | None = None,
) -> pd.DataFrame:
    """The raw table for ``source``: generated, or loaded from each path (within ``limits``; a
    ``die-table`` as ``die_table`` says) and concatenated."""
    if source == "synthetic":
        cfg = SyntheticConfig.from_dict(synthetic)
        require([c for c, w in cfg.class_mix.items() if w > 0], "the synthetic generator")
        if cfg.mixed_fraction > 0:
            require(MIXEDWM38_ORDER, "the synthetic generator's mixed maps")
        return generate(cfg)
    if source.startswith("mixedwm38"):
        require(MIXEDWM38_ORDER, f"source {source}")
    if source not in SOURCES:
        raise WaferSageError("params.yaml", "unknown ingest source", f"{source!r}; choose from {SOURCES}")
    if not paths:
        raise WaferSageError("params.yaml", "ingest source needs a path", source)
    if source == "die-table" and len(paths) > 1 and die_table and die_table.labels_file:
        # each path is loaded alone, and a labels file must name only wafers of its table
        raise WaferSageError(
            "params.yaml",
            "ingest.die_table.labels_file needs a single path",
            "put the die tables in one folder",
        )
    tables = [load(source, p, limits, die_table) for p in paths]
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


def class_counts(df: pd.DataFrame) -> dict[str, int]:
    """Wafers per primary label (``+``-joined for mixed maps, ``unlabelled`` for none)."""
    keys = df["labels"].map(lambda v: primary_label(list(v)) or "unlabelled")
    return {str(k): int(v) for k, v in keys.value_counts().sort_index().items()}


def sample_gallery(df: pd.DataFrame, per_class: int = 2, seed: int = 0):
    """A gallery image of a few maps per primary label."""
    keys = df["labels"].map(lambda v: primary_label(list(v)) or "unlabelled")
    rng = np.random.default_rng(seed)
    rows = []
    for key in sorted(keys.unique()):
        idx = np.flatnonzero((keys == key).to_numpy())
        rows.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    rows = rows[:48]
    maps = [decode_map(df["map"].iat[i], df["rows"].iat[i], df["cols"].iat[i]) for i in rows]
    return gallery(maps, [keys.iat[i] for i in rows])


def run(
    params: dict[str, Any],
    out: Path,
    metrics: Path,
    source: str | None = None,
    paths: list[Path] | None = None,
) -> pd.DataFrame:
    """Build the raw table, write it and its metrics atomically, and track the run."""
    params = validated("ingest", params)
    source = source or params["source"]
    if paths is None:
        raw = params["path"] or []
        paths = [Path(p) for p in ([raw] if isinstance(raw, str) else raw)]
    limits = Limits.from_params(params)
    die_table = DieTableOptions.from_params(params["die_table"])
    df = build_table(source, paths, params["synthetic"], limits, die_table)
    with stage_run("ingest", {**params, "source": source, "path": [str(p) for p in paths]}) as mlflow:
        counts = class_counts(df)
        summary = {
            "wafers": len(df),
            "labelled": int((df["labels"].map(len) > 0).sum()),
            "mixed": int((df["labels"].map(len) > 1).sum()),
            "lots": int(df["lot_id"].nunique()),
            "classes": counts,
        }
        with atomic_outputs((out, False), (metrics, False)) as (tmp_raw, tmp_metrics):
            write_raw(df, tmp_raw)
            tmp_metrics.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics(
            {"wafers": summary["wafers"], "labelled": summary["labelled"], "mixed": summary["mixed"]}
        )
        mlflow.log_metrics({f"class_count.{k.replace('+', '/')}": v for k, v in counts.items()})
        mlflow.set_tag("data.raw.md5", file_md5(out))
        mlflow.log_image(sample_gallery(df), "gallery.png")
    return df
