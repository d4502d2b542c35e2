"""evaluate: every model of the graph (untrained base, SFT, GSPO when present) answers the same
seeded sample of the VQA test split; each answer gets the aligned rule score (the reward config
GSPO trains on), the judge's 0-10 score (``judge`` section: reference or LLM) and, for type
questions, the parsed label set; metrics with bootstrap CIs, paired model-vs-model differences,
per-category and per-difficulty breakdowns, ``dvc plots`` data (confusion matrix, per-class F1),
each model's answers to a sample of val pairs for the judge-calibration pool (``wafersage absorb``
adds them to the next alignment), defect-type scores on a real labelled val split when the
pipeline ingests real maps (``evaluation.real_val``), and the HTML report.

Outputs (``out`` = reports/evaluate): ``metrics.json`` (``<model>.<metric>``, ``<model>.ci.<metric>``,
``gspo_vs_sft.<metric>.{diff,ci_low,ci_high}``, ``sft_vs_base...``, ``real_val.<model>.type_macro_f1``
when a real val split is used, ``unseen_phrasing.<model>.{type_macro_f1,rule_score,ratio}`` on test
pairs asked in held-out wordings: ``evaluation.unseen_phrasing``), ``breakdown.json``,
``items.parquet`` (one row a model x test question), ``val_items.parquet`` (the same for a sample of
val questions: the evidence ``register`` logs and ``promote`` decides on, so selection never sees
test),
``real_val_answers.parquet`` (one row a model x real val map; empty without a real val split),
``confusion.csv`` (the last model's type answers), ``per_class_f1.csv``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.rubric import read_records
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.evaluation import real_val, stats, unseen_phrasing
from wafersage.evaluation.answer_scores import answer_scores
from wafersage.evaluation.report import render_html
from wafersage.evaluation.stats import COMPARISONS
from wafersage.evaluation.stats import per_class_f1 as class_f1
from wafersage.registry.promotion import item_metric, labels_of
from wafersage.score.calibration import POOL_COLUMNS
from wafersage.score.config import load as load_reward
from wafersage.score.judges import JudgeItem, make_judge
from wafersage.serving.images import fit
from wafersage.serving.workers import answer_in_workers
from wafersage.tracking import file_md5, flatten, stage_run

METRICS = ("type_macro_f1", "type_accuracy", "rule_score", "judge_score")
NO_LABEL = "(no class named)"


def sample_pairs(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` rows stratified by category (proportional, seeded), in table order."""
    if len(df) <= n:
        return df.reset_index(drop=True)
    frac = n / len(df)
    parts = [g.sample(n=max(1, round(len(g) * frac)), random_state=seed) for _, g in df.groupby("category")]
    return pd.concat(parts).sort_index().head(n).reset_index(drop=True)


def split_items(
    vqa_dir: Path, split: str, n: int, records: dict[str, dict[str, Any]], p: dict[str, Any]
) -> pd.DataFrame:
    """A seeded sample of ``n`` pairs of a VQA split with ``item_id``, truth labels and rubric."""
    from wafersage.modeling.vqa_data import read_split

    path = Path(vqa_dir) / f"{split}.parquet"
    df = sample_pairs(read_split(path), n, int(p["seed"]))
    missing = sorted(set(df["wafer_id"]) - set(records))
    if missing:
        raise WaferSageError(path, f"{split} wafer has no rubric", missing[0])
    if "pair_id" not in df:
        df["pair_id"] = [f"{w}#{i}" for i, w in enumerate(df["wafer_id"])]
    if "difficulty" not in df:
        df["difficulty"] = 1
    if "labels" not in df:
        df["labels"] = [list(records[w].get("labels") or []) for w in df["wafer_id"]]
    if "rubric_id" not in df:
        df["rubric_id"] = df["wafer_id"]
    df["item_id"] = df["pair_id"].astype(str)
    if df["item_id"].duplicated().any():
        raise WaferSageError(
            path, "duplicate pair_id", str(df.loc[df["item_id"].duplicated(), "item_id"].iloc[0])
        )
    return df


def test_items(vqa_dir: Path, records: dict[str, dict[str, Any]], p: dict[str, Any]) -> pd.DataFrame:
    """The sampled test pairs (``max_pairs``): what every reported score is measured on."""
    return split_items(vqa_dir, "test", int(p["max_pairs"]), records, p)


def selection_items(vqa_dir: Path, records: dict[str, dict[str, Any]], p: dict[str, Any]) -> pd.DataFrame:
    """The sampled val pairs (``select_pairs``): the evidence ``promote`` decides on (never test)."""
    return split_items(vqa_dir, "val", int(p["select_pairs"]), records, p)


