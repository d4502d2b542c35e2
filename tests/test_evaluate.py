"""The evaluate stage on real pipeline data (describe -> rubrics -> vqa on synthetic wafers) with
three tiny models: metrics with CIs, paired differences, per-item evidence, plot data, the
calibration-pool rows and the self-contained HTML report; and the bootstrap statistics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_model import SIZE, build_tiny_model

from wafersage.errors import WaferSageError
from wafersage.evaluation import stats
from wafersage.tracking import file_md5

FAST = {
    "max_pairs": 30,
    "generation_batch_size": 16,
    "max_new_tokens": 4,
    "n_boot": 200,
    "gallery": 6,
    "pool_pairs": 12,
    "select_pairs": 20,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from wafersage.score.config import HARDENED, save
    from wafersage.stages import describe, rubrics, vqa
    from wafersage.wafers.rawtable import write_raw
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    tmp = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    mp.chdir(tmp)
    write_raw(generate(SyntheticConfig(n_wafers=80, seed=5)), tmp / "raw.parquet")
    describe.run(
        {"labels_from": "raw"}, tmp / "raw.parquet", None, tmp / "d.jsonl", tmp / "dm.json", render_size=SIZE
    )
    rubrics.run({}, tmp / "d.jsonl", tmp / "r.jsonl", tmp / "rm.json")
    vqa.run({"seed": 0}, tmp / "r.jsonl", tmp / "raw.parquet", tmp / "vqa", tmp / "vm.json", render_size=SIZE)
    save(HARDENED, tmp / "reward.json")
    models = [
        build_tiny_model(tmp / "models" / n, seed=s, stage=n)
        for n, s in (("base", 1), ("sft", 2), ("gspo", 3))
    ]
    yield tmp, models
    mp.undo()


@pytest.fixture(scope="module")
def evaluated(data):
    """``wafersage evaluate`` through the CLI (its option defaults are dvc.yaml's paths, relative to cwd)."""
    import yaml
    from typer.testing import CliRunner

    from wafersage.cli import app

    tmp, models = data
    (tmp / "params.yaml").write_text(yaml.safe_dump({"evaluate": FAST, "judge": {"judge": "reference"}}))
    args = [
        "evaluate",
        "--vqa",
        "vqa",
        "--rubrics",
        "r.jsonl",
        "--reward",
        "reward.json",
        "--pool",
        "pool.parquet",
    ]
    for m in models:
        args += ["--model", str(m)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "evaluate: base rule" in r.output
    return tmp, json.loads((tmp / "reports/evaluate/metrics.json").read_text())


@pytest.mark.slow
def test_metrics_have_every_model_cis_and_paired_differences(evaluated):
    """The metrics are the items' scores: means per model, and a paired bootstrap of gspo - sft
    recomputed here from items.parquet with numpy (an unpaired or mis-seeded interval differs)."""
    tmp, m = evaluated
    assert json.loads((tmp / "reports/evaluate/metrics.json").read_text()) == m
    assert set(m) == {"base", "sft", "gspo", "gspo_vs_sft", "sft_vs_base", "unseen_phrasing"}
    items = pd.read_parquet(tmp / "reports/evaluate/items.parquet")
    by = {k: g.set_index("item_id").sort_index() for k, g in items.groupby("model")}
    for model in ("base", "sft", "gspo"):
        assert m[model]["n"] == 30 == len(by[model]) and m[model]["answers_per_s"] > 0
        for k in ("rule_score", "judge_score"):
            assert m[model][k] == pytest.approx(by[model][k].mean(), abs=1e-4)
            varies = by[model][k].nunique() > 1  # a bootstrap interval has width iff the items differ
            assert (m[model]["ci"][k]["low"] < m[model]["ci"][k]["high"]) == varies
    a, b = by["gspo"]["rule_score"].to_numpy(), by["sft"]["rule_score"].to_numpy()
    w = np.random.default_rng(0).multinomial(len(a), np.full(len(a), 1 / len(a)), size=FAST["n_boot"])
    diffs = (w @ a - w @ b) / w.sum(axis=1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    d = m["gspo_vs_sft"]["rule_score"]
    assert d["ci_low"] == pytest.approx(low, abs=1e-4) and d["ci_high"] == pytest.approx(high, abs=1e-4)
    assert d["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-4)


@pytest.mark.slow
def test_items_pool_plots_and_breakdown(evaluated):
    from wafersage.score.calibration import POOL_COLUMNS

    tmp, _ = evaluated
    items = pd.read_parquet(tmp / "reports/evaluate/items.parquet")
    assert len(items) == 90 and items.groupby("model")["item_id"].apply(frozenset).nunique() == 1
    assert items["is_type"].any() and set(items.loc[items["is_type"], "truth"]) - {""}
    pool = pd.read_parquet(tmp / "pool.parquet")
    n_pairs = pool["pair_id"].nunique()  # up to pool_pairs val pairs (stratified), the same for each model
    assert list(pool.columns) == list(POOL_COLUMNS) and 8 <= n_pairs <= 12 and len(pool) == 3 * n_pairs
    assert set(pool["variant"]) == {"model"} and set(pool["source"]) == {
        "model:base",
        "model:sft",
        "model:gspo",
    }
    assert pd.read_parquet(tmp / "reports/evaluate/real_val_answers.parquet").empty  # synthetic ingest
    val_pairs = set(pd.read_parquet(tmp / "vqa/val.parquet")["pair_id"])
    assert set(pool["pair_id"]) <= val_pairs  # the pool never sees a test pair
    assert not set(pool["pair_id"]) & set(items["item_id"])
    chosen = pd.read_parquet(tmp / "reports/evaluate/val_items.parquet")  # promotion's evidence: val only
    assert len(chosen) == 3 * 20 and set(chosen["item_id"]) <= val_pairs
    assert chosen.groupby("model")["item_id"].apply(frozenset).nunique() == 1
    assert list(chosen.columns) == list(items.columns) and chosen["reward_md5"].nunique() == 1
    assert chosen["reward_md5"].iloc[0] == items["reward_md5"].iloc[0] == file_md5(tmp / "reward.json")
    conf = pd.read_csv(tmp / "reports/evaluate/confusion.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == int(
        items[items.model == "gspo"].is_type.sum()
    )
    f1 = pd.read_csv(tmp / "reports/evaluate/per_class_f1.csv")
    assert {"class", "f1"} <= set(f1.columns) and f1["f1"].between(0, 1).all()
    detail = json.loads((tmp / "reports/evaluate/breakdown.json").read_text())
    cats = detail["sft"]["category"]
    assert sum(c["n"] for c in cats.values()) == 30 and "type" in cats


@pytest.mark.slow
def test_report_is_self_contained_with_gallery_worst_first(evaluated):
    tmp, m = evaluated
    text = (tmp / "reports/index.html").read_text()
    assert text.count('src="data:image/png;base64,') >= 3 + 6  # plots + gallery images
    assert not re.search(r'(src|href)="(https?:)?//', text)  # no external assets
    for model in ("base", "sft", "gspo"):
        assert f"<td>{model}</td>" in text
    assert text.count("class=card") == 6
    items = pd.read_parquet(tmp / "reports/evaluate/items.parquet")
    worst = items[items.model == "gspo"].sort_values(["rule_score", "judge_score", "item_id"]).iloc[0]
    assert text.index(worst["wafer_id"]) < text.index("</html>")
    first_card = text[text.index("class=card") :]
    assert worst["question"].replace("'", "&#x27;") in first_card[:3000]


@pytest.mark.slow
def test_missing_rubric_is_a_one_line_error_with_no_output(data, tmp_path):
    from wafersage.stages import evaluate

    tmp, models = data
    (tmp_path / "r.jsonl").write_text((tmp / "r.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(WaferSageError, match="test wafer has no rubric"):
        evaluate.run(
            FAST,
            {},
            tmp / "vqa",
            tmp_path / "r.jsonl",
            tmp / "reward.json",
            models[:1],
            tmp_path / "out",
            tmp_path / "index.html",
            tmp_path / "pool.parquet",
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "index.html").exists()
    with pytest.raises(WaferSageError, match="unknown key"):
        evaluate.run(
            {"max_pair": 3},
            {},
            tmp / "vqa",
            tmp / "r.jsonl",
            tmp / "reward.json",
            models,
            tmp_path / "out",
            tmp_path / "index.html",
            tmp_path / "pool.parquet",
        )


@pytest.mark.slow
def test_absorbed_outputs_join_the_next_judge_pool(evaluated, tmp_path):
    from typer.testing import CliRunner

    from wafersage.cli import app
    from wafersage.stages import judge

    tmp, _ = evaluated
    folder = tmp_path / "calibration"
    r = CliRunner().invoke(app, ["absorb", "--outputs", str(tmp / "pool.parquet"), "--into", str(folder)])
    assert r.exit_code == 0 and "absorb: wrote" in r.output, r.output
    files = list(folder.glob("model_outputs-*.parquet"))
    assert len(files) == 1
    r = CliRunner().invoke(app, ["absorb", "--outputs", str(tmp / "pool.parquet"), "--into", str(folder)])
    assert r.exit_code == 0 and "already holds" in r.output and len(list(folder.glob("*.parquet"))) == 1
    stale = pd.read_parquet(files[0]).head(2).assign(item_id=["old:1", "old:2"], pair_id=["gone#1", "gone#2"])
    stale.to_parquet(folder / "older.parquet")
    args = ({"n_pairs": 10}, tmp / "vqa", tmp / "r.jsonl")
    m = judge.run(*args, tmp_path / "pool.parquet", tmp_path / "s.parquet", tmp_path / "m.json", folder)
    n_out = len(pd.read_parquet(tmp / "pool.parquet"))
    assert m["absorbed_items"] == n_out and m["absorbed_stale"] == 2
    pool = pd.read_parquet(tmp_path / "pool.parquet")
    scores = pd.read_parquet(tmp_path / "s.parquet")
    assert (pool["variant"] == "model").sum() == n_out and len(scores) == len(pool)
    assert (
        scores.set_index("item_id").loc[pool.loc[pool.variant == "model", "item_id"], "score"].notna().all()
    )
    plain = judge.run(*args, tmp_path / "p2.parquet", tmp_path / "s2.parquet", tmp_path / "m2.json")
    assert plain["items"] == m["items"] - n_out and plain["absorbed_items"] == 0


@pytest.mark.slow
def test_unseen_phrasings_are_answered_and_scored_beside_the_seen_ones(data, tmp_path):
    from wafersage.annotation.vqa import parse_question
    from wafersage.evaluation.unseen_phrasing import load_unseen

    tmp, models = data
    m = evaluate_run(data, tmp_path, {**FAST, "pool_pairs": 0, "unseen_pairs": 12}, models[1:])
    up = m["unseen_phrasing"]
    assert up["n"] == 12 and set(up) == {"n", "n_type", "phrasings", "sft", "gspo"} and up["phrasings"] >= 6
    for model in ("sft", "gspo"):
        u = up[model]
        for k in ("type_macro_f1", "rule_score"):
            assert k in u and k in u["seen"] and k in u["ratio"] and k in u["diff"]
        assert 0 <= u["rule_score"] <= 1 and u["ci"]["rule_score"]["low"] <= u["rule_score"] + 1e-9
        if u["seen"]["rule_score"]:
            assert u["ratio"]["rule_score"] == pytest.approx(
                u["rule_score"] / u["seen"]["rule_score"], rel=0.05
            )
        diff = u["diff"]["rule_score"]["diff"]
        assert diff == pytest.approx(u["rule_score"] - u["seen"]["rule_score"], abs=2e-4)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["unseen_phrasing"] == up
    kinds = json.loads((tmp_path / "out" / "breakdown.json").read_text())["unseen_phrasing"]["sft"]
    assert sum(k["n"] for k in kinds.values()) == 12 and set(kinds) <= set(load_unseen())
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["question"].map(parse_question).notna().all()  # the seen items keep their wording
    off = evaluate_run(data, tmp_path / "off", {**FAST, "pool_pairs": 0, "unseen_pairs": 0}, models[2:])
    assert "unseen_phrasing" not in off


def evaluate_run(data, out: Path, params: dict, models: list) -> dict:
    """``evaluate.run`` on the module's data, writing under ``out``."""
    from wafersage.stages import evaluate

    tmp, _ = data
    return evaluate.run(
        params,
        {},
        tmp / "vqa",
        tmp / "r.jsonl",
        tmp / "reward.json",
        models,
        out / "out",
        out / "index.html",
        out / "pool.parquet",
    )


def test_absorbing_bad_outputs_is_a_one_line_error(tmp_path):
    from wafersage.score.calibration import absorb

    pd.DataFrame({"item_id": ["a"], "answer": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(WaferSageError, match="pool rows miss columns"):
        absorb(tmp_path / "bad.parquet", tmp_path / "calibration")
    with pytest.raises(WaferSageError, match="model outputs not found"):
        absorb(tmp_path / "none.parquet", tmp_path / "calibration")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(WaferSageError, match="not a readable Parquet"):
        absorb(tmp_path / "junk.parquet", tmp_path / "calibration")
    assert not (tmp_path / "calibration").exists()


def test_real_val_resolution(tmp_path):
    from wafersage.evaluation.real_val import resolve

    (tmp_path / "train_1_split.pkl.xz").write_bytes(b"")
    (tmp_path / "val_data.pkl.xz").write_bytes(b"")
    train = str(tmp_path / "train_1_split.pkl.xz")
    assert resolve("auto", {"source": "synthetic"}) is None
    assert resolve("off", {"source": "wm811k-processed", "path": [train]}) is None
    got = resolve("auto", {"source": "wm811k-processed", "path": [train]})
    assert got.source == "wm811k-processed" and got.path == tmp_path / "val_data.pkl.xz"
    assert (
        resolve("auto", {"source": "wm811k-processed", "path": str(tmp_path / "nowhere" / "x.pkl")}) is None
    )
    with pytest.raises(WaferSageError, match="also an ingest path"):
        resolve("auto", {"source": "wm811k-processed", "path": [str(tmp_path / "val_data.pkl.xz")]})
    with pytest.raises(WaferSageError, match="inside an ingest folder"):  # the folder's loader reads val too
        resolve("auto", {"source": "wm811k-processed", "path": [str(tmp_path)]})
    with pytest.raises(WaferSageError, match="inside an ingest folder"):
        resolve(
            {"source": "wm811k-processed", "path": str(tmp_path / "val_data.pkl.xz")},
            {"source": "wm811k-processed", "path": str(tmp_path)},
        )
    with pytest.raises(WaferSageError, match="real_val.path not found"):
        resolve({"source": "wm811k", "path": str(tmp_path / "missing.pkl")}, {})
    with pytest.raises(WaferSageError, match="must be auto, off or"):
        resolve("yes", {})
    with pytest.raises(WaferSageError, match="real_val.source must be one of"):
        resolve({"source": "png-folder", "path": str(tmp_path / "val_data.pkl.xz")}, {})


@pytest.mark.slow
def test_real_val_maps_are_answered_and_scored(data, tmp_path, shared_data):
    from wafersage.stages import evaluate

    tmp, models = data
    real = {"source": "wm811k-processed", "path": str(shared_data / "wm811k" / "val_data.pkl.xz")}
    m = evaluate.run(
        {**FAST, "pool_pairs": 0, "real_val": real, "real_val_max": 45},
        {},
        tmp / "vqa",
        tmp / "r.jsonl",
        tmp / "reward.json",
        models[1:],
        tmp_path / "out",
        tmp_path / "index.html",
        tmp_path / "pool.parquet",
        raw=tmp / "raw.parquet",
    )
    rv = m["real_val"]
    assert rv["n"] == 45 and set(rv) == {"n", "sft", "gspo", "trees", "gspo_vs_sft", "best_vs_trees"}
    detail = json.loads((tmp_path / "out" / "breakdown.json").read_text())["real_val"]
    assert detail["source"] == "wm811k-processed" and detail["question"].endswith("?")
    answers = pd.read_parquet(tmp_path / "out" / "real_val_answers.parquet")
    assert len(answers) == 135 and set(answers["model"]) == {"sft", "gspo", "trees"}
    assert answers["truth"].ne("").all()
    # the trees were fitted on the VQA train split's wafers (synthetic here) and answer by class name
    trees = answers[answers["model"] == "trees"]
    assert trees["answer"].str.endswith(".").all() and trees["pred"].ne("").all()
    per_class = detail["trees"]["per_class"]
    assert sum(c["support"] for c in per_class.values()) >= 45
    assert len(pd.read_parquet(tmp_path / "pool.parquet")) == 0


def test_bootstrap_macro_f1_matches_type_scores_and_paired_identity():
    from wafersage.evaluation.type_scoring import type_scores

    refs = ["Center", "Donut", "Scratch", "Center", "Edge-Ring", "none", "Loc", "Center"]
    preds = ["Center", "Center", "Scratch", "a donut", "edge ring", "No defect pattern.", "random", ""]
    from wafersage.annotation.answer_parser import parse_labels

    truth, pred = [parse_labels(r) for r in refs], [parse_labels(p) for p in preds]
    expected = type_scores(refs, preds)
    assert stats.ci(stats.macro_f1_metric(truth, pred), len(refs))["value"] == pytest.approx(
        expected["type_macro_f1"], abs=1e-4
    )
    assert stats.ci(stats.accuracy_metric(truth, pred), len(refs))["value"] == pytest.approx(
        expected["type_accuracy"], abs=1e-4
    )
    x = np.linspace(0, 1, 50)
    same = stats.paired_diff(stats.mean_metric(x), stats.mean_metric(x), 50)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    shifted = stats.paired_diff(stats.mean_metric(x + 0.1), stats.mean_metric(x), 50)
    assert shifted["ci_low"] == pytest.approx(0.1) and shifted["diff"] == pytest.approx(0.1)
    wide = stats.ci(stats.mean_metric(x), 50, n_boot=2000, seed=1)
    assert wide["ci_low"] < 0.5 < wide["ci_high"] and wide["ci_high"] - wide["ci_low"] == pytest.approx(
        0.16, abs=0.04
    )
    assert np.isnan(stats.ci(stats.mean_metric([np.nan, np.nan]), 2)["value"])


@pytest.mark.slow
def test_register_and_promote_commands_after_evaluate(evaluated):
    """The pipeline's tail through the CLI: register models/gspo as challenger, promote (dry run)."""
    from typer.testing import CliRunner

    from wafersage.cli import app

    tmp, m = evaluated
    (tmp / "params.yaml").write_text("register:\n  model_name: cli-test\n  max_new_tokens: 4\n")
    r = CliRunner().invoke(app, ["register", "--model", "models/gspo"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp / "reports/register/registered.json").read_text())
    assert rec["source"] == "gspo" and rec["version"] == 1 and rec["linked_runs"]["evaluate"]
    r = CliRunner().invoke(app, ["promote", "--dry-run"])
    assert r.exit_code == 0, r.output
    decision = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("{")))
    from wafersage.registry.promotion import item_metric

    val = pd.read_parquet(tmp / "reports/evaluate/val_items.parquet")
    gspo = val[val["model"] == "gspo"]
    f1 = item_metric(gspo, "type_macro_f1")(np.ones((1, len(gspo))))[0]  # on val, never test
    assert decision["promote"] and decision["dry_run"] and decision["metric"] == "type_macro_f1"
    assert decision["challenger_value"] == pytest.approx(f1, abs=1e-4) and decision["n_items"] == 20
