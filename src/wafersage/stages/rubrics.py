"""rubrics: per described wafer, the rubric JSON (validated by :class:`wafersage.annotation.rubric.Rubric`),
with its root causes from the knowledge base; written as JSON lines with the attributes and
descriptions it was built from."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import SCHEMA_VERSION, build_rubric
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_jsonl
from wafersage.tracking import stage_run


def run(params: dict[str, Any], descriptions: Path, out: Path, metrics: Path) -> dict[str, Any]:
    """Build and validate every rubric; write ``out`` and ``metrics`` atomically."""
    params = validated("rubrics", params)
    kb = load_knowledge_base(params["knowledge_base"])
    summary_variant = params["summary_variant"]
    recs = read_jsonl(descriptions)
    counts: Counter[str] = Counter()
    lines = []
    with stage_run("rubrics", params, inputs={"descriptions": descriptions}) as mlflow:
        for i, rec in enumerate(recs):
            labels = rec["labels"]
            if any(c in kb.generic for c in labels):  # a generic root cause stands in
                counts["kb_missing"] += 1
            try:
                rubric = build_rubric(
                    rec["wafer_id"], labels, rec["attributes"], kb, rec["descriptions"][summary_variant]
                )
            except (ValueError, KeyError) as exc:
                raise WaferSageError(
                    descriptions, "rubric does not validate", str(exc).splitlines()[0], row=i
                ) from None
            for dim in ("defect_types", "spatial", "morphology", "root_cause"):
                d = getattr(rubric, dim)
                counts[f"must_hit.{dim}"] += len(d.must_hit)
                counts[f"must_avoid.{dim}"] += len(d.must_avoid)
            rec = {**rec, "rubric_id": rubric.rubric_id(), "rubric": rubric.model_dump(mode="json")}
            lines.append(json.dumps(rec, sort_keys=True))
        n = max(len(lines), 1)
        summary: dict[str, Any] = {
            "wafers": len(lines),
            "schema_version": SCHEMA_VERSION,
            "kb_missing": counts.get("kb_missing", 0),
            "knowledge_base.generic_classes": len(kb.generic),
            **{f"mean_{k}": round(v / n, 3) for k, v in sorted(counts.items()) if k.startswith("must_")},
        }
        with atomic_outputs((out, False), (metrics, False)) as (tmp, tmp_metrics):
            tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
            tmp_metrics.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics({k.replace(".", "/"): float(v) for k, v in summary.items()})
        if lines:
            mlflow.log_dict(json.loads(lines[0])["rubric"], "sample_rubric.json")
    return summary
