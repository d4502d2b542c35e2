"""align: Bayesian optimisation (Optuna TPE) of the rule-score parameters to track the judge.

Fit fold / held-out fold are split by wafer. Features are computed once per fuzzy threshold and
re-combined per trial, so a trial costs milliseconds. Every trial is a nested MLflow run
(:class:`MlflowTrialCallback`). Outputs the reward config GSPO reads, metrics, and the scatter data.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError, read_parquet
from wafersage.score import config as cfgmod
from wafersage.score.config import HARDENED, PAPER_DEFAULT, ScoreConfig
from wafersage.score.rules import Features, Item, _reference_view, combine, features, score_items
from wafersage.stages.judge import read_records
from wafersage.tracking import stage_run

THRESHOLDS: tuple[float, ...] = (80.0, 88.0, 94.0, 100.0)


class MlflowTrialCallback:
    """Optuna callback: one nested MLflow run per finished trial (params, value, state)."""

    def __init__(self, mlflow: Any, metric: str = "spearman_fit") -> None:
        self.mlflow, self.metric = mlflow, metric

    def __call__(self, study: Any, trial: Any) -> None:
        with self.mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True):
            self.mlflow.log_params({k: str(v) for k, v in trial.params.items()})
            self.mlflow.set_tag("optuna.state", trial.state.name)
            if trial.value is not None:
                self.mlflow.log_metric(self.metric, float(trial.value))


def suggest(trial: Any) -> ScoreConfig:
    """The search space (every field of :class:`ScoreConfig` the alignment may move)."""
    dims = {
        d: trial.suggest_float(f"w_{d}", 0.0, 1.0)
        for d in ("defect_types", "spatial", "morphology", "root_cause")
    }
    return ScoreConfig(
        fuzzy_threshold=trial.suggest_categorical("fuzzy_threshold", THRESHOLDS),
        expand_avoid=trial.suggest_categorical("expand_avoid", (True, False)),
        hit_slope=trial.suggest_float("hit_slope", 1.0, 3.0),
        avoid_step=trial.suggest_float("avoid_step", 0.1, 1.0),
        hit_weight=trial.suggest_float("hit_weight", 0.2, 0.9),
        avoid_gate=trial.suggest_float("avoid_gate", 0.0, 2.0),
        dim_weights=dims,
        scope_by_reference=trial.suggest_categorical("scope_by_reference", (True, False)),
        w_type_f1=trial.suggest_float("w_type_f1", 0.0, 1.0),
        w_polarity=trial.suggest_float("w_polarity", 0.0, 1.0),
        w_bleu=trial.suggest_float("w_bleu", 0.0, 0.5),
        w_rouge=trial.suggest_float("w_rouge", 0.0, 0.5),
        length_cap=trial.suggest_categorical("length_cap", (0.0, 2.0, 3.0, 4.0)),
        echo_cap=trial.suggest_categorical("echo_cap", (0.0, 0.5, 0.7, 0.9)),
        avoid_global_step=trial.suggest_float("avoid_global_step", 0.0, 0.5),
        type_spam_cap=trial.suggest_categorical("type_spam_cap", (0, 1, 2, 3)),
    )


def _as_params(c: ScoreConfig) -> dict[str, Any]:
    out = c.model_dump(exclude={"version", "dim_weights", "w_rubric", "w_embedding", "min_fuzzy_chars"})
    out.update({f"w_{d}": v for d, v in c.dim_weights.items()})
    return {k: v for k, v in out.items() if k != "version"}


def heldout_mask(wafer_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Deterministic wafer-level fold: True for the held-out fold."""
    h = wafer_ids.map(lambda w: int(hashlib.sha256(f"{seed}:{w}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF)
    return (h < fraction).to_numpy()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


def _subset(f: Features, m: np.ndarray) -> Features:
    return Features(**{k: (None if v is None else v[m]) for k, v in vars(f).items()})


def dead_group_rate(scores: np.ndarray, pair_ids: np.ndarray, size: int, n_groups: int, seed: int) -> float:
    """Share of sampled groups of ``size`` variants of one question whose rewards are all equal."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(pair_ids == p) for p in np.unique(pair_ids)]
    groups = [g for g in groups if len(g) >= 2]
    if not groups:
        return float("nan")
    dead = 0
    for k in range(n_groups):
        g = groups[k % len(groups)]
        pick = rng.choice(g, size=size, replace=len(g) < size)
        dead += int(np.ptp(scores[pick]) < 1e-6)
    return dead / n_groups


def throughput(items: list[Item], config: ScoreConfig, batch: int, seed: int, repeats: int = 3) -> float:
    """Scored answers per CPU-second of this process (single-threaded, so per core; median of
    ``repeats``) for one batch, reference caches cleared: robust to other jobs sharing the machine."""
    rng = np.random.default_rng(seed)
    sample = [items[i] for i in rng.integers(0, len(items), size=batch)]
    rates = []
    for _ in range(repeats):
        _reference_view.cache_clear()
        t = time.process_time()
        score_items(sample, config)
        rates.append(batch / max(time.process_time() - t, 1e-9))
    return float(np.median(rates))


def run(
    params: dict[str, Any],
    pool_path: Path,
    scores_path: Path,
    rubrics: Path,
    config_out: Path,
    metrics: Path,
    scatter: Path,
) -> dict[str, Any]:
    """Search, evaluate on the held-out fold, write the reward config, metrics and scatter data."""
    import optuna

    pool = read_parquet(pool_path, "calibration pool", "run `dvc repro judge` first")
    judged = read_parquet(scores_path, "judge scores", "run `dvc repro judge` first")
    df = pool.merge(judged[["item_id", "score"]], on="item_id", how="inner")
    df = df[np.isfinite(df["score"])].reset_index(drop=True)
    if len(df) < 20:
        raise WaferSageError(scores_path, "too few judged items to align", f"{len(df)} < 20")
    records = read_records(rubrics)
    items = [
        Item(r.question, r.answer, r.reference, records[r.wafer_id]["rubric"], records[r.wafer_id]["labels"])
        for r in df.itertuples()
    ]
    judge = df["score"].to_numpy(float)
    seed = int(params.get("seed", 0))
    held = heldout_mask(df["wafer_id"], float(params.get("heldout_fraction", 0.5)), seed)
    if held.all() or not held.any():
        raise WaferSageError(pool_path, "a fold is empty", "need more wafers in the pool")
    fit = ~held
    cache: dict[tuple[float, bool], Features] = {}

    def feats(c: ScoreConfig) -> Features:
        key = (c.fuzzy_threshold, c.expand_avoid)
        if key not in cache:
            cache[key] = features(
                items, ScoreConfig(fuzzy_threshold=key[0], expand_avoid=key[1]), embedding=False
            )
        return cache[key]

    def evaluate(c: ScoreConfig, mask: np.ndarray) -> np.ndarray:
        return combine(_subset(feats(c), mask), c)["score"]

    with stage_run("align", params, inputs={"pool": pool_path, "scores": scores_path}) as mlflow:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=int(params.get("n_startup_trials", 10))
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for start in (HARDENED, PAPER_DEFAULT):
            study.enqueue_trial(_as_params(start))
        study.optimize(
            lambda t: _spearman(evaluate(suggest(t), fit), judge[fit]),
            n_trials=int(params.get("n_trials", 60)),
            callbacks=[MlflowTrialCallback(mlflow)],
        )
        best = suggest(optuna.trial.FixedTrial(study.best_params))
        s_best = evaluate(best, held)
        all_scores = combine(feats(best), best)["score"]
        f_held = _subset(feats(PAPER_DEFAULT), held)
        text_only = (f_held.bleu + f_held.rouge) / 2
        result = {
            "spearman_heldout": _spearman(s_best, judge[held]),
            "kendall_heldout": float(kendalltau(s_best, judge[held])[0]),
            "spearman_paper_default": _spearman(evaluate(PAPER_DEFAULT, held), judge[held]),
            "spearman_bleu_rouge": _spearman(text_only, judge[held]),
            "dead_group_rate": dead_group_rate(
                all_scores,
                df["pair_id"].to_numpy(),
                int(params.get("group_size", 8)),
                int(params.get("dead_groups", 200)),
                seed,
            ),
            "rule_scores_per_s": throughput(items, best, int(params.get("throughput_batch", 1024)), seed),
        }
        result = {k: round(v, 4) for k, v in result.items()}
        meta = {
            "spearman_fit": round(float(study.best_value), 4),
            "n_trials": len(study.trials),
            "items": len(df),
            "heldout_items": int(held.sum()),
        }
        cfgmod.save(best, config_out, extra=meta)
        with atomic_path(metrics) as tmp:
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        plot = pd.DataFrame(
            {
                "item_id": df["item_id"],
                "variant": df["variant"],
                "fold": np.where(held, "heldout", "fit"),
                "rule_score": np.round(all_scores, 4),
                "judge_score": np.round(judge / 10, 4),
            }
        )
        with atomic_path(scatter) as tmp:
            plot.to_csv(tmp, index=False)
        mlflow.log_metrics({**result, "spearman_fit": meta["spearman_fit"]})
        mlflow.log_artifact(str(config_out))
    return {**result, **meta}