def item_rows(model: str, df: pd.DataFrame, scored: pd.DataFrame, reward_md5: str) -> pd.DataFrame:
    """One row a question of ``df`` answered by ``model``: the pair, its scores, and the md5 of the
    reward config the rule score used."""
    pairs = pd.DataFrame(
        {
            "model": model,
            "item_id": df["item_id"],
            "wafer_id": df["wafer_id"],
            "rubric_id": df["rubric_id"].astype(str),
            "category": df["category"],
            "difficulty": df["difficulty"].astype(int),
            "question": df["question"],
            "reference": df["answer"],
        }
    )
    return pd.concat([pairs, scored.assign(reward_md5=reward_md5)], axis=1)


def predictor(folder: Path, p: dict[str, Any]) -> Any:
    """The model in ``folder``, loaded once for every set of questions it answers (on
    ``evaluate.threads`` torch threads; 0 = torch's default)."""
    import torch

    from wafersage.serving.predictor import Predictor

    if int(p["threads"]) > 0:
        torch.set_num_threads(int(p["threads"]))
    return Predictor(
        folder, batch_size=int(p["generation_batch_size"]), max_new_tokens=int(p["max_new_tokens"])
    )


def generate(pred: Any, df: pd.DataFrame, p: dict[str, Any], what: str) -> tuple[list[str], float]:
    """Greedy answers of ``pred`` (a :class:`~wafersage.serving.predictor.Predictor`) to every row
    (batched, in ``evaluate.workers`` processes, with a progress bar) and the seconds it took."""
    from wafersage.modeling.vqa_data import pil_image

    images = [fit(pil_image(v), pred.image_size) for v in df["image"]]
    questions = list(df["question"].astype(str))
    t0 = time.perf_counter()
    answers = answer_in_workers(
        pred, images, questions, int(p["workers"]), int(p["threads"]), f"{what} {pred.folder.name}"
    )
    return answers, time.perf_counter() - t0


def score(
    df: pd.DataFrame, answers: list[str], records: dict[str, dict[str, Any]], cfg: Any, judge: Any
) -> pd.DataFrame:
    """Per-answer rule score, judge score/rationale and parsed type labels."""
    out = answer_scores(df, answers, records, cfg)
    qs, refs = df["question"].astype(str), df["answer"].astype(str)
    verdicts = judge.judge(
        [
            JudgeItem(q, a, r, records[w]["rubric"], list(lb), records[w].get("attributes") or {})
            for q, a, r, w, lb in zip(qs, answers, refs, df["wafer_id"], df["labels"], strict=True)
        ]
    )
    out.insert(2, "judge_score", [v.score for v in verdicts])
    out.insert(3, "judge_rationale", [v.rationale for v in verdicts])
    return out


def model_metrics(rows: pd.DataFrame, p: dict[str, Any]) -> dict[str, Any]:
    """Point estimates and bootstrap CIs of :data:`METRICS` over ``rows`` (one model)."""
    out: dict[str, Any] = {"n": len(rows), "n_type": int(rows["is_type"].sum())}
    ci: dict[str, Any] = {}
    for m in METRICS:
        r = stats.rounded(
            stats.ci(
                item_metric(rows, m), len(rows), int(p["n_boot"]), int(p["seed"]), float(p["confidence"])
            )
        )
        out[m] = r["value"]
        ci[m] = {"low": r["ci_low"], "high": r["ci_high"]}
    out["ci"] = ci
    return out


