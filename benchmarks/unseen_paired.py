"""Held-out phrasings, paired across two runs: one workspace's sampled test items asked in held-out
phrasings (the evaluate stage's ``unseen_phrasing`` sample), with that workspace's reference
answers, rubrics and reward, answered by the model of each run, and each model's answers to the
same items in their seen wording. Per model: rule score and type macro-F1, held out and seen, with
intervals; then A minus B on the held-out phrasings and on the seen wording, paired (the same
bootstrap resamples of the same items).

    .venv/bin/python benchmarks/unseen_paired.py --items-from B --a A/models/gspo --b B/models/gspo \\
        [--n 1000] [--n-boot 1000] [--json out.json]

``--items-from`` is a workspace after ``dvc repro`` (``data/vqa``, ``data/rubrics``,
``models/reward``, ``params.yaml``): its evaluate params (the profile's included) set the sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.annotation.rubric import read_records
from wafersage.evaluation import stats, unseen_phrasing
from wafersage.evaluation.answer_scores import answer_scores
from wafersage.params import load_section
from wafersage.registry.promotion import item_metric
from wafersage.score.config import load as load_reward
from wafersage.stages.evaluate import generate, predictor, test_items

METRICS = unseen_phrasing.METRICS


def scored(folder: Path, items: pd.DataFrame, records: dict, cfg: Any, p: dict) -> dict[str, pd.DataFrame]:
    """The model's scored answers to ``items`` held out (``unseen``) and in their seen wording."""
    pred = predictor(folder, p)
    seen = items.assign(question=items["seen_question"])
    return {
        name: answer_scores(df, generate(pred, df, p, f"{name} {folder}")[0], records, cfg)
        for name, df in (("unseen", items), ("seen", seen))
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items-from", type=Path, required=True)
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--n", type=int, help="items (default: the workspace's evaluate.unseen_pairs)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    ws = args.items_from
    p = load_section("evaluate", ws / "params.yaml")
    records = read_records(ws / "data/rubrics/rubrics.jsonl")
    items = unseen_phrasing.unseen_items(
        test_items(ws / "data/vqa", records, p), args.n or int(p["unseen_pairs"]), int(p["seed"])
    )
    cfg = load_reward(ws / "models/reward/reward_config.json")
    runs = {side: scored(folder, items, records, cfg, p) for side, folder in (("a", args.a), ("b", args.b))}
    n, boot = len(items), (args.n_boot, args.seed)
    out: dict[str, Any] = {
        "n": n,
        "n_type": int(items["category"].eq("type").sum()),
        "models": {"a": str(args.a), "b": str(args.b)},
    }
    for side, got in runs.items():
        out[side] = {
            f"{wording}_{m}": stats.rounded(stats.ci(item_metric(rows, m), n, *boot))
            for wording, rows in got.items()
            for m in METRICS
        }
    a, b = runs["a"], runs["b"]
    out["a_minus_b"] = {
        f"{w}_{m}": stats.rounded(stats.paired_diff(item_metric(a[w], m), item_metric(b[w], m), n, *boot))
        for w in ("unseen", "seen")
        for m in METRICS
    }
    out["by_kind_rule_score"] = {
        kind: {side: round(float(runs[side]["unseen"].loc[idx, "rule_score"].mean()), 4) for side in runs}
        | {"n": len(idx)}
        for kind, idx in items.groupby("kind").groups.items()
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
