"""describe: per wafer, the analytic attributes of the map and its descriptions (four variants),
from the offline ``analytic`` backend or a VLM at an OpenAI-compatible endpoint (``openai``).

Labels come from the cleaning stage's table when ``labels_from: clean`` (verdicts honoured:
``relabel`` takes the suggested label, ``flag`` is excluded or kept per ``flagged``), else from the
raw table; a test-split wafer always keeps its truth (true labels where the table has them, else the
labels as given). Wafers that cannot be described truthfully are excluded and counted: unlabelled ones,
flagged ones, and ones labelled with a pattern but without a single fail die.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.descriptions import analytic_descriptions
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.vlm_client import VLMConfig, VLMDescriber
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.tracking import stage_run
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import decode_map, read_raw
from wafersage.wafers.render import DEFAULT_SIZE, png_bytes
from wafersage.wafers.splits import wafer_splits
from wafersage.wafers.taxonomy import NONE, canonical

EXCLUDE_REASONS = ("unlabelled", "flagged", "no_fail_dies_with_pattern_label", "unknown_label")


def _as_labels(value: Any) -> list[str] | None:
    """A clean-table label cell (list, or a ``+``-joined key) as taxonomy names; None if absent
    or the pooled key ``mixed``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    items = value.split("+") if isinstance(value, str) else list(value)
    if not items or items == ["mixed"]:
        return None
    return sorted({canonical(v) for v in items}, key=taxonomy.class_index().__getitem__)


