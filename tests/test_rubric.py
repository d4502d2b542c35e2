"""The rubric schema, the knowledge base, and a label the knowledge base lacks."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from wafersage.annotation.knowledge import KnowledgeBase, load_knowledge_base
from wafersage.annotation.rubric import SCHEMA_VERSION, Dimension, Rubric, build_rubric
from wafersage.annotation.vqa import qa_pairs
from wafersage.errors import WaferSageError
from wafersage.stages import rubrics
from wafersage.wafers import taxonomy


def _attrs(cls: str, zone: str, clock: int | None, dist: str) -> dict:
    p = {"class": cls, "zone": zone, "clock": clock, "distribution": dist, "separable": True, "n_dies": 40}
    p.update(
        {
            "density": 0.9,
            "area_fraction": 0.1,
            "centroid_x": 0.5,
            "centroid_y": 0.0,
            "r_inner": 0.4,
            "r_outer": 0.6,
        }
    )
    p.update({"coverage_deg": 60.0, "elongation": 1.5, "orientation_deg": 10.0})
    main = {"n_dies": 40, "distribution": dist}
    return {
        "yield": 0.9,
        "fail_fraction": 0.1,
        "n_fail": 40,
        "n_dies": 400,
        "n_components": 1,
        "patterns": [p],
        "main": main,
    }


def test_knowledge_base_covers_every_pattern_with_named_sources():
    kb = load_knowledge_base()
    assert set(kb.patterns) == set(taxonomy.patterns())
    assert "wu2015" in kb.sources and "WM-811K" in kb.sources["wu2015"]
    assert "CMP" in kb.patterns["Scratch"].equipment_category
    assert "thermal" in kb.patterns["Donut"].process_step


def test_bad_knowledge_base_is_one_line_error(tmp_path):
    bad = yaml.safe_load(
        (
            load_knowledge_base.__globals__["resources"].files("wafersage") / "resources/knowledge_base.yaml"
        ).read_text()
    )
    bad["patterns"]["Center"]["sources"] = ["nobody2099"]
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(WaferSageError, match="invalid knowledge base.*unnamed sources"):
        load_knowledge_base(path)
    with pytest.raises(WaferSageError, match="knowledge base not found"):
        load_knowledge_base(tmp_path / "nope.yaml")


def test_rubric_lists_confusables_wrong_zone_and_opposite_clock():
    kb = load_knowledge_base()
    r = build_rubric("w1", ["Loc"], _attrs("Loc", "middle", 3, "clustered"), kb, "A local blob at 3 o'clock.")
    assert r.schema_version == SCHEMA_VERSION == 1
    assert r.defect_types.must_hit == ["Loc"]
    assert {"Center", "Edge-Loc"} <= set(r.defect_types.must_avoid)
    assert "3 o'clock" in r.spatial.must_hit and "9 o'clock" in r.spatial.must_avoid
    assert "middle ring of the wafer" in r.spatial.must_hit
    assert "central zone" in r.spatial.must_avoid  # two zones away
    assert kb.patterns["Loc"].process_step in r.root_cause.must_hit
    assert kb.patterns["Edge-Loc"].process_step in r.root_cause.must_avoid
    again = Rubric.model_validate_json(r.model_dump_json())
    assert again == r and again.rubric_id() == r.rubric_id() and r.rubric_id().startswith("w1@")


def test_schema_rejects_contradictions_and_missing_fields():
    with pytest.raises(ValidationError, match="both required and forbidden"):
        Dimension(must_hit=["edge zone"], must_avoid=["Edge zone"])
    with pytest.raises(ValidationError):
        Dimension(must_hit=[])
    kb = load_knowledge_base()
    data = json.loads(
        build_rubric(
            "w", ["Center"], _attrs("Center", "center", None, "clustered"), kb, "x" * 20
        ).model_dump_json()
    )
    data["spatial"]["zone"] = "nowhere"
    with pytest.raises(ValidationError):
        Rubric.model_validate(data)


def test_label_missing_from_knowledge_base_is_counted_and_skips_root_cause(
    tmp_path, tmp_path_factory, monkeypatch
):
    # a store shared by the session's tests: creating a fresh sqlite store costs seconds
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.getbasetemp()}/mlflow_vqa.db")
    kb_full = load_knowledge_base()
    data = json.loads(kb_full.model_dump_json())
    del data["patterns"]["Scratch"]
    (tmp_path / "kb.yaml").write_text(yaml.safe_dump(data))
    kb = KnowledgeBase.model_validate(data)
    rec = {
        "wafer_id": "w9",
        "lot_id": None,
        "labels": ["Scratch"],
        "tag": "typical",
        "attributes": _attrs("Scratch", "middle", 2, "line"),
        "descriptions": {"full": "A long thin line of fails across the wafer."},
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(rec) + "\n")
    summary = rubrics.run(
        {"knowledge_base": str(tmp_path / "kb.yaml")},
        tmp_path / "d.jsonl",
        tmp_path / "r.jsonl",
        tmp_path / "m.json",
    )
    assert summary["kb_missing"] == 1
    out = json.loads((tmp_path / "r.jsonl").read_text())
    assert out["rubric"]["root_cause"]["in_knowledge_base"] is False
    pairs = qa_pairs(out)
    assert len(pairs) == 8 and "root_cause" not in {p["category"] for p in pairs}
    assert (
        build_rubric("w", ["Scratch"], rec["attributes"], kb, "y" * 20).root_cause.process_step == "unknown"
    )


def test_mixed_rubric_never_forbids_what_another_pattern_shows():
    kb = load_knowledge_base()
    attrs = _attrs("Loc", "inner", 3, "clustered")
    edge = {**attrs["patterns"][0], "class": "Edge-Loc", "zone": "edge", "clock": 11, "n_dies": 20}
    attrs["patterns"].append(edge)
    r = build_rubric("m1", ["Edge-Loc", "Loc"], attrs, kb, "A crescent at 11 and a blob at 3 o'clock.")
    assert {"inner zone", "3 o'clock", "11 o'clock"} <= set(r.spatial.must_hit)
    assert "edge zone" not in r.spatial.must_avoid and "arc-shaped" not in r.spatial.must_avoid
    assert {"9 o'clock", "5 o'clock"} <= set(r.spatial.must_avoid)
    assert {"crescent", "blob"} <= set(r.morphology.must_hit)
