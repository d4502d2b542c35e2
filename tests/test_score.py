"""The rule score: formulas on hand-computed cases, matching (fuzzy, synonyms, negation, masking),
anti-gaming margins, the reward callables, the calibration pool and the reference judge."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import rubric_record
from wafersage.annotation.vqa import qa_pairs
from wafersage.errors import WaferSageError
from wafersage.score import config as cfgmod
from wafersage.score.calibration import VARIANTS, build_pool
from wafersage.score.config import HARDENED, PAPER_DEFAULT, ScoreConfig
from wafersage.score.judges import JudgeItem, ReferenceJudge
from wafersage.score.matching import Answer, match_rubric, variants
from wafersage.score.reward import make_reward_funcs
from wafersage.score.rules import Item, combine, features, score_items, set_f1
from wafersage.score.textmetrics import bleu4, rouge_l
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

EXACT = PAPER_DEFAULT.model_copy(update={"fuzzy_threshold": 100.0})


def _rubric(spatial=(), spatial_avoid=(), morph=(), root=(), types=("Edge-Ring",), types_avoid=()):
    return {
        "defect_types": {"must_hit": list(types), "must_avoid": list(types_avoid)},
        "spatial": {"must_hit": list(spatial), "must_avoid": list(spatial_avoid)},
        "morphology": {"must_hit": list(morph), "must_avoid": []},
        "root_cause": {"must_hit": list(root), "must_avoid": []},
    }


def _one(
    answer: str, rubric: dict, config: ScoreConfig = EXACT, reference: str = "ref", labels=("Edge-Ring",)
):
    return combine(features([Item("q?", answer, reference, rubric, list(labels))], config), config)


# ------------------------------------------------------------------ formulas
def test_paper_formula_hand_computed() -> None:
    rubric = _rubric(
        spatial=["edge zone", "3 o'clock", "ring-shaped"],
        spatial_avoid=["central zone"],
        morph=["thin band", "dense"],
        root=["plasma etch"],
    )
    out = _one("Fails in the edge zone and a few in the central zone; a thin band, dense.", rubric)
    # spatial C=1/3 -> H=0.5, one avoid -> A=0.75, D=0.6*0.5+0.4*0.75=0.6; morphology D=1; root D=0.4
    assert out["dim_spatial"][0] == pytest.approx(0.6)
    assert out["dim_morphology"][0] == pytest.approx(1.0)
    assert out["dim_root_cause"][0] == pytest.approx(0.4)
    assert out["score"][0] == pytest.approx(0.4 * 0.6 + 0.35 * 1.0 + 0.25 * 0.4)


def test_coverage_caps_and_avoid_floor() -> None:
    rubric = _rubric(
        spatial=["edge zone", "ring shaped", "3 o'clock"], spatial_avoid=["a", "b", "c", "d", "e"]
    )
    out = _one("edge zone ring shaped a b c d e", rubric)  # C=2/3 -> H=min(1,1.0)=1; 5 avoids -> A=0
    assert out["dim_spatial"][0] == pytest.approx(0.6)


def test_avoid_gate_removes_credit_for_silence() -> None:
    rubric = _rubric(spatial=["edge zone"], morph=["band"], root=["plasma etch"])
    paper = _one("Nothing to report.", rubric)
    gated = _one("Nothing to report.", rubric, EXACT.model_copy(update={"avoid_gate": 1.0}))
    assert paper["score"][0] == pytest.approx(0.4)  # the paper's flaw: A=1 for saying nothing
    assert gated["score"][0] == 0.0


def test_set_f1_and_text_metrics() -> None:
    assert set_f1({"Center"}, {"Center"}) == 1.0
    assert set_f1({"Center", "Loc"}, {"Center"}) == pytest.approx(2 / 3)
    assert set_f1(set(), {"Center"}) == 0.0
    assert rouge_l(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == pytest.approx(0.75)
    same = ["the", "edge", "ring", "is", "dense"]
    assert bleu4(same, same) == pytest.approx(1.0)
    assert bleu4(["x", "y", "z"], ["a", "b", "c"]) == 0.0


# ------------------------------------------------------------------ matching
def test_negation_masking_fuzzy_and_synonyms() -> None:
    def hits(answer, hit, avoid=(), thr=88.0):
        return match_rubric(Answer.parse(answer), [list(hit)], [list(avoid)], thr, 5)

    assert hits("No scratch is visible on this map.", ["scratch"]) == ([0], [0])
    assert hits("It is not a donut but a scratch.", ["scratch"], ["donut"]) == ([1], [0])
    assert hits("A Donut pattern.", ["scratch"], ["donut"]) == ([0], [1])
    assert hits("An edge ring along the rim.", ["edge ring"], ["ring"]) == ([1], [0])
    assert hits("An edge ring, and a ring near the core.", ["edge ring"], ["ring"]) == ([1], [1])
    assert hits("A bring-up failure.", ["ring"]) == ([0], [0])  # whole tokens only
    assert hits("An Edge-Loc pattern.", ["Loc"], ["Edge-Loc"]) == ([0], [1])  # the longer match wins
    assert hits("Edge-Loc? No: a Loc pattern.", ["Loc"], ["Edge-Loc"]) == ([1], [1])
    assert hits("Fails sit on the wafer periphary.", ["edge zone"]) == ([1], [0])  # synonym + typo
    assert hits("Fails sit on the wafer periphary.", ["edge zone"], thr=100.0) == ([0], [0])
    assert hits("Start with CMP.", ["chemical mechanical planarization / photoresist spin coating"]) == (
        [1],
        [0],
    )
    assert "three o'clock" in variants("3 o'clock")


# ------------------------------------------------------------------ real rubrics: anti-gaming
@pytest.fixture(scope="module")
def records() -> list[dict]:
    kb = load_knowledge_base()
    df = generate(SyntheticConfig(n_wafers=24, seed=5, noise_rate=0.0, mixed_fraction=0.1))
    out = []
    for r in df.itertuples():
        labels = list(r.labels)
        attrs = wafer_attributes(decode_map(r.map, r.rows, r.cols), labels)
        out.append(rubric_record(r.wafer_id, labels, attrs, kb, "a summary of the wafer"))
    return out


@pytest.fixture(scope="module")
def pairs(records) -> pd.DataFrame:
    return pd.DataFrame([p for rec in records for p in qa_pairs(rec)])


GAMES = {
    "generic": lambda p: (
        "The wafer map shows a defect pattern; further analysis of the process is recommended."
    ),
    "every_type": lambda p: "This wafer shows " + ", ".join(taxonomy.patterns()) + " patterns.",
    "empty": lambda p: "",
    "echo": lambda p: p["question"],
    "overlong": lambda p: p["answer"] + " " + " ".join(["Many dies may fail for many reasons."] * 40),
}


@pytest.mark.parametrize("game", sorted(GAMES))
def test_gaming_answers_score_clearly_below_correct(records, pairs, game) -> None:
    by_id = {r["wafer_id"]: r for r in records}
    sample = pairs[pairs["category"].isin(["type", "spatial", "morphology", "root_cause"])].head(60)
    correct, gamed = [], []
    for _, p in sample.iterrows():
        rec = by_id[p["wafer_id"]]
        correct.append(Item(p["question"], p["answer"], p["answer"], rec["rubric"], rec["labels"]))
        gamed.append(Item(p["question"], GAMES[game](p), p["answer"], rec["rubric"], rec["labels"]))
    good = score_items(correct, HARDENED)
    bad = score_items(gamed, HARDENED)
    assert good.mean() >= 0.7
    assert good.mean() - bad.mean() >= 0.3, (game, good.mean(), bad.mean())
    assert (good - bad >= 0.3).mean() >= 0.8  # per question, not only on average


def test_paper_default_is_gameable_hardened_is_not(records, pairs) -> None:
    by_id = {r["wafer_id"]: r for r in records}
    p = pairs[pairs["category"] == "type"].iloc[0]
    rec = by_id[p["wafer_id"]]
    generic = [Item(p["question"], GAMES["generic"](p), p["answer"], rec["rubric"], rec["labels"])]
    assert score_items(generic, PAPER_DEFAULT)[0] >= 0.4 - 1e-9
    assert score_items(generic, HARDENED)[0] < 0.1


def test_negated_correct_answer_scores_low(records, pairs) -> None:
    by_id = {r["wafer_id"]: r for r in records}
    p = next(q for _, q in pairs[pairs["category"] == "type"].iterrows() if "none" not in q["labels"])
    rec = by_id[p["wafer_id"]]
    names = " or ".join(c for c in rec["labels"])
    items = [
        Item(p["question"], p["answer"], p["answer"], rec["rubric"], rec["labels"]),
        Item(p["question"], f"There is no {names} pattern here.", p["answer"], rec["rubric"], rec["labels"]),
    ]
    good, neg = score_items(items, HARDENED)
    assert good - neg >= 0.3


# ------------------------------------------------------------------ config, reward, pool, judge
def test_config_roundtrip_and_bad_file(tmp_path) -> None:
    path = tmp_path / "reward_config.json"
    cfgmod.save(HARDENED, path, extra={"spearman_fit": 0.9})
    assert cfgmod.load(path) == HARDENED
    assert PAPER_DEFAULT.dim_weights == {
        "defect_types": 0.0,
        "spatial": 0.4,
        "morphology": 0.35,
        "root_cause": 0.25,
    }
    (tmp_path / "bad.json").write_text(json.dumps({"fuzzy_threshold": 300}))
    with pytest.raises(WaferSageError, match="invalid reward config"):
        cfgmod.load(tmp_path / "bad.json")


def test_reward_funcs_trl_signature(tmp_path, records, pairs) -> None:
    path = tmp_path / "rc.json"
    cfgmod.save(HARDENED, path)
    funcs = make_reward_funcs(path)
    by_id = {r["wafer_id"]: r for r in records}
    rows = pairs.head(4)
    kw = {
        "question": rows["question"].tolist(),
        "answer": rows["answer"].tolist(),
        "rubric": [json.dumps(by_id[w]["rubric"]) for w in rows["wafer_id"]],
        "labels": [by_id[w]["labels"] for w in rows["wafer_id"]],
    }
    completions = [[{"role": "assistant", "content": a}] for a in rows["answer"]]
    completions[1] = [{"role": "assistant", "content": ""}]
    overall = funcs[0](rows["question"].tolist(), completions, **kw)
    assert len(overall) == 4 and overall[1] == 0.0 and overall[0] > 0.7
    assert [f.__name__ for f in funcs][:2] == ["wafersage_reward", "reward_rubric"]
    assert len(funcs[2](rows["question"].tolist(), completions, **kw)) == 4


def test_pool_and_reference_judge(records, pairs) -> None:
    by_id = {r["wafer_id"]: r for r in records}
    pool = build_pool(pairs, by_id, load_knowledge_base(), n_pairs=25, seed=0)
    again = build_pool(pairs, by_id, load_knowledge_base(), n_pairs=25, seed=0)
    pd.testing.assert_frame_equal(pool, again)
    assert set(pool["variant"]) >= set(VARIANTS) - {"truncated"}
    judge = ReferenceJudge()
    items = [
        JudgeItem(
            r.question,
            r.answer,
            r.reference,
            by_id[r.wafer_id]["rubric"],
            by_id[r.wafer_id]["labels"],
            by_id[r.wafer_id]["attributes"],
        )
        for r in pool.itertuples()
    ]
    scores = np.array([v.score for v in judge.judge(items)])
    assert ((scores >= 0) & (scores <= 10)).all()
    mean = pd.Series(scores).groupby(pool["variant"].to_numpy()).mean()
    assert mean["reference"] >= 8.5
    for bad in ("generic", "swap_type", "wrong_root_cause", "negation_flip"):
        assert mean["reference"] - mean[bad] >= 2.5, (bad, mean.to_dict())
    assert judge.judge([JudgeItem("q", "", "ref", {}, ["Center"])])[0].score == 0.0


def test_global_avoid_penalty_and_expanded_avoid(records, pairs) -> None:
    by_id = {r["wafer_id"]: r for r in records}
    p = pairs[pairs["category"] == "spatial"].iloc[0]
    rec = by_id[p["wafer_id"]]
    wrong = p["answer"] + " The likely cause is a lithography scanner problem, and a Scratch."
    items = [Item(p["question"], a, p["answer"], rec["rubric"], rec["labels"]) for a in (p["answer"], wrong)]
    plain = ScoreConfig(scope_by_reference=True)
    strict = plain.model_copy(update={"expand_avoid": True, "avoid_global_step": 0.3})
    f_plain, f_strict = features(items, plain), features(items, strict)
    assert f_strict.avoids[1].sum() > f_plain.avoids[1].sum()
    good, bad = combine(f_strict, strict)["score"]
    assert good - bad >= 0.3


@pytest.mark.slow
def test_embedding_cosine_offline(monkeypatch) -> None:
    from wafersage.score.textmetrics import embedding_cosine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cos = embedding_cosine(
        ["a ring of failing dies along the wafer edge", "", "a scratch across the centre"],
        ["an edge ring pattern at the periphery"] * 3,
    )
    assert cos[0] > cos[2] > 0 and cos[1] == 0.0
