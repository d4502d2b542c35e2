"""align: Bayesian optimisation (Optuna TPE) of the rule-score parameters to track a judge.

Fit fold / held-out fold are split by wafer. Features are computed once per fuzzy threshold and
re-combined per trial, so a trial costs milliseconds. Every trial is a nested MLflow run
(:class:`MlflowTrialCallback`). Outputs the reward config GSPO reads, metrics, and the scatter data.

The judge of the calibration pool is the one the ``judge`` stage ran: by default the offline
*reference judge*, a proxy that shares the rule score's vocabulary, so ``spearman_heldout`` against
it is an upper bound, not proof that the rule score tracks an expert (``reference_judge_note`` in
the metrics says so).

External judge (``align.external``, default ``null`` = off): the path of a JSON-lines file of
answers graded 0-10 by an independent judge (format: :mod:`wafersage.score.external`; e.g.
``dvc exp run -S align.external=../shared/calibration/llm_graded.jsonl``, a path relative to the
repository root, or absolute under ``--temp`` / queued experiments). The stage then also splits
those items by wafer (``seed``, ``heldout_fraction``) into a fit and a held-out half, runs the same
search (same space, ``n_trials``, starts) on the fit half, and reports under ``external.*`` the
held-out Spearman and Kendall, with percentile-bootstrap 95% intervals (``n_boot`` resamples of the
held-out items, seeded), of the externally fitted config beside the config fitted on the pipeline's
judge (``reference_fitted``), ``PAPER_DEFAULT`` and ``HARDENED`` on the same items; the same over
the model answers alone under ``external.model_answers.*``. The held-out grades are read only to
report. ``align.fit_on`` picks the reward config written: ``reference`` (default: the pipeline
stays self-contained and reproducible from its own data) or ``external`` (the config fitted on the
external fit half; needs ``align.external``). The external file's MD5 is logged with the MLflow run
(``data.external.md5``) and written to the metrics; DVC does not track a path held in a param, so
track the file yourself when you use it: ``dvc add`` a copy inside the repository, or list its path
under the align stage's ``deps`` for that experiment. Bad input (missing file, malformed line,
grade outside 0-10, missing field) is one line naming the file, line and rule, and nothing is
written.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata, spearmanr

from wafersage.annotation.rubric import read_records
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.evaluation import stats
from wafersage.score import config as cfgmod
from wafersage.score.config import HARDENED, PAPER_DEFAULT, ScoreConfig
from wafersage.score.external import ExternalSet, read_external
from wafersage.score.rules import Features, Item, _reference_view, combine, features, score_items
from wafersage.tracking import file_md5, flatten, stage_run

THRESHOLDS: tuple[float, ...] = (80.0, 88.0, 94.0, 100.0)
REFERENCE_JUDGE_NOTE = (
    "judge_score here is the pipeline's judge stage; the default reference judge is an analytic proxy "
    "sharing the rule score's vocabulary, so agreement with it is an upper bound: see external.* "
    "(align.external) for agreement with an independent judge"
)


class MlflowTrialCallback:
    """Optuna callback: one nested MLflow run per finished trial (params, value, state)."""

    def __init__(self, mlflow: Any, metric: str = "spearman_fit", prefix: str = "") -> None:
        self.mlflow, self.metric, self.prefix = mlflow, metric, prefix

    def __call__(self, study: Any, trial: Any) -> None:
        with self.mlflow.start_run(run_name=f"{self.prefix}trial-{trial.number:03d}", nested=True):
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


class Scorer:
    """Rule scores of a fixed list of items under many configs: features are computed once per
    matching setting (fuzzy threshold, expanded must-avoid) and re-combined per config."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self._cache: dict[tuple[float, bool], Features] = {}

    def features(self, c: ScoreConfig) -> Features:
        key = (c.fuzzy_threshold, c.expand_avoid)
        if key not in self._cache:
            self._cache[key] = features(
                self.items, ScoreConfig(fuzzy_threshold=key[0], expand_avoid=key[1]), embedding=False
            )
        return self._cache[key]

    def scores(self, c: ScoreConfig, mask: np.ndarray | None = None) -> np.ndarray:
        """The overall rule score of each item (of the ``mask``ed ones when given)."""
        f = self.features(c)
        return combine(f if mask is None else _subset(f, mask), c)["score"]


