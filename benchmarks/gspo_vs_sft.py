"""GSPO vs SFT on the held-out test split, with the ablations in the same run and seed.

Trains three variants from the same SFT model with the gspo stage's code and params.yaml ``gspo``
(plus ``--set`` overrides): ``gspo`` (sequence-level ratios, curriculum), ``grpo`` (token-level
ratios, otherwise identical) and ``no_curriculum`` (GSPO, one stage over all difficulties, same
steps and review share). Then answers a seeded sample of the test split greedily with SFT and with
each variant and reports, for each variant minus SFT, a paired bootstrap 95% CI of the difference
in: the aligned rule score (overall and per rubric dimension), defect-type macro-F1 (type
questions) and the reference judge score (0-10). Also dead-group rate, s/step and stage wall time.

    python benchmarks/gspo_vs_sft.py --sft models/sft --vqa data/vqa --rubrics data/rubrics/rubrics.jsonl \
        --reward models/reward/reward_config.json --work /tmp/gspo_bench [--set gspo.beta=0] [--variants gspo]

Prints a markdown report and writes ``<work>/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

VARIANTS = {
    "gspo": {},
    "grpo": {"importance_sampling_level": "token"},
    "no_curriculum": {"curriculum": {"enabled": False}},
}


def _overrides(sets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sets:
        key, value = s.split("=", 1)
        parts = key.removeprefix("gspo.").split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = yaml.safe_load(value)
    return out


def test_sample(vqa: Path, n: int, n_type: int, seed: int) -> pd.DataFrame:
    """A seeded, category-stratified sample of the test split plus up to ``n_type`` type questions."""
    df = pd.read_parquet(vqa / "test.parquet")
    typ = df[df["category"] == "type"]
    typ = typ.sample(min(n_type, len(typ)), random_state=seed)
    rest = df[df["category"] != "type"]
    rest = rest.groupby("category", group_keys=False).apply(
        lambda g: g.sample(min(len(g), max(1, n // rest["category"].nunique())), random_state=seed)
    )
    return pd.concat([typ, rest]).reset_index(drop=True)


def answers(model_dir: Path, df: pd.DataFrame, max_new_tokens: int) -> list[str]:
    """Greedy answers of a saved model, prompted as it was trained (the serving ``Predictor``)."""
    from wafersage.modeling.vqa_data import pil_image
    from wafersage.serving.predictor import Predictor

    pred = Predictor(model_dir, batch_size=32, max_new_tokens=max_new_tokens)
    return pred.answer([pil_image(v) for v in df["image"]], list(df["question"]))


def scores(df: pd.DataFrame, ans: list[str], records: dict, reward: Path) -> dict[str, np.ndarray]:
    """Per-answer rule score (overall + per dimension) and reference-judge score."""
    from wafersage.score.config import load
    from wafersage.score.judges import JudgeItem, ReferenceJudge
    from wafersage.score.rules import Item, combine, features

    cfg = load(reward)
    items = [
        Item(q, a, r, records[w]["rubric"], records[w]["labels"])
        for q, a, r, w in zip(df["question"], ans, df["answer"], df["wafer_id"], strict=True)
    ]
    out = combine(features(items, cfg), cfg)
    res = {"rule_score": out["score"]} | {k: v for k, v in out.items() if k.startswith("dim_")}
    judge = ReferenceJudge()
    jitems = [
        JudgeItem(
            it.question, it.answer, it.reference, it.rubric, it.labels, records[w].get("attributes", {})
        )
        for it, w in zip(items, df["wafer_id"], strict=True)
    ]
    res["judge"] = np.array([v.score for v in judge.judge(jitems)], dtype=float)
    return res


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of ``b - a`` over items where both are defined, with a bootstrap 95% CI."""
    ok = np.isfinite(a) & np.isfinite(b)
    d = (b - a)[ok]
    if not len(d):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def f1_ci(refs: list[str], a: list[str], b: list[str], n_boot: int, seed: int) -> tuple[float, float, float]:
    """Macro-F1(b) - macro-F1(a) on the type questions, with a paired bootstrap 95% CI."""
    from wafersage.annotation.answer_parser import parse_labels
    from wafersage.evaluation.type_scoring import type_scores

    def canon(s: str) -> str:  # parse once; the canonical names re-parse to the same set
        labs = sorted(parse_labels(s))
        return " and ".join(labs) if labs else "no recognisable type"

    refs, a, b = [canon(x) for x in refs], [canon(x) for x in a], [canon(x) for x in b]

    def f1(idx: np.ndarray, pred: list[str]) -> float:
        return type_scores([refs[i] for i in idx], [pred[i] for i in idx])["type_macro_f1"]

    full = np.arange(len(refs))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(refs), len(refs))
        boots.append(f1(idx, b) - f1(idx, a))
    return f1(full, b) - f1(full, a), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _f1(df: pd.DataFrame, ans: list[str]) -> float:
    from wafersage.evaluation.type_scoring import type_scores

    typ = (df["category"] == "type").to_numpy()
    refs = list(df.loc[typ, "answer"])
    return type_scores(refs, [a for a, f in zip(ans, typ, strict=True) if f])["type_macro_f1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", type=Path, default=Path("models/sft"))
    ap.add_argument("--vqa", type=Path, default=Path("data/vqa"))
    ap.add_argument("--rubrics", type=Path, default=Path("data/rubrics/rubrics.jsonl"))
    ap.add_argument("--reward", type=Path, default=Path("models/reward/reward_config.json"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/gspo_bench"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], help="gspo param override, e.g. gspo.beta=0.0")
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--n-type", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{args.work / 'mlflow.db'}")
    args.work.mkdir(parents=True, exist_ok=True)

    from wafersage.annotation.rubric import read_records
    from wafersage.params import load_section, merged
    from wafersage.stages import gspo

    base = merged(load_section("gspo", args.params), _overrides(args.set))
    records = read_records(args.rubrics)
    df = test_sample(args.vqa, args.n_test, args.n_type, args.seed)
    is_type = (df["category"] == "type").to_numpy()
    t = time.perf_counter()
    sft_ans = answers(args.sft, df, args.max_new_tokens)
    eval_s = time.perf_counter() - t
    sft_sc = scores(df, sft_ans, records, args.reward)
    report: dict[str, Any] = {
        "n_test": len(df),
        "n_type": int(is_type.sum()),
        "eval_s": round(eval_s, 1),
        "sft": {k: float(np.nanmean(v)) for k, v in sft_sc.items()} | {"type_macro_f1": _f1(df, sft_ans)},
        "variants": {},
    }
    for name in args.variants:
        params = merged(base, VARIANTS[name])
        out = args.work / name
        t = time.perf_counter()
        m = gspo.run(
            params,
            args.sft,
            args.vqa,
            args.rubrics,
            args.reward,
            out / "model",
            out / "metrics.json",
            out / "ck",
        )
        wall = time.perf_counter() - t
        ans = answers(out / "model", df, args.max_new_tokens)
        sc = scores(df, ans, records, args.reward)
        diffs = {k: paired_ci(sft_sc[k], sc[k], args.boot, args.seed) for k in sc}
        refs = list(df.loc[is_type, "answer"])
        diffs["type_macro_f1"] = f1_ci(
            refs,
            [a for a, f in zip(sft_ans, is_type, strict=True) if f],
            [a for a, f in zip(ans, is_type, strict=True) if f],
            min(args.boot, 300),
            args.seed,
        )
        report["variants"][name] = {
            "metrics": m,
            "stage_wall_s": round(wall, 1),
            "s_per_step": round(m["train_wall_s"] / max(m["steps"], 1), 2),
            "mean": {k: float(np.nanmean(v)) for k, v in sc.items()} | {"type_macro_f1": _f1(df, ans)},
            "diff_vs_sft": diffs,
            "sample": [
                {"q": q, "sft": s, name: a}
                for q, s, a in list(zip(df["question"], sft_ans, ans, strict=True))[:5]
            ],
        }
        (args.work / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = [
        f"Test sample: {report['n_test']} QA pairs ({report['n_type']} type questions); "
        f"greedy answers; paired bootstrap 95% CI of (variant - SFT).",
        "",
        "| variant | metric | SFT | variant | diff [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        for k, (d, lo, hi) in v["diff_vs_sft"].items():
            sft = report["sft"].get(k, float("nan"))
            var = v["mean"].get(k, float("nan"))
            lines.append(f"| {name} | {k} | {sft:.4f} | {var:.4f} | {d:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    lines += ["", "| variant | steps | dead-group rate | reward first -> last | s/step | stage wall s |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        m = v["metrics"]
        lines.append(
            f"| {name} | {m['steps']} | {m['dead_group_rate']:.3f} | {m['reward_mean_first']:.3f} -> "
            f"{m['reward_mean_last']:.3f} | {v['s_per_step']} | {v['stage_wall_s']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