def read_clean(path: Path) -> pd.DataFrame:
    """The cleaning stage's table reduced to ``wafer_id, clean_labels, verdict, tag, suggested``
    (column spellings ``labels``/``kept_labels``/``final_labels``, ``tag``/``sample_tag``,
    ``suggested``/``suggested_label`` are accepted)."""
    df = read_parquet(path, "clean labels", "set describe.labels_from: raw to skip cleaning")

    def col(*names: str) -> pd.Series:
        for n in names:
            if n in df:
                return df[n]
        return pd.Series([None] * len(df), index=df.index, dtype=object)

    if "wafer_id" not in df or "verdict" not in df:
        raise WaferSageError(path, "missing columns", "wafer_id, verdict")
    bad = ~df["verdict"].isin(["keep", "flag", "relabel"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise WaferSageError(path, "unknown verdict", repr(df["verdict"].iloc[i]), row=i)
    try:
        kept = col("labels", "kept_labels", "final_labels", "final_key").map(_as_labels)
        sugg = col("suggested", "suggested_label", "suggested_labels").map(_as_labels)
    except KeyError as exc:
        raise WaferSageError(path, "unknown label", str(exc)) from None
    return pd.DataFrame(
        {
            "wafer_id": df["wafer_id"].astype(str),
            "clean_labels": kept,
            "verdict": df["verdict"].astype(str),
            "tag": col("tag", "sample_tag"),
            "suggested": sugg,
            "corrected": col("corrected").fillna(False).astype(bool),
        }
    )


def test_truth(raw: pd.DataFrame) -> list[list[str]]:
    """The labels a test wafer is graded against: the generator's ``true_labels`` where the raw
    table has them, else the labels as given (never a model's)."""
    given = raw["labels"].map(list).tolist()
    if "true_labels" not in raw:
        return given
    return [
        list(t) if t is not None and not (isinstance(t, float) and np.isnan(t)) and len(t) else g
        for t, g in zip(raw["true_labels"], given, strict=True)
    ]


def resolve_labels(
    raw: pd.DataFrame, clean: pd.DataFrame | None, flagged: str, split: np.ndarray | None = None
) -> pd.DataFrame:
    """Per wafer: the labels to describe, verdict, tag, and an exclusion reason (or None). Test
    wafers (``split``) keep their truth (:func:`test_truth`) unless an engineer corrected them: the
    cleaner never relabels or drops them."""
    out = pd.DataFrame({"wafer_id": raw["wafer_id"].astype(str)})
    out["labels"] = raw["labels"].map(list)
    out["verdict"], out["tag"] = "keep", None
    fixed = np.zeros(len(out), dtype=bool)
    if clean is not None:
        c = clean.set_index("wafer_id").reindex(out["wafer_id"])
        missing = c["verdict"].isna().to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise WaferSageError(
                "clean labels", "wafer missing from the clean table", out["wafer_id"].iat[i], row=i
            )
        out["verdict"] = c["verdict"].to_numpy()
        fixed = c["corrected"].fillna(False).to_numpy(dtype=bool)
        out["tag"] = c["tag"].to_numpy()
        relabel = (out["verdict"] == "relabel").to_numpy()
        chosen = np.where(relabel, c["suggested"].to_numpy(), c["clean_labels"].to_numpy())
        out["labels"] = [lab if new is None else new for lab, new in zip(out["labels"], chosen, strict=True)]
    if split is not None:  # a test wafer keeps its truth, or what an engineer corrected it to
        test = (split == "test") & ~fixed
        truth = test_truth(raw)
        labels = zip(out["labels"], truth, test, strict=True)
        out["labels"] = [t if is_test else lab for lab, t, is_test in labels]
        out.loc[test, "verdict"] = "keep"
    reason: list[str | None] = []
    for labels, verdict in zip(out["labels"], out["verdict"], strict=True):
        if verdict == "flag" and flagged == "exclude":
            reason.append("flagged")
        elif len(labels) == 0:
            reason.append("unlabelled")
        else:
            reason.append(None)
    out["exclude"] = reason
    return out


def label_source(split: str, has_truth: bool, cleaned: bool) -> str:
    """Where a described wafer's labels come from: ``truth`` (a test wafer of a table that has true
    labels), ``given`` (any other test wafer), ``clean`` or ``raw``."""
    if split == "test":
        return "truth" if has_truth else "given"
    return "clean" if cleaned else "raw"


def fallback_tag(labels: list[str], attrs: dict[str, Any]) -> str:
    """Typical/hard without the cleaning stage: hard when mixed, or when the geometry alone
    names another pattern than the label."""
    if len(labels) > 1:
        return "hard"
    return "typical" if attrs["inferred_pattern"] == labels[0] else "hard"


def run(
    params: dict[str, Any],
    raw: Path,
    clean: Path | None,
    out: Path,
    metrics: Path,
    render_size: int = DEFAULT_SIZE,
    splits: Path | None = None,
) -> dict[str, Any]:
    """Describe every usable wafer; write ``out`` (JSON lines) and ``metrics`` atomically."""
    params = validated("describe", params)
    backend, flagged, labels_from = params["backend"], params["flagged"], params["labels_from"]
    seed = int(params["seed"])
    kb = load_knowledge_base(params["knowledge_base"])
    df = read_raw(raw)
    clean_df = read_clean(Path(clean)) if labels_from == "clean" and clean is not None else None
    split = wafer_splits(df, splits)
    plan = resolve_labels(df, clean_df, flagged, split)

    describer = None
    if backend == "openai":
        describer = VLMDescriber(VLMConfig.from_dict(params["openai"]))

    counts: Counter[str] = Counter()
    records = []
    inputs = {"raw": raw} | ({"clean": clean} if clean_df is not None else {})
    with stage_run("describe", params, inputs=inputs) as mlflow:
        for i in range(len(df)):
            reason = plan["exclude"].iat[i]
            if isinstance(reason, str):
                counts[f"excluded.{reason}"] += 1
                continue
            labels = plan["labels"].iat[i]
            m = decode_map(df["map"].iat[i], df["rows"].iat[i], df["cols"].iat[i])
            attrs = wafer_attributes(m, labels)
            if attrs["n_fail"] == 0 and labels != [NONE]:
                counts["excluded.no_fail_dies_with_pattern_label"] += 1
                continue
            wid = str(df["wafer_id"].iat[i])
            desc = analytic_descriptions(wid, labels, attrs, kb, seed)
            source = {v: "analytic" for v in desc}
            if describer is not None:
                png = png_bytes(m, render_size)
                context = {"attributes": json.dumps(_brief(attrs)), "labels": " + ".join(labels)}
                for variant in describer.cfg.variants:
                    text = describer.describe(png, variant, context)
                    if text is None:
                        counts["fallback_to_analytic"] += 1
                    else:
                        desc[variant], source[variant] = text, "openai"
            counts[f"verdict.{plan['verdict'].iat[i]}"] += 1
            tag = plan["tag"].iat[i]
            tag = tag if tag in ("typical", "hard") else fallback_tag(labels, attrs)
            counts[f"tag.{tag}"] += 1
            counts["no_fail_dies"] += int(attrs["n_fail"] == 0)
            records.append(
                {
                    "wafer_id": wid,
                    "lot_id": None if pd.isna(df["lot_id"].iat[i]) else str(df["lot_id"].iat[i]),
                    "labels": labels,
                    "raw_labels": list(df["labels"].iat[i]),
                    "verdict": plan["verdict"].iat[i],
                    "tag": tag,
                    "label_source": label_source(split[i], "true_labels" in df, clean_df is not None),
                    "attributes": attrs,
                    "descriptions": desc,
                    "description_source": source,
                }
            )
        if not records:
            raise WaferSageError(raw, "no wafer could be described", json.dumps(dict(counts)))
        summary = {
            "wafers_in": len(df),
            "wafers": len(records),
            "backend": backend,
            "label_source": "clean" if clean_df is not None else "raw",
            "knowledge_base.generic_classes": len(kb.generic),
            **{f"excluded.{r}": counts.get(f"excluded.{r}", 0) for r in EXCLUDE_REASONS},
            **{k: v for k, v in sorted(counts.items()) if not k.startswith("excluded.")},
        }
        if describer is not None:
            for k in ("requests", "cache_hits", "retries", "timeouts", "malformed", "failed", "http_errors"):
                summary[f"openai.{k}"] = describer.counts.get(k, 0)
            summary["openai.connection_errors"] = describer.counts.get("connection_errors", 0)
        with atomic_outputs((out, False), (metrics, False)) as (tmp, tmp_metrics):
            tmp.write_text("".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records))
            tmp_metrics.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics(
            {k.replace(".", "/"): float(v) for k, v in summary.items() if isinstance(v, int | float)}
        )
        mlflow.log_dict({r["wafer_id"]: r["descriptions"] for r in records[:20]}, "sample_descriptions.json")
    return summary


def _brief(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes a VLM prompt carries (positions and sizes, no labels)."""
    keep = ("zone", "clock", "distribution", "area_fraction", "density", "coverage_deg", "elongation")
    return {
        "yield": attrs["yield"],
        "components": attrs["n_components"],
        "masses": [{k: p.get(k) for k in keep} for p in attrs["patterns"]],
    }
