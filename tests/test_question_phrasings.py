"""Question phrasings: many per kind, compound questions whose answers answer every part, the
held-out phrasings kept apart from every synthesis template, and their swap into test pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from wafersage.annotation import question_grammar
from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.phrasing import CLASS_TERMS, ZONE_PHRASES, mentions_class
from wafersage.annotation.rubric import rubric_record
from wafersage.annotation.vqa import (
    COMPOSED_SHARE,
    COMPOUND_KINDS,
    Q_TYPE,
    QUESTION_KINDS,
    claim_fields,
    normalise_question,
    parse_question,
    phrasings,
    qa_pairs,
)
from wafersage.evaluation.unseen_phrasing import load_unseen, unseen_items
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import SyntheticConfig, generate
from wafersage.wafers.taxonomy import NONE

TYPE_KINDS = [k for k, (cat, _) in QUESTION_KINDS.items() if cat == "type"]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Rubric records of 200 synthetic wafers (mixed ones included)."""
    kb = load_knowledge_base()
    raw = generate(SyntheticConfig(n_wafers=200, seed=4, mixed_fraction=0.2))
    out = []
    for r in raw.itertuples():
        labels = list(r.labels)
        m = decode_map(r.map, r.rows, r.cols)
        out.append(
            rubric_record(r.wafer_id, labels, wafer_attributes(m, labels), kb, "a summary of the wafer map")
        )
    return out


@pytest.fixture(scope="module")
def synthesized(records) -> pd.DataFrame:
    """QA pairs of the 200 synthetic wafers, with their records' fields."""
    rows = []
    for rec in records:
        for p in qa_pairs(rec, seed=1):
            kind = parse_question(p["question"])
            rows.append({**p, "kind": kind[0] if kind else None, "rubric": rec["rubric"]})
    return pd.DataFrame(rows)


def test_every_kind_has_many_distinct_phrasings_that_name_no_class():
    assert Q_TYPE[0] == "What type of defect pattern is visible on this wafer map?"
    every = [normalise_question(q) for kind in QUESTION_KINDS for q in phrasings(kind)]
    assert len(every) == len(set(every))  # no phrasing shared by two kinds
    fields = claim_fields("The failing dies form a thin line.")
    for kind, (_, written) in QUESTION_KINDS.items():
        qs = phrasings(kind)
        assert len(written) >= 10, kind
        assert len(qs) >= (10 if kind == "claim" else 300), kind
        for q in qs:
            asked = q.format(**fields)
            assert not mentions_class(asked, list(CLASS_TERMS)), q
            assert 12 <= len(asked) <= 400, q  # the VQA gate's question length
            assert parse_question(asked) == (kind, fields if kind == "claim" else {}), q
    forms = {normalise_question(q).split()[0] for q in Q_TYPE}
    assert {"what", "which", "identify", "defect", "classify"} <= forms  # questions, imperatives, terse


def test_seeded_synthesis_uses_many_phrasings_and_the_compound_kinds(synthesized):
    df = synthesized
    assert df["kind"].notna().all()
    assert df.groupby("wafer_id").size().between(8, 10).all()
    used = Counter(df["kind"])
    assert set(COMPOUND_KINDS) <= set(used)
    assert df.loc[df["kind"] == "type", "question"].nunique() >= 40
    assert df.loc[df["category"] == "type", "question"].nunique() >= 150
    asked = df[df["kind"] != "claim"]  # claims keep their written phrasings
    composed = [q not in QUESTION_KINDS[k][1] for q, k in zip(asked["question"], asked["kind"], strict=True)]
    assert abs(np.mean(composed) - COMPOSED_SHARE) < 0.05, np.mean(composed)
    for kind in ("zone", "shape", "step", "causes"):
        assert df.loc[df["kind"] == kind, "question"].nunique() >= 10, kind
    assert df.loc[df["kind"] == "claim", "question"].map(lambda q: parse_question(q) is not None).all()
    assert not any(mentions_class(q, list(v)) for q, v in zip(df["question"], df["labels"], strict=True))


