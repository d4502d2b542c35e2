"""VQA synthesis benchmark: attribute accuracy against the synthetic ground truth, throughput of
attributes -> rubric -> QA pairs at scale (pairs/s, peak RSS), and answer diversity per category.

    python benchmarks/vqa_synthesis.py --wafers 50000 --accuracy-wafers 3000

Prints markdown tables. Rendering the PNG images is timed separately (it is part of the vqa
stage, not of the synthesis itself). No MLflow, no files written.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import psutil

from wafersage.annotation.attributes import ZONES, agreement_summary, truth_agreement, wafer_attributes
from wafersage.annotation.categories import CATEGORIES
from wafersage.annotation.descriptions import analytic_descriptions
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import build_rubric
from wafersage.annotation.vqa import qa_pairs
from wafersage.stages.describe import fallback_tag
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import png_bytes
from wafersage.wafers.synthetic import SyntheticConfig, generate


def records(df: pd.DataFrame, labels_col: str = "labels") -> tuple[list[dict], list[dict]]:
    kb = load_knowledge_base()
    attrs, recs = [], []
    for wid, blob, r, c, labels in zip(
        df["wafer_id"], df["map"], df["rows"], df["cols"], df[labels_col], strict=True
    ):
        labels = list(labels)
        a = wafer_attributes(decode_map(blob, r, c), labels)
        attrs.append(a)
        desc = analytic_descriptions(wid, labels, a, kb)
        rub = build_rubric(wid, labels, a, kb, desc["full"])
        recs.append(
            {
                "wafer_id": wid,
                "lot_id": None,
                "labels": labels,
                "tag": fallback_tag(labels, a),
                "attributes": a,
                "rubric_id": rub.rubric_id(),
                "rubric": rub.model_dump(mode="json"),
            }
        )
    return attrs, recs


def accuracy_table(n: int) -> str:
    df = generate(SyntheticConfig(n_wafers=n, seed=2024, noise_rate=0.0))
    attrs = [
        wafer_attributes(decode_map(b, r, c), list(t))
        for b, r, c, t in zip(df["map"], df["rows"], df["cols"], df["true_labels"], strict=True)
    ]
    t = truth_agreement(df, attrs)
    lines = [
        f"Attribute agreement with the generator's truth ({n} fresh wafers, seed 2024, labels = truth):",
        "",
    ]
    lines += [
        "| attribute | all patterns | patterns >= 10 dies | single-pattern wafers | mixed wafers |",
        "|---|---|---|---|---|",
    ]
    allp, vis = agreement_summary(t), agreement_summary(t, min_dies=10)
    single, mixed = (
        agreement_summary(t[~t["mixed"].astype(bool)]),
        agreement_summary(t[t["mixed"].astype(bool)]),
    )
    for k in ("zone", "clock_position", "distribution", "pattern_type"):
        lines.append(
            f"| {k} | {allp.get(k, float('nan')):.3f} | {vis.get(k, float('nan')):.3f} | "
            f"{single.get(k, float('nan')):.3f} | {mixed.get(k, float('nan')):.3f} |"
        )
    pat = t[t["class"] != "none"]
    lines += [
        "",
        "Per class (all patterns): zone / clock agreement and count",
        "",
        "| class | n | zone | clock | n >= 10 dies |",
        "|---|---|---|---|---|",
    ]
    for cls, g in pat.groupby("class"):
        z = np.mean([a == b for a, b in zip(g["zone_est"], g["zone_true"], strict=True)])
        c = np.mean([a == b for a, b in zip(g["clock_est"], g["clock_true"], strict=True)])
        lines.append(f"| {cls} | {len(g)} | {z:.3f} | {c:.3f} | {int((g['n_true'] >= 10).sum())} |")
    conf = pd.crosstab(pat["zone_true"], pat["zone_est"].fillna("(none)"))
    conf = conf.reindex(index=[z for z in ZONES if z in conf.index])
    lines += ["", "Zone confusion (rows truth, columns estimate):", "", conf.to_markdown()]
    s = t[t["pattern_true"].notna()]
    lines += ["", "Label-free pattern type (rows truth, columns geometry-only estimate):", ""]
    lines.append(pd.crosstab(s["pattern_true"], s["pattern_est"]).to_markdown())
    return "\n".join(lines)


def diversity(pairs: list[dict]) -> str:
    by_cat: dict[str, list[str]] = defaultdict(list)
    qs: dict[str, set] = defaultdict(set)
    for p in pairs:
        by_cat[p["category"]].append(p["answer"])
        qs[p["category"]].add(p["question"])
    lines = [
        "| category | answers | distinct answers | distinct "
        "3-grams | distinct-3 ratio | answer templates | question phrasings |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for cat in CATEGORIES:
        answers = by_cat[cat]
        grams: Counter[tuple] = Counter()
        total = 0
        templates = set()
        for a in answers:
            toks = a.lower().split()
            g = list(zip(toks, toks[1:], toks[2:], strict=False))
            grams.update(g)
            total += len(g)
            templates.add(re.sub(r"[\d.]+", "#", re.sub(r"\b[A-Z][a-z]+(?:-[A-Za-z]+)?\b", "C", a))[:40])
        lines.append(
            f"| {cat} | {len(answers)} | {len(set(answers))} "
            f"| {len(grams)} | {len(grams) / max(total, 1):.3f} | "
            f"{len(templates)} | {len(qs[cat])} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wafers", type=int, default=50000)
    ap.add_argument("--accuracy-wafers", type=int, default=3000)
    ap.add_argument("--render-sample", type=int, default=2000)
    args = ap.parse_args()
    proc = psutil.Process()
    print(f"# VQA synthesis benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(accuracy_table(args.accuracy_wafers))
    t0 = time.perf_counter()
    df = generate(SyntheticConfig(n_wafers=args.wafers, seed=0))
    t_gen = time.perf_counter() - t0
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    _, recs = records(df)
    t_rub = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = [p for r in recs for p in qa_pairs(r)]
    t_qa = time.perf_counter() - t0
    k = min(args.render_sample, len(df))
    t0 = time.perf_counter()
    for b, r, c in zip(df["map"][:k], df["rows"][:k], df["cols"][:k], strict=True):
        png_bytes(decode_map(b, r, c), 96)
    t_png = (time.perf_counter() - t0) / k
    rss = proc.memory_info().rss
    print(f"\nThroughput at {args.wafers} wafers ({len(pairs)} pairs), one process:\n")
    print("| step | seconds | rate |\n|---|---|---|")
    print(f"| generate synthetic maps (baseline) | {t_gen:.1f} | {args.wafers / t_gen:.0f} wafers/s |")
    print(f"| attributes + descriptions + rubric | {t_rub:.1f} | {args.wafers / t_rub:.0f} wafers/s |")
    print(f"| QA pairs from rubrics | {t_qa:.1f} | {len(pairs) / t_qa:.0f} pairs/s |")
    print(
        f"| end to end (attributes -> pairs) | {t_rub + t_qa:.1f} "
        f"| {len(pairs) / (t_rub + t_qa):.0f} pairs/s |"
    )
    print(
        f"| render PNG 96 px (sample of {k}) | {t_png * args.wafers:.1f} "
        f"(extrapolated) | {1 / t_png:.0f} wafers/s |"
    )
    print(
        f"\nRSS: {rss0 / 2**20:.0f} MiB after generation, "
        f"{rss / 2**20:.0f} MiB with all records and pairs in memory."
    )
    print(f"\nDiversity over {len(pairs)} pairs:\n")
    print(diversity(pairs))


if __name__ == "__main__":
    main()