def search(
    scorer: Scorer,
    judge: np.ndarray,
    fit: np.ndarray,
    params: dict[str, Any],
    callbacks: list[Any] | None = None,
) -> tuple[ScoreConfig, float, int]:
    """``(best config, its fit Spearman, trials)``: TPE over :func:`suggest`'s space, starting from
    ``HARDENED`` and ``PAPER_DEFAULT``, maximising the Spearman of rule score and ``judge`` on the
    ``fit`` items (no other grade is read)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y = np.asarray(judge, dtype=float)[fit]
    sampler = optuna.samplers.TPESampler(
        seed=int(params["seed"]), n_startup_trials=int(params["n_startup_trials"])
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for start in (HARDENED, PAPER_DEFAULT):
        study.enqueue_trial(_as_params(start))
    study.optimize(
        lambda t: _spearman(scorer.scores(suggest(t), fit), y),
        n_trials=int(params["n_trials"]),
        callbacks=callbacks or [],
    )
    best = suggest(optuna.trial.FixedTrial(study.best_params))
    return best, float(study.best_value), len(study.trials)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman of each row pair of two (B, m) matrices (average ranks for ties); NaN where a
    row is constant."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    return np.divide((rx * ry).sum(axis=1), den, out=np.full(len(x), np.nan), where=den > 0)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (as :func:`scipy.stats.kendalltau`) of each row pair of two (B, m)
    matrices; NaN where a row is constant."""
    out = np.full(len(x), np.nan)
    for lo in range(0, len(x), 64):  # (64, m, m) sign matrices at a time
        sx = np.sign(x[lo : lo + 64, :, None] - x[lo : lo + 64, None, :]).astype(np.int8)
        sy = np.sign(y[lo : lo + 64, :, None] - y[lo : lo + 64, None, :]).astype(np.int8)
        num = (sx.astype(np.int32) * sy).sum(axis=(1, 2))
        den = np.sqrt((sx != 0).sum(axis=(1, 2)).astype(float) * (sy != 0).sum(axis=(1, 2)).astype(float))
        out[lo : lo + 64] = np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)
    return out


def _resampled(rows: Any, a: np.ndarray, b: np.ndarray) -> stats.Metric:
    """A rank correlation (``rows``: :func:`_spearman_rows` or :func:`_kendall_rows`) as a
    :mod:`wafersage.evaluation.stats` metric of resampling counts (B, n): each row draws item i
    ``w[i]`` times; a resample where either side is constant gives NaN (left out of the interval)."""

    def metric(w: np.ndarray) -> np.ndarray:
        counts = np.rint(w).astype(int)
        idx = np.stack([np.repeat(np.arange(len(a)), c) for c in counts])  # each row sums to n
        return rows(a[idx], b[idx])

    return metric