def comparisons(items: pd.DataFrame, p: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap differences for each pair in :data:`COMPARISONS` whose models are present."""
    out: dict[str, Any] = {}
    for name, a, b in COMPARISONS:
        ra = items[items["model"] == a].set_index("item_id")
        rb = items[items["model"] == b].set_index("item_id")
        if ra.empty or rb.empty:
            continue
        rb = rb.loc[ra.index].reset_index()
        ra = ra.reset_index()
        out[name] = {
            m: stats.rounded(
                stats.paired_diff(
                    item_metric(ra, m),
                    item_metric(rb, m),
                    len(ra),
                    int(p["n_boot"]),
                    int(p["seed"]),
                    float(p["confidence"]),
                )
            )
            for m in ("type_macro_f1", "rule_score", "judge_score")
        }
    return out


def breakdown(items: pd.DataFrame, p: dict[str, Any]) -> dict[str, Any]:
    """Rule and judge score (with CIs) per model x category and model x difficulty; type metrics per
    model x difficulty."""

    def block(rows: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, Any]:
        res: dict[str, Any] = {"n": len(rows)}
        for m in metrics:
            r = stats.rounded(
                stats.ci(
                    item_metric(rows, m), len(rows), int(p["n_boot"]), int(p["seed"]), float(p["confidence"])
                )
            )
            res[m] = {"value": r["value"], "low": r["ci_low"], "high": r["ci_high"]}
        return res

    out: dict[str, Any] = {}
    for model, rows in items.groupby("model", sort=False):
        out[str(model)] = {
            "category": {
                str(c): block(g, ("rule_score", "judge_score")) for c, g in rows.groupby("category")
            },
            "difficulty": {
                str(d): block(g, ("rule_score", "judge_score", "type_macro_f1", "type_accuracy"))
                for d, g in rows.groupby("difficulty")
            },
        }
    return out


def confusion_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """``actual`` / ``predicted`` of one model's type answers (for the confusion template)."""
    t = rows[rows["is_type"] & (rows["truth"] != "")]
    return pd.DataFrame(
        {"actual": t["truth"].to_numpy(), "predicted": t["pred"].replace("", NO_LABEL).to_numpy()}
    )


def per_class_f1(items: pd.DataFrame) -> pd.DataFrame:
    """One-vs-rest F1 per class and model, over type questions (classes seen in truth or answers)."""
    out = []
    for model, rows in items.groupby("model", sort=False):
        t = rows[rows["is_type"] & (rows["truth"] != "")]
        scores = class_f1([labels_of(x) for x in t["truth"]], [labels_of(x) for x in t["pred"]])
        out.extend({"class": f"{model}:{c}", "model": model, "label": c, **v} for c, v in scores.items())
    return pd.DataFrame(out, columns=["class", "model", "label", "f1", "support"])


def pool_rows(model: str, pairs: pd.DataFrame, answers: list[str]) -> pd.DataFrame:
    """One model's answers to val ``pairs`` in the calibration pool's schema (``variant`` model,
    ``source`` model:<name>), for ``wafersage absorb`` to add to the next alignment's pool."""
    df = pd.DataFrame(
        {
            "item_id": f"model:{model}:" + pairs["pair_id"].astype(str),
            "pair_id": pairs["pair_id"].astype(str),
            "wafer_id": pairs["wafer_id"],
            "rubric_id": pairs["rubric_id"].astype(str),
            "category": pairs["category"],
            "question": pairs["question"],
            "reference": pairs["answer"],
            "answer": answers,
            "variant": "model",
            "source": f"model:{model}",
        }
    )
    return df[list(POOL_COLUMNS)]


def pool_pairs(vqa_dir: Path, p: dict[str, Any]) -> pd.DataFrame:
    """The val pairs every model answers for the calibration pool (never test pairs: the pool
    tunes the reward, the test split scores it)."""
    from wafersage.modeling.vqa_data import read_split

    if not int(p["pool_pairs"]):
        return pd.DataFrame(
            columns=["pair_id", "wafer_id", "rubric_id", "category", "question", "answer", "image"]
        )
    path = Path(vqa_dir) / "val.parquet"
    df = sample_pairs(read_split(path), int(p["pool_pairs"]), int(p["seed"]))
    for col in ("pair_id", "rubric_id"):
        if col not in df:
            raise WaferSageError(path, "VQA val split lacks a column the pool needs", col)
    return df


def flat_metrics(per_model: dict[str, Any], comps: dict[str, Any]) -> dict[str, float]:
    """Dotted scalar metrics (for MLflow)."""
    return {k: float(v) for k, v in flatten({**per_model, **comps}).items() if isinstance(v, int | float)}


def run(
    params: dict[str, Any],
    judge_params: dict[str, Any],
    vqa_dir: Path,
    rubrics: Path,
    reward: Path,
    models: list[Path],
    out: Path,
    report: Path,
    pool: Path,
    ingest: dict[str, Any] | None = None,
    raw: Path | None = None,
) -> dict[str, Any]:
    """Answer, score and report; write every output atomically; return ``metrics.json``'s content.
    ``ingest`` (the ingest params) resolves ``real_val: auto``; with a real val split and the raw
    table (``raw``), the trees baseline answers the same maps (``real_val.trees``)."""
    p = validated("evaluate", params)
    judge_params = validated("judge", judge_params)
    models = [Path(m) for m in models]
    if not models:
        raise WaferSageError("models/", "no model folder to evaluate", "run `dvc repro sft` first")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise WaferSageError(None, "two model folders share a name", ", ".join(names))
    records = read_records(Path(rubrics))
    df = test_items(Path(vqa_dir), records, p)
    select_df = selection_items(Path(vqa_dir), records, p)
    unseen_df = unseen_phrasing.unseen_items(df, int(p["unseen_pairs"]), int(p["seed"]))
    unseen_answers: dict[str, list[str]] = {}
    val_pairs = pool_pairs(Path(vqa_dir), p)
    real = real_val.resolve(p["real_val"], ingest or {})
    real_maps = real_val.load_maps(real, p["real_val_max"], int(p["seed"])) if real else None
    cfg = load_reward(reward)
    reward_md5 = file_md5(Path(reward))
    judge = make_judge(judge_params, judge_params["cache_dir"])
    inputs = {"vqa_test": Path(vqa_dir) / "test.parquet", "rubrics": rubrics, "reward": reward}
    inputs.update({f"model_{m.name}": m for m in models})
    if real is not None:
        inputs["real_val"] = real.path
        if raw is not None:
            inputs["raw"] = Path(raw)
    with stage_run(
        "evaluate",
        {"evaluate": p, "judge": judge_params["judge"], "models": names},
        inputs=inputs,
    ) as mlflow:
        frames, select_frames, speed, pool_frames, real_answers = [], [], {}, [], {}
        real_question: str | None = None
        for folder in models:
            pred = predictor(folder, p)
            if len(val_pairs):
                pool_frames.append(pool_rows(folder.name, val_pairs, generate(pred, val_pairs, p, "pool")[0]))
            if real_maps is not None and folder.name in p["real_val_models"]:
                real_answers[folder.name], real_question = real_val.answers(
                    pred, real_maps, int(p["workers"]), int(p["threads"])
                )
            answers, secs = generate(pred, df, p, "evaluate")
            speed[folder.name] = round(len(answers) / secs, 3) if secs > 0 else None
            if len(unseen_df):
                unseen_answers[folder.name] = generate(pred, unseen_df, p, "unseen phrasing")[0]
            frames.append(item_rows(folder.name, df, score(df, answers, records, cfg, judge), reward_md5))
            chosen = generate(pred, select_df, p, "selection")[0]
            select_frames.append(
                item_rows(folder.name, select_df, score(select_df, chosen, records, cfg, judge), reward_md5)
            )
        if real_maps is not None:
            final = real_val.final_model(names)
            alone = real_val.specialist_answers(models[names.index(final)], real_maps) if final else None
            if alone is not None:
                real_answers[real_val.SPECIALIST] = alone
        if real_maps is not None and raw is not None:
            train = real_val.training_maps(Path(raw), Path(vqa_dir) / "train.parquet")
            real_answers[real_val.TREES] = real_val.trees_answers(train, real_maps, int(p["seed"]))
        items = pd.concat(frames, ignore_index=True)
        per_model = {name: model_metrics(items[items["model"] == name], p) for name in names}
        for name in names:
            per_model[name]["answers_per_s"] = speed[name]
        comps = comparisons(items, p)
        metrics = {**per_model, **comps}
        detail = breakdown(items, p)
        if real_maps is not None:
            real_metrics, real_detail = real_val.score_models(real_maps, real_answers, p)
            metrics["real_val"] = real_metrics
            detail["real_val"] = {
                **real_detail,
                "question": real_question,
                "source": real.source,
                "path": str(real.path),
            }
        if unseen_answers:
            metrics["unseen_phrasing"], detail["unseen_phrasing"] = unseen_phrasing.score_models(
                unseen_df, unseen_answers, items, records, cfg, p
            )
        images = dict(zip(df["item_id"], df["image"], strict=True))
        out = Path(out)
        texts = {
            out / "metrics.json": json.dumps(metrics, indent=2, sort_keys=True) + "\n",
            out / "breakdown.json": json.dumps(detail, indent=2, sort_keys=True) + "\n",
            out / "confusion.csv": confusion_rows(items[items["model"] == names[-1]]).to_csv(index=False),
            out / "per_class_f1.csv": per_class_f1(items).to_csv(index=False),
            Path(report): render_html(metrics, detail, items, images, names, judge.name, int(p["gallery"])),
        }
        pool_df = pd.concat(pool_frames, ignore_index=True) if pool_frames else None
        tables = {
            out / "items.parquet": items,
            out / "val_items.parquet": pd.concat(select_frames, ignore_index=True),
            out / "real_val_answers.parquet": real_val.answer_table(real_maps, real_answers),
            Path(pool): pool_df if pool_df is not None else pd.DataFrame(columns=list(POOL_COLUMNS)),
        }
        with atomic_outputs(*((path, False) for path in [*texts, *tables])) as temps:  # all computed above
            for tmp, text in zip(temps[: len(texts)], texts.values(), strict=True):
                tmp.write_text(text, encoding="utf-8")
            for tmp, table in zip(temps[len(texts) :], tables.values(), strict=True):
                table.to_parquet(tmp, index=False)
        real_flat = {k: metrics[k] for k in ("real_val", "unseen_phrasing") if k in metrics}
        mlflow.log_metrics(
            {
                k.replace(".", "/"): v
                for k, v in flat_metrics(per_model, {**comps, **real_flat}).items()
                if np.isfinite(v)
            }
        )
        mlflow.log_artifact(str(report))
        mlflow.log_artifact(str(out / "metrics.json"))
    return metrics
