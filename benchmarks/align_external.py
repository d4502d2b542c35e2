"""The rule score against an independent judge: for several seeds (each a different by-wafer split of
the externally graded file into a fit and a held-out half, and a different TPE seed) runs the align
stage's external fit (:func:`wafersage.stages.align.external_alignment`) and reports, on the held-out
half, Spearman/Kendall with the judge's grades (all answers, and model answers alone) of:

* ``external_fitted``: the rule-score config fitted on the fit half (same search as ``align``);
* ``reference_fitted``: a config the align stage fitted on the pipeline's reference judge (a proxy),
  read from ``--reference-config`` (default ``models/reward/reward_config.json`` when present);
* ``paper_default`` and ``hardened``: the fixed configs of :mod:`wafersage.score.config`.

Prints a markdown table of medians (and min-max over seeds) and writes every figure, with the
per-seed bootstrap 95% intervals, as JSON. Two diagnostics beside them: the Spearman over the
non-empty model answers alone (empty answers of an untrained model are trivially ranked last by
both), and a what-if in which answers opening with a sentence-level negation ("It is not the case
that ...", a corruption the rule score has no feature for) are scored 0. And, over all items, the
Spearman per question category and the mean rule score vs grade / 10 per answer kind (model or
corruption variant) of the proxy-fitted config.

    .venv/bin/python benchmarks/align_external.py [--file ../shared/calibration/llm_graded.jsonl]
        [--seeds 0 1 2 3 4 5 6 7 8 9] [--trials 60] [--n-boot 1000]
        [--reference-config models/reward/reward_config.json] [--out align_external.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT.parent / "shared" / "calibration" / "llm_graded.jsonl"
CONFIGS = ("external_fitted", "reference_fitted", "paper_default", "hardened")


def _key(stat: str, config: str) -> str:
    return f"{stat}_heldout" + ("" if config == "external_fitted" else f"_{config}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--heldout-fraction", type=float, default=0.5)
    ap.add_argument(
        "--reference-config", type=Path, default=ROOT / "models" / "reward" / "reward_config.json"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from wafersage.score import config as cfgmod
    from wafersage.score.external import read_external
    from wafersage.stages.align import Scorer, _spearman, external_alignment, heldout_mask

    if not args.file.is_file():
        sys.exit(f"graded file not found: {args.file}")
    ext = read_external(args.file)
    ref = cfgmod.load(args.reference_config) if args.reference_config.is_file() else None
    configs = [c for c in CONFIGS if c != "reference_fitted" or ref is not None]
    fixed = {"reference_fitted": ref, "paper_default": cfgmod.PAPER_DEFAULT, "hardened": cfgmod.HARDENED}
    scorer = Scorer(ext.items)
    model_nonempty = (ext.sources == "model") & np.array([bool(it.answer.strip()) for it in ext.items])
    # sentence-level negation ("It is not the case that <the reference>"): the rule score has no
    # feature for it; the what-if scores those answers 0 to show what such a feature could be worth
    negated = np.array([it.answer.lower().startswith("it is not the case") for it in ext.items])
    runs = []
    for seed in args.seeds:
        t = time.perf_counter()
        params = {
            "seed": seed,
            "n_trials": args.trials,
            "n_boot": args.n_boot,
            "heldout_fraction": args.heldout_fraction,
        }
        best, report = external_alignment(ext, params, reference_fitted=ref)
        report["seed"], report["seconds"] = seed, round(time.perf_counter() - t, 1)
        held = heldout_mask(pd.Series(ext.wafer_ids), args.heldout_fraction, seed)
        diag: dict[str, dict[str, float]] = {"model_nonempty": {}, "what_if_negation_scored_0": {}}
        for c in configs:
            sc = scorer.scores(best if c == "external_fitted" else fixed[c])
            k = held & model_nonempty
            diag["model_nonempty"][c] = round(_spearman(sc[k], ext.grades[k]), 4)
            diag["what_if_negation_scored_0"][c] = round(
                _spearman(np.where(negated, 0.0, sc)[held], ext.grades[held]), 4
            )
        diag["model_nonempty"]["items"] = int((held & model_nonempty).sum())
        report["diagnostics"] = diag
        runs.append(report)
        items, model = report["items"], report["model_answers"]
        print(
            f"seed {seed}: held-out {items['heldout']} items ({items['heldout_model']} model), Spearman "
            f"external {report['spearman_heldout']} / paper {report['spearman_heldout_paper_default']}; "
            f"model answers {model['spearman_heldout']}",
            file=sys.stderr,
        )

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for part in ("all", "model_answers"):
        for stat in ("spearman", "kendall"):
            for c in configs:
                vals = [(r if part == "all" else r["model_answers"])[_key(stat, c)] for r in runs]
                vals = [v for v in vals if v is not None]
                summary.setdefault(part, {})[f"{stat}.{c}"] = {
                    "median": round(statistics.median(vals), 4),
                    "min": min(vals),
                    "max": max(vals),
                }
        fits = [r["spearman_fit"] for r in runs]
        summary[part]["spearman_fit.external_fitted"] = {
            "median": round(statistics.median(fits), 4),
            "min": min(fits),
            "max": max(fits),
        }
        for c in configs[1:]:
            gains = [(r if part == "all" else r["model_answers"])[f"spearman_gain_vs_{c}"] for r in runs]
            summary[part][f"gain_vs_{c}"] = {
                "median": round(statistics.median(g["diff"] for g in gains), 4),
                "seeds_ci_above_0": sum(g["low"] is not None and g["low"] > 0 for g in gains),
                "seeds_ci_below_0": sum(g["high"] is not None and g["high"] < 0 for g in gains),
            }
    for name in ("model_nonempty", "what_if_negation_scored_0"):
        summary[name] = {}
        for c in configs:
            vals = [r["diagnostics"][name][c] for r in runs]
            summary[name][f"spearman.{c}"] = {
                "median": round(statistics.median(vals), 4),
                "min": min(vals),
                "max": max(vals),
            }
    # where the disagreements sit, over all items (no split): the proxy-fitted config when given
    who = "reference_fitted" if ref is not None else "paper_default"
    sc = scorer.scores(fixed[who])
    kind = np.array(
        [i.split(":")[1] if i.startswith("model:") else i.rsplit(":", 1)[-1] for i in ext.item_ids]
    )
    where = {
        "config": who,
        "spearman_by_category": {
            c: {"items": int(k.sum()), "spearman": round(_spearman(sc[k], ext.grades[k]), 4)}
            for c in sorted(set(ext.categories))
            for k in [ext.categories == c]
        },
        "mean_by_answer_kind": {
            a: {
                "items": int(k.sum()),
                "rule": round(float(sc[k].mean()), 3),
                "judge_10": round(float(ext.grades[k].mean() / 10), 3),
            }
            for a in sorted(set(kind))
            for k in [kind == a]
        },
    }
    result = {
        "file": str(args.file),
        "items": len(ext),
        "model_items": int((ext.sources == "model").sum()),
        "seeds": args.seeds,
        "trials": args.trials,
        "n_boot": args.n_boot,
        "reference_config": str(args.reference_config) if ref is not None else None,
        "summary": summary,
        "disagreements_all_items": where,
        "runs": runs,
    }
    print(f"\n{len(args.seeds)} seeds, {len(ext)} items; median (min - max) over seeds of held-out figures\n")
    print(
        "| config | Spearman | Kendall | Spearman, model answers | Kendall, model answers "
        "| Spearman, non-empty model answers | what-if: negations scored 0, Spearman |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in configs:
        cells = []
        for part in ("all", "model_answers"):
            for stat in ("spearman", "kendall"):
                s = summary[part][f"{stat}.{c}"]
                cells.append(f"{s['median']:.3f} ({s['min']:.3f} - {s['max']:.3f})")
        for name in ("model_nonempty", "what_if_negation_scored_0"):
            v = summary[name][f"spearman.{c}"]
            cells.append(f"{v['median']:.3f} ({v['min']:.3f} - {v['max']:.3f})")
        print(f"| {c} | " + " | ".join(cells) + " |")
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