def test_type_answers_name_the_class_first_and_compound_answers_answer_every_part(synthesized):
    df = synthesized
    for row in df[df["kind"].isin(TYPE_KINDS)].itertuples():
        labels = [c for c in row.labels if c != NONE]
        assert parse_labels(row.answer) == (set(labels) or {NONE}), (row.question, row.answer)
    compound = df[df["kind"].isin(COMPOUND_KINDS)]
    assert len(compound) >= 40
    for row in compound.itertuples():
        labels = [c for c in row.labels if c != NONE]
        ans, rub = row.answer, row.rubric
        first = (ans.index(labels[0]) if labels else ans.index("none")) if row.category == "type" else 0
        if row.kind == "type_step":
            step = rub["root_cause"]["process_step"] if labels else "No specific process step"
            assert step in ans and first < ans.index(step), ans
        elif row.kind == "type_zone":
            zone = ZONE_PHRASES[rub["spatial"]["zone"]][0] if labels else "no concentration"
            assert zone in ans and first < ans.index(zone), ans
        elif row.kind == "exists_type":
            assert ans.startswith("Yes. " if labels else "No"), ans
        else:  # zone_shape: the location, then the shape
            zone = ZONE_PHRASES[rub["spatial"]["zone"]][0] if labels else "no concentration"
            shape = rub["morphology"]["geometric_structure"]
            assert zone in ans and shape.lower() in ans.lower(), ans
            assert ans.index(zone) < ans.lower().index(shape.lower()), ans


def test_unseen_phrasings_are_apart_from_every_template():
    unseen = load_unseen()
    assert set(unseen) == set(QUESTION_KINDS)
    assert all(len(qs) >= 4 for qs in unseen.values())
    assert set(COMPOUND_KINDS) <= set(unseen)
    templates = {normalise_question(q) for kind in QUESTION_KINDS for q in phrasings(kind)}
    fields = claim_fields("The failing dies form a thin line.")
    seen_asked = {normalise_question(q.format(**fields)) for kind in QUESTION_KINDS for q in phrasings(kind)}
    for qs in unseen.values():
        for q in qs:
            assert normalise_question(q) not in templates, q
            asked = q.format(**fields)
            assert normalise_question(asked) not in seen_asked, q
            assert parse_question(asked) is None, q  # never read as a training phrasing
            assert not mentions_class(asked, list(CLASS_TERMS)) and 12 <= len(asked) <= 400, q


def test_bad_unseen_file_is_a_one_line_error(tmp_path):
    from wafersage.errors import WaferSageError

    (tmp_path / "u.yaml").write_text("type: ['What is this one?']\nflavour: ['Which one is it?']\n")
    with pytest.raises(WaferSageError, match="unknown question kind"):
        load_unseen(tmp_path / "u.yaml")
    (tmp_path / "u.yaml").write_text("claim: ['Is this right or not?']\n")
    with pytest.raises(WaferSageError, match="placeholder"):
        load_unseen(tmp_path / "u.yaml")
    (tmp_path / "u.yaml").write_text("type: [What is this?]\n")
    with pytest.raises(WaferSageError, match="not valid YAML"):
        load_unseen(tmp_path / "u.yaml")


def test_unseen_items_swap_in_a_held_out_phrasing_of_the_same_kind(synthesized):
    df = synthesized.assign(item_id=synthesized["pair_id"])
    got = unseen_items(df, 300, seed=0)
    assert len(got) == 300 and got["item_id"].is_unique
    assert got.equals(unseen_items(df, 300, seed=0))
    unseen = load_unseen()
    seen = set(df["question"])
    for row in got.itertuples():
        kind, fields = parse_question(row.seen_question)
        assert kind == row.kind and row.question not in seen
        assert row.question in {q.format(**fields) for q in unseen[kind]}
        if kind == "claim":
            assert fields["claim_bare"].lower() in row.question.lower()
    assert set(got["category"]) == set(df["category"]) and got["question"].nunique() >= 40
    base = df.set_index("item_id").loc[got["item_id"]]
    assert (base["answer"].to_numpy() == got["answer"].to_numpy()).all()  # the references stay
    assert unseen_items(df, 0, seed=0).empty


def test_composed_share_zero_asks_written_phrasings_only_and_one_composes_all_but_claims(records):
    written = {q for _, qs in QUESTION_KINDS.values() for q in qs}
    composed = {k: set(question_grammar.phrasings(k)) for k in QUESTION_KINDS}
    for share in (0.0, 1.0):
        for rec in records[:60]:
            for p in qa_pairs(rec, seed=1, composed_share=share):
                kind = parse_question(p["question"])[0]
                if kind != "claim":
                    assert p["question"] in (composed[kind] if share else written), (share, p["question"])
