"""Promotion (``wafersage promote``): the registered model's ``challenger`` replaces the ``champion``
only if the lower bound of the paired-bootstrap interval of ``challenger - champion`` on the gate
metric (``promote.metric``, type macro-F1 by default, not GSPO's training reward) is above
``promote.margin``, paired on the **val** items both were evaluated on (``evaluation/val_items.parquet``:
selection never sees the test split). A rule-score gate needs both versions scored under one reward
config (same ``reward_md5``).
With no champion yet, the challenger is promoted when ``promote.first_floor`` is null, or when its
metric reaches that floor. The decision and its numbers become tags ``promotion.*`` on the
challenger's model version (not with ``--dry-run``, which changes nothing).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from wafersage.config import GATE_METRICS, validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.evaluation import stats
from wafersage.registry.loading import CHALLENGER, CHAMPION, SELECTION_ARTIFACT
from wafersage.tracking import setup


def labels_of(text: Any) -> set[str]:
    """A ``+``-joined label string (the items table's ``truth`` / ``pred``) as a set."""
    return {s for s in str(text or "").split("+") if s}


def item_metric(items: pd.DataFrame, name: str) -> Any:
    """The bootstrap metric (see :mod:`wafersage.evaluation.stats`) ``name`` over ``items``."""
    if name in ("rule_score", "judge_score"):
        return stats.mean_metric(items[name].astype(float).to_numpy())
    truth = [
        labels_of(t) if bool(k) else set() for t, k in zip(items["truth"], items["is_type"], strict=True)
    ]
    pred = [labels_of(p) for p in items["pred"]]
    if name == "type_macro_f1":
        return stats.macro_f1_metric(truth, pred)
    if name == "type_accuracy":
        return stats.accuracy_metric(truth, pred)
    raise WaferSageError("params.yaml", "promote.metric must be one of " + "/".join(GATE_METRICS), name)


def decide(challenger: pd.DataFrame, champion: pd.DataFrame | None, params: dict[str, Any]) -> dict[str, Any]:
    """The promotion decision from the two versions' per-item evaluation tables (``item_id`` keyed)."""
    p = validated("promote", params)
    metric, margin = p["metric"], float(p["margin"])
    conf, n_boot, seed = float(p["confidence"]), int(p["n_boot"]), int(p["seed"])
    value = stats.ci(item_metric(challenger, metric), len(challenger), n_boot, seed, conf)
    out: dict[str, Any] = {"metric": metric, "margin": margin, "challenger_value": value["value"]}
    if champion is None:
        floor = p["first_floor"]
        ok = floor is None or value["value"] >= float(floor)
        rule = (
            "no champion: promote unconditionally"
            if floor is None
            else f"no champion: value >= floor {floor}"
        )
        return {**out, "promote": bool(ok), "rule": rule, "n_items": len(challenger)}
    both = challenger.merge(champion, on="item_id", suffixes=("", "_champion"))
    if both.empty:
        raise WaferSageError(
            SELECTION_ARTIFACT,
            "challenger and champion share no evaluated items",
            "evaluate both on one val split",
        )
    if metric == "rule_score":
        configs = {*challenger.get("reward_md5", [None]), *champion.get("reward_md5", [None])}
        if len(configs) != 1 or None in configs:
            raise WaferSageError(
                SELECTION_ARTIFACT,
                "challenger and champion were rule-scored under different reward configs",
                "gate on type_macro_f1 or re-evaluate both with one reward config",
            )
    champ = both[[c for c in both.columns if c.endswith("_champion")]].rename(
        columns=lambda c: c[: -len("_champion")]
    )
    champ["item_id"] = both["item_id"]
    d = stats.paired_diff(
        item_metric(both, metric), item_metric(champ, metric), len(both), n_boot, seed, conf
    )
    ok = d["ci_low"] > margin
    return {
        **out,
        "champion_value": float(item_metric(champ, metric)(np.ones((1, len(both))))[0]),
        "diff": d["diff"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
        "confidence": conf,
        "promote": bool(ok),
        "rule": f"ci_low of paired diff > margin {margin}",
        "n_items": len(both),
    }


def version_items(client: Any, version: Any) -> pd.DataFrame:
    """The per-item val (selection) evaluation table logged with a model version's run."""
    import mlflow

    if not version.run_id:
        raise WaferSageError(f"version {version.version}", "model version has no run (no evaluation items)")
    try:
        local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=SELECTION_ARTIFACT)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise WaferSageError(
            f"run {version.run_id}", "model version lacks its val evaluation items", type(exc).__name__
        ) from None
    return read_parquet(local, "val evaluation items of the model version")


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The version holding ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(model_name: str, params: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Apply the promotion rule to ``model_name``'s challenger; move ``champion`` unless dry run."""
    from mlflow import MlflowClient

    setup()
    client = MlflowClient()
    chal = alias_version(client, model_name, CHALLENGER)
    if chal is None:
        raise WaferSageError(
            model_name, "no model version with alias 'challenger'", "run `dvc repro register`"
        )
    champ = alias_version(client, model_name, CHAMPION)
    base = {"model_name": model_name, "challenger_version": int(chal.version), "dry_run": dry_run}
    if champ is not None and champ.version == chal.version:
        return {**base, "champion_version": int(champ.version), "promote": False, "rule": "already champion"}
    decision = decide(version_items(client, chal), version_items(client, champ) if champ else None, params)
    decision = {**base, "champion_version": int(champ.version) if champ else None, **decision}
    if not dry_run:
        tags = {f"promotion.{k}": str(v) for k, v in decision.items() if k not in ("model_name", "dry_run")}
        tags["promotion.decision"] = "promoted" if decision["promote"] else "rejected"
        tags["promotion.time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for k, v in tags.items():
            client.set_model_version_tag(model_name, chal.version, k, v)
        if decision["promote"]:
            client.set_registered_model_alias(model_name, CHAMPION, chal.version)
    return decision
