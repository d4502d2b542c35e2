"""describe -> rubrics -> vqa -> validate_vqa on a small synthetic set with a hand-made clean
table: schema of the outputs, the no-leak split, class names never in questions, flagged and
relabelled wafers, dead wafers, and the gate refusing leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wafersage.annotation.categories import CATEGORIES
from wafersage.annotation.phrasing import mentions_class
from wafersage.annotation.vqa import load_vqa_dataset
from wafersage.errors import WaferSageError
from wafersage.stages import describe, rubrics, validate_vqa, vqa
from wafersage.wafers.rawtable import decode_map, write_raw
from wafersage.wafers.render import DEFAULT_SIZE
from wafersage.wafers.splits import SPLITS
from wafersage.wafers.synthetic import SyntheticConfig, generate

SUITE = Path(__file__).resolve().parents[1] / "expectations" / "vqa.json"


def clean_table(
    raw: pd.DataFrame, flag: list[int], relabel: dict[int, list[str]], hard_every: int = 3
) -> pd.DataFrame:
    """A stand-in for the cleaning stage's ``data/clean/labels.parquet`` (its columns: wafer_id,
    given_labels, kept_labels, verdict keep/flag/relabel, suggested_label, tag typical/hard)."""
    n = len(raw)
    verdict = np.array(["keep"] * n, dtype=object)
    verdict[flag] = "flag"
    for i in relabel:
        verdict[i] = "relabel"
    given = [list(x) for x in raw["labels"]]
    kept = [[] if v == "flag" else g for v, g in zip(verdict, given, strict=True)]
    suggested = ["+".join(g) for g in given]
    for i, new in relabel.items():
        kept[i], suggested[i] = new, "+".join(new)
    tag = [
        None if v == "flag" else "hard" if i % hard_every == 0 else "typical" for i, v in enumerate(verdict)
    ]
    return pd.DataFrame(
        {
            "wafer_id": raw["wafer_id"],
            "given_labels": given,
            "kept_labels": kept,
            "verdict": verdict,
            "suggested_label": suggested,
            "tag": tag,
        }
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vqa")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.getbasetemp()}/mlflow_vqa.db")
    raw = generate(SyntheticConfig(n_wafers=240, seed=11))
    # a wafer labelled Center with no fail die at all
    dead = 5
    m = decode_map(raw.at[dead, "map"], raw.at[dead, "rows"], raw.at[dead, "cols"]).copy()
    m[m == 2] = 1
    raw.at[dead, "map"] = m.tobytes()
    raw.at[dead, "labels"] = ["Center"]
    # and a perfect wafer labelled none: described (yield 100%), not dropped
    m = decode_map(raw.at[6, "map"], raw.at[6, "rows"], raw.at[6, "cols"]).copy()
    m[m == 2] = 1
    raw.at[6, "map"] = m.tobytes()
    raw.at[6, "labels"] = ["none"]
    write_raw(raw, tmp / "raw.parquet")
    clean = clean_table(raw, flag=[1, 2, 3], relabel={4: ["Scratch"]})
    clean.to_parquet(tmp / "clean.parquet")
    d = describe.run(
        {"labels_from": "clean"}, tmp / "raw.parquet", tmp / "clean.parquet", tmp / "d.jsonl", tmp / "dm.json"
    )
    r = rubrics.run({}, tmp / "d.jsonl", tmp / "r.jsonl", tmp / "rm.json")
    v = vqa.run({"seed": 3}, tmp / "r.jsonl", tmp / "raw.parquet", tmp / "vqa", tmp / "vm.json")
    g = validate_vqa.run({}, tmp / "vqa", tmp / "r.jsonl", SUITE, tmp / "g.json", tmp / "docs")
    yield {"tmp": tmp, "raw": raw, "describe": d, "rubrics": r, "vqa": v, "gate": g}
    mp.undo()


def _pairs(tmp: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(tmp / "vqa" / f"{s}.parquet") for s in SPLITS], ignore_index=True)


def test_flagged_relabelled_and_dead_wafers_are_handled_and_counted(built):
    d = built["describe"]
    assert d["excluded.flagged"] == 3
    assert d["excluded.no_fail_dies_with_pattern_label"] == 1
    assert d["wafers"] == 240 - 4 and d["verdict.relabel"] == 1 and d["label_source"] == "clean"
    recs = {
        json.loads(x)["wafer_id"]: json.loads(x) for x in (built["tmp"] / "d.jsonl").read_text().splitlines()
    }
    raw = built["raw"]
    assert recs[raw.at[4, "wafer_id"]]["labels"] == ["Scratch"]
    assert recs[raw.at[0, "wafer_id"]]["tag"] == "hard" and recs[raw.at[7, "wafer_id"]]["tag"] == "typical"
    assert raw.at[1, "wafer_id"] not in recs and raw.at[5, "wafer_id"] not in recs
    assert d["no_fail_dies"] == 1
    perfect = recs[raw.at[6, "wafer_id"]]
    assert perfect["attributes"]["yield"] == 1.0 and "no failing dies" in perfect["descriptions"]["spatial"]
    pairs = _pairs(built["tmp"])
    answers = pairs[pairs["wafer_id"] == raw.at[6, "wafer_id"]]["answer"]
    assert len(answers) == 10 and (answers.str.len() > 10).all()


def test_metrics_have_exactly_the_issue_names(built, tmp_path):
    m = json.loads((built["tmp"] / "vm.json").read_text())
    assert set(m) == {"pairs", "wafers", "pairs_per_category", "pairs_per_difficulty", "attribute_accuracy"}
    assert set(m["pairs_per_category"]) == set(CATEGORIES)
    assert set(m["pairs_per_difficulty"]) == {"1", "2", "3"}
    assert {"zone", "clock_position", "distribution", "pattern_type"} <= set(m["attribute_accuracy"])
    assert m["wafers"] == 236 and sum(m["pairs_per_category"].values()) == m["pairs"]
    assert 8 * 236 <= m["pairs"] <= 10 * 236


def test_split_has_no_wafer_or_lot_leak_and_every_category(built):
    df = _pairs(built["tmp"])
    assert (df.groupby("wafer_id")["split"].nunique() == 1).all()
    assert (df.groupby("lot_id")["split"].nunique() == 1).all()
    for s in SPLITS:
        part = df[df["split"] == s]
        assert set(part["category"]) == set(CATEGORIES)
        assert set(part["difficulty"]) == {1, 2, 3}
        assert set(part["tag"]) == {"typical", "hard"}
    share = df.drop_duplicates("wafer_id")["split"].value_counts(normalize=True)
    assert 0.6 <= share["train"] <= 0.8 and 0.05 <= share["rl"] <= 0.15


def test_questions_never_name_the_class_and_claims_are_half_false(built):
    df = _pairs(built["tmp"])
    assert not any(mentions_class(q, list(v)) for q, v in zip(df["question"], df["labels"], strict=True))
    per_wafer = df.groupby("wafer_id").size()
    assert per_wafer.between(8, 10).all()
    claims = df[df["category"] == "consistency"]
    assert claims["claim_true"].mean() == 0.5
    assert claims[claims["claim_true"]]["answer"].str.startswith("Yes").all()
    assert claims[~claims["claim_true"].astype(bool)]["answer"].str.startswith("No").all()
    assert (df["answer"].str.len() > 0).all() and (df["question"].str.len() > 0).all()


def test_answers_hit_the_rubric(built):
    rubs = {}
    for line in (built["tmp"] / "r.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rubs[rec["rubric_id"]] = rec["rubric"]
    df = _pairs(built["tmp"])
    assert set(df["rubric_id"]) <= set(rubs)
    types = df[
        df["question"].str.contains("pattern|class|signature|failure type", regex=True)
        & (df["category"] == "type")
    ]
    for ans, rid in zip(types["answer"], types["rubric_id"], strict=True):
        r = rubs[rid]["defect_types"]
        if r["labels"] != ["none"]:
            assert all(h in ans for h in r["must_hit"]), (ans, r)
    for col, idx in (("spatial", "#2"), ("root_cause", "#6")):
        part = df[(df["category"] == col) & df["pair_id"].str.endswith(idx)]
        assert len(part) > 100
        for ans, rid in zip(part["answer"], part["rubric_id"], strict=True):
            hit = rubs[rid][col]["must_hit"]
            if rubs[rid]["defect_types"]["labels"] != ["none"]:
                assert all(h.lower() in ans.lower() for h in hit), (ans, hit)
    shapes = df[(df["category"] == "morphology") & df["pair_id"].str.endswith("#4")]
    for ans, rid in zip(shapes["answer"], shapes["rubric_id"], strict=True):
        m = rubs[rid]["morphology"]
        assert all(h.lower() in ans.lower() for h in m["must_hit"]), (ans, m["must_hit"])


def test_loads_with_datasets_as_images(built):
    ds = load_vqa_dataset(built["tmp"] / "vqa" / "val.parquet")
    assert type(ds.features["image"]).__name__ == "Image"
    img = ds[0]["image"]
    assert img.size == (DEFAULT_SIZE, DEFAULT_SIZE) and img.mode == "RGB"


def test_vqa_is_deterministic(built, tmp_path):
    tmp = built["tmp"]
    vqa.run({"seed": 3}, tmp / "r.jsonl", tmp / "raw.parquet", tmp_path / "vqa", tmp_path / "vm.json")
    for s in SPLITS:
        assert (tmp_path / "vqa" / f"{s}.parquet").read_bytes() == (tmp / "vqa" / f"{s}.parquet").read_bytes()


def test_which_wafers_are_described_moves_no_wafer_between_splits(built, tmp_path):
    """A verdict or a label correction that lets wafers in or keeps them out (here: a whole lot and
    every 7th wafer fewer) leaves every other wafer in its split."""
    tmp = built["tmp"]
    records = [json.loads(line) for line in (tmp / "r.jsonl").read_text().splitlines()]
    first_lot = records[0]["lot_id"]
    fewer = [r for i, r in enumerate(records) if r["lot_id"] != first_lot and i % 7]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fewer))
    vqa.run({"seed": 3}, tmp_path / "r.jsonl", tmp / "raw.parquet", tmp_path / "vqa", tmp_path / "vm.json")
    before = _pairs(tmp).drop_duplicates("wafer_id").set_index("wafer_id")["split"]
    after = _pairs(tmp_path).drop_duplicates("wafer_id").set_index("wafer_id")["split"]
    assert len(after) == len(fewer) and after.to_dict() == before[after.index].to_dict()


def test_gate_refuses_a_leak_and_a_class_named_in_a_question(built, tmp_path):
    import shutil

    tmp = built["tmp"]
    shutil.copytree(tmp / "vqa", tmp_path / "vqa")
    train = pd.read_parquet(tmp_path / "vqa" / "train.parquet")
    test = pd.read_parquet(tmp_path / "vqa" / "test.parquet")
    moved = train.iloc[:1].assign(split="test")
    named = test.index[test["labels"].map(lambda v: "Scratch" in v)]
    test.loc[named[:1], "question"] = "Is this a scratch?"
    pd.concat([test, moved], ignore_index=True).to_parquet(tmp_path / "vqa" / "test.parquet")
    with pytest.raises(WaferSageError) as exc:
        validate_vqa.run({}, tmp_path / "vqa", tmp / "r.jsonl", SUITE, tmp_path / "g.json", tmp_path / "docs")
    msg = str(exc.value)
    assert "VQA data gate failed" in msg and "\n" not in msg
    assert "splits_per_wafer" in msg and "question_names_class" in msg
    assert not (tmp_path / "g.json").exists()


def test_missing_clean_table_and_unknown_verdict_are_one_line_errors(built, tmp_path):
    tmp = built["tmp"]
    with pytest.raises(WaferSageError, match="clean labels not found"):
        describe.run(
            {"labels_from": "clean"},
            tmp / "raw.parquet",
            tmp_path / "nope.parquet",
            tmp_path / "d",
            tmp_path / "m",
        )
    bad = pd.read_parquet(tmp / "clean.parquet")
    bad.loc[0, "verdict"] = "maybe"
    bad.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(WaferSageError, match="row 0: unknown verdict"):
        describe.run(
            {"labels_from": "clean"},
            tmp / "raw.parquet",
            tmp_path / "c.parquet",
            tmp_path / "d",
            tmp_path / "m",
        )
    assert not (tmp_path / "d").exists()
