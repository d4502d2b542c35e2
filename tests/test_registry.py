"""register + promote with the MLflow registry: the promotion rule both ways (a worse challenger is
not promoted), the pyfunc loaded back from ``models:/<name>@champion`` answers, tags and links."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_model import build_tiny_model

from wafersage.errors import WaferSageError
from wafersage.registry import decide

N = 60


def items(
    shift: float = 0.0, seed: int = 0, model: str = "sft", flip: int = 0, reward: str = "cfg-a"
) -> pd.DataFrame:
    """Per-item evaluation rows; ``shift`` moves every rule score, ``flip`` type answers made wrong,
    ``reward`` the md5 of the reward config that scored them."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.7, N)
    truth = ["Center", "Donut", "Scratch"] * (N // 3)
    pred = [("Donut" if i < flip else t) for i, t in enumerate(truth)]
    return pd.DataFrame(
        {
            "model": model,
            "item_id": [f"pair-{i:03d}" for i in range(N)],
            "rule_score": np.clip(base + shift, 0, 1),
            "judge_score": np.clip(10 * (base + shift), 0, 10),
            "is_type": True,
            "truth": truth,
            "pred": pred,
            "reward_md5": reward,
        }
    )


def test_better_challenger_is_promoted_worse_and_tied_are_not():
    champ = items()
    better = decide(items(0.05), champ, {"metric": "rule_score"})
    assert better["promote"] and better["ci_low"] > 0 and better["diff"] == pytest.approx(0.05, abs=1e-3)
    worse = decide(items(-0.05), champ, {"metric": "rule_score"})
    assert not worse["promote"] and worse["ci_high"] < 0
    tied = decide(items(0.0), champ, {"metric": "rule_score"})
    assert not tied["promote"] and tied["diff"] == 0
    margin = decide(items(0.05), champ, {"metric": "rule_score", "margin": 0.1})
    assert not margin["promote"]  # wins, but not by the margin
    f1 = decide(items(flip=0), items(flip=20), {"metric": "type_macro_f1"})
    assert f1["promote"] and f1["challenger_value"] == 1.0 and f1["champion_value"] < 0.8


def test_a_rule_score_gate_needs_one_reward_config():
    better = items(0.05, reward="cfg-b")
    with pytest.raises(WaferSageError, match="different reward configs"):
        decide(better, items(), {"metric": "rule_score"})
    legacy = items().drop(columns="reward_md5")  # scored before the column existed: config unknown
    with pytest.raises(WaferSageError, match="different reward configs"):
        decide(better, legacy, {"metric": "rule_score"})
    assert decide(items(flip=0, reward="cfg-b"), items(flip=20), {})["promote"]  # type F1: no reward


def test_first_model_floor_and_bad_params():
    assert decide(items(), None, {})["promote"]  # no champion, no floor: promote
    assert not decide(items(flip=20), None, {"first_floor": 0.9})["promote"]  # type macro-F1 by default
    assert decide(items(flip=20), None, {"first_floor": 0.2})["promote"]
    assert not decide(items(), None, {"metric": "rule_score", "first_floor": 0.9})["promote"]
    with pytest.raises(WaferSageError, match="promote.metric"):
        decide(items(), None, {"metric": "bleu"})
    with pytest.raises(WaferSageError, match="unknown key"):
        decide(items(), None, {"metrc": "rule_score"})
    other = items()
    other["item_id"] = "other-" + other["item_id"]
    with pytest.raises(WaferSageError, match="share no evaluated items"):
        decide(items(), other, {})


@pytest.fixture
def registry_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = build_tiny_model(tmp_path / "models" / "sft", stage="sft")
    return tmp_path, model


def _register(
    root: Path, model: Path, val: pd.DataFrame, test: pd.DataFrame | None = None, name: str = "wafer-test"
) -> dict:
    """Register ``model`` with ``val`` as its val (selection) items and ``test`` (default: the same
    rows) as its test items."""
    from wafersage.stages import register

    path, val_path = root / "items.parquet", root / "val_items.parquet"
    (val if test is None else test).to_parquet(path, index=False)
    val.to_parquet(val_path, index=False)
    metrics = root / "metrics.json"
    metrics.write_text(json.dumps({"sft": {"rule_score": float(val["rule_score"].mean())}}))
    params = {"model_name": name, "max_new_tokens": 4}
    return register.run(
        params, model, path, val_path, metrics, root / "registered.json", lock=root / "dvc.lock"
    )


@pytest.mark.slow
def test_register_promote_and_load_the_champion(registry_env):
    import mlflow
    from mlflow import MlflowClient

    from wafersage.registry import load_pyfunc, promote
    from wafersage.stages.register import input_example
    from wafersage.tracking import stage_run

    root, model = registry_env
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  vqa:\n    outs:\n    - path: data/vqa\n      md5: abc123.dir\n"
    )
    with stage_run("sft", {"x": 1}):
        pass
    sft_run = mlflow.search_runs(experiment_names=["wafersage"], output_format="list")[0].info.run_id
    r1 = _register(root, model, items())
    assert r1["version"] == 1 and r1["linked_runs"]["sft"] == sft_run
    client = MlflowClient()
    v1 = client.get_model_version_by_alias("wafer-test", "challenger")
    assert v1.tags["wafersage.run.sft"] == sft_run and v1.tags["dvc.data/vqa.md5"] == "abc123.dir"
    assert v1.tags["model.source"] == "sft" and len(v1.tags["model.md5"]) == 32

    assert promote("wafer-test", {}, dry_run=True)["promote"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # a dry run moves nothing
        client.get_model_version_by_alias("wafer-test", "champion")
    assert promote("wafer-test", {})["promote"]
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 1

    champion = load_pyfunc("models:/wafer-test@champion")
    out = champion.predict(input_example(64, 0))
    assert list(out.columns) == ["answer"] and isinstance(out["answer"].iloc[0], str)
    from wafersage.serving.predictor import load_predictor  # what `ask`/`serve` use by default

    pred = load_predictor(None, "wafer-test", max_new_tokens=4)
    assert pred.image_size == 64 and pred.max_new_tokens == 4
    from PIL import Image

    assert isinstance(pred.answer([Image.new("RGB", (64, 64))], ["What defect?"])[0], str)

    rule = {"metric": "rule_score"}
    _register(root, model, items(-0.05), test=items(0.3))  # worse on val (better on test): stays out
    d = promote("wafer-test", rule)
    assert not d["promote"] and d["champion_version"] == 1 and d["ci_high"] < 0
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 1
    v2 = client.get_model_version("wafer-test", "2")
    assert v2.tags["promotion.decision"] == "rejected" and float(v2.tags["promotion.ci_low"]) < 0

    _register(root, model, items(0.05), test=items(-0.3))  # better on val: replaces the champion
    d = promote("wafer-test", rule)
    assert d["promote"] and d["champion_version"] == 1
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 3
    assert client.get_model_version("wafer-test", "3").tags["promotion.decision"] == "promoted"


def test_promote_without_a_challenger_is_a_one_line_error(tmp_path, monkeypatch):
    from wafersage.registry import load_pyfunc, promote

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(WaferSageError, match="challenger"):
        promote("nothing-here", {})
    with pytest.raises(WaferSageError, match="cannot load the registered model"):
        load_pyfunc("models:/nothing-here@champion")