def _r(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def rank_agreement(
    scores: dict[str, np.ndarray], grades: np.ndarray, n_boot: int, seed: int, confidence: float = 0.95
) -> dict[str, Any]:
    """Spearman and Kendall (tau-b) of each config's ``scores`` with ``grades``, each with a
    percentile-bootstrap interval over the items (the same seeded resamples for every config), and
    the paired difference of the first config's Spearman minus each other's (``spearman_gain_vs_<name>``,
    same resamples). The first config's keys carry no suffix (``spearman_heldout``), the others
    ``_<name>``."""
    grades = np.asarray(grades, dtype=float)
    n = len(grades)
    out: dict[str, Any] = {"items": n}
    first = next(iter(scores))
    for name, s in scores.items():
        sfx = "" if name == first else f"_{name}"
        for stat, fn in (("spearman", _spearman_rows), ("kendall", _kendall_rows)):
            r = stats.ci(_resampled(fn, s, grades), n, n_boot, seed, confidence)
            out[f"{stat}_heldout{sfx}"] = _r(r["value"])
            out[f"{stat}_heldout{sfx}_ci"] = {"low": _r(r["ci_low"]), "high": _r(r["ci_high"])}
        if name != first:
            d = stats.paired_diff(
                _resampled(_spearman_rows, scores[first], grades),
                _resampled(_spearman_rows, s, grades),
                n,
                n_boot,
                seed,
                confidence,
            )
            out[f"spearman_gain_vs_{name}"] = {
                "diff": _r(d["diff"]),
                "low": _r(d["ci_low"]),
                "high": _r(d["ci_high"]),
            }
    return out


def external_alignment(
    ext: ExternalSet,
    params: dict[str, Any],
    reference_fitted: ScoreConfig | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[ScoreConfig, dict[str, Any]]:
    """Fit the rule score on the external items' fit half (split by wafer) and report on the
    held-out half: ``(externally fitted config, the external.* metrics)``. Comparisons on the same
    held-out items: ``reference_fitted`` (when given), ``PAPER_DEFAULT``, ``HARDENED``. ``params``:
    the validated ``align`` section."""
    seed = int(params["seed"])
    held = heldout_mask(pd.Series(ext.wafer_ids), float(params["heldout_fraction"]), seed)
    if held.all() or not held.any():
        raise WaferSageError(ext.path, "a fold of the external items is empty", "need more wafers")
    fit = ~held
    scorer = Scorer(ext.items)
    best, fit_value, n_trials = search(scorer, ext.grades, fit, params, callbacks)
    configs = {"external_fitted": best}
    if reference_fitted is not None:
        configs["reference_fitted"] = reference_fitted
    configs.update({"paper_default": PAPER_DEFAULT, "hardened": HARDENED})
    n_boot = int(params["n_boot"])
    model = ext.sources == "model"
    report: dict[str, Any] = {
        "spearman_fit": _r(fit_value),
        "n_trials": n_trials,
    }
    for key, mask in (("all", held), ("model_answers", held & model)):
        part = rank_agreement(
            {k: scorer.scores(c, mask) for k, c in configs.items()}, ext.grades[mask], n_boot, seed
        )
        part.pop("items")
        if key == "all":
            report.update(part)
        else:
            report["model_answers"] = {"items": int(mask.sum()), **part}
    report["items"] = {
        "total": len(ext),
        "fit": int(fit.sum()),
        "heldout": int(held.sum()),
        "heldout_model": int((held & model).sum()),
        "wafers_fit": len(set(ext.wafer_ids[fit])),
        "wafers_heldout": len(set(ext.wafer_ids[held])),
    }
    return best, report


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
    """Search, evaluate on the held-out fold, write the reward config, metrics and scatter data
    (and, with ``align.external``, fit and measure against the external judge too)."""
    params = validated("align", params)
    fit_on = params["fit_on"]
    ext_path = Path(params["external"]) if params["external"] else None
    ext = read_external(ext_path) if ext_path is not None else None  # bad input: nothing written
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
    seed = int(params["seed"])
    held = heldout_mask(df["wafer_id"], float(params["heldout_fraction"]), seed)
    if held.all() or not held.any():
        raise WaferSageError(pool_path, "a fold is empty", "need more wafers in the pool")
    fit = ~held
    scorer = Scorer(items)
    inputs: dict[str, str | Path] = {"pool": pool_path, "scores": scores_path}
    if ext_path is not None:
        inputs["external"] = ext_path

    with stage_run("align", params, inputs=inputs) as mlflow:
        ref_best, ref_fit, n_trials = search(scorer, judge, fit, params, [MlflowTrialCallback(mlflow)])
        external: dict[str, Any] | None = None
        best, fit_value = ref_best, ref_fit
        if ext is not None:
            ext_best, external = external_alignment(
                ext,
                params,
                reference_fitted=ref_best,
                callbacks=[MlflowTrialCallback(mlflow, "external_spearman_fit", prefix="external-")],
            )
            external = {"file": str(ext_path), "md5": file_md5(ext_path), "fit_on": fit_on, **external}
            if fit_on == "external":
                best, fit_value, n_trials = ext_best, float(external["spearman_fit"]), external["n_trials"]
        s_best = scorer.scores(best, held)
        all_scores = scorer.scores(best)
        f_held = _subset(scorer.features(PAPER_DEFAULT), held)
        text_only = (f_held.bleu + f_held.rouge) / 2
        result = {
            "spearman_heldout": _spearman(s_best, judge[held]),
            "kendall_heldout": float(kendalltau(s_best, judge[held])[0]),
            "spearman_paper_default": _spearman(scorer.scores(PAPER_DEFAULT, held), judge[held]),
            "spearman_bleu_rouge": _spearman(text_only, judge[held]),
            "dead_group_rate": dead_group_rate(
                all_scores,
                df["pair_id"].to_numpy(),
                int(params["group_size"]),
                int(params["dead_groups"]),
                seed,
            ),
            "rule_scores_per_s": throughput(items, best, int(params["throughput_batch"]), seed),
        }
        result = {k: round(v, 4) for k, v in result.items()}
        meta: dict[str, Any] = {
            "spearman_fit": round(fit_value, 4),
            "n_trials": n_trials,
            "items": len(df),
            "heldout_items": int(held.sum()),
        }
        if fit_on == "external":  # the default config stays byte-identical whatever align.external is
            meta.update({"fit_on": "external", "external_md5": external["md5"]})
        body: dict[str, Any] = {**result, "reference_judge_note": REFERENCE_JUDGE_NOTE}
        if external is not None:
            body["external"] = external
        plot = pd.DataFrame(
            {
                "item_id": df["item_id"],
                "variant": df["variant"],
                "fold": np.where(held, "heldout", "fit"),
                "rule_score": np.round(all_scores, 4),
                "judge_score": np.round(judge / 10, 4),
            }
        )
        outputs = ((config_out, False), (metrics, False), (scatter, False))
        with atomic_outputs(*outputs) as (tmp_config, tmp_metrics, tmp_scatter):
            cfgmod.save(best, tmp_config, extra=meta)
            tmp_metrics.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            plot.to_csv(tmp_scatter, index=False)
        numeric = {
            k: float(v)
            for k, v in flatten({**result, "external": external or {}}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        mlflow.log_metrics({**numeric, "spearman_fit": meta["spearman_fit"]})
        mlflow.log_artifact(str(config_out))
    return {**result, **meta, **({"external": external} if external is not None else {})}
