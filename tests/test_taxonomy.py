"""The configurable taxonomy: params ``taxonomy`` validated with one-line errors naming the key,
every reader following the active taxonomy (no class list bound at import), and the fallbacks a
class outside WM-811K's nine gets: parsing and phrasing by its name and synonyms, a generic root
cause (warned and counted), and the GX suites' class sets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from factories import CUSTOM_CLASSES_EXAMPLE, CUSTOM_PER_CLASS, CUSTOM_TAXONOMY, custom_classes_example

from wafersage.annotation.answer_parser import parse_labels, parse_primary
from wafersage.annotation.knowledge import GENERIC_SOURCE, load_knowledge_base
from wafersage.annotation.phrasing import class_term, mentions_class, morph_keyword, structure
from wafersage.annotation.rubric import build_rubric
from wafersage.errors import WaferSageError
from wafersage.gates import load_suite
from wafersage.params import load_section
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import check_labels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def custom():
    """The worked example's taxonomy, active for one test."""
    before = taxonomy.active()
    yield taxonomy.activate(CUSTOM_TAXONOMY)
    taxonomy.activate(before)


def _error(tmp_path: Path, section: dict) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"taxonomy": section}))
    with pytest.raises(WaferSageError) as e:
        load_section("taxonomy", path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_default_is_wm811k_with_todays_spellings():
    t = taxonomy.Taxonomy.of(load_section("taxonomy", ROOT / "params.yaml"))
    assert t == taxonomy.WM811K and t.classes == taxonomy.WM811K_CLASSES
    spellings = {
        **{c.lower(): c for c in taxonomy.WM811K_CLASSES},
        "normal": "none",
        **{s: "Edge-Loc" for s in ("edgeloc", "edge_loc")},
        **{s: "Edge-Ring" for s in ("edgering", "edge_ring")},
        **{s: "Near-full" for s in ("nearfull", "near_full")},
    }
    assert t.aliases == spellings


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"classez": ["none", "A"]}, "taxonomy.classez: unknown key"),
        ({"classes": ["Center", "none"]}, "taxonomy.classes: 'none' must be the first class"),
        ({"classes": ["Center", "Loc"]}, "taxonomy.classes: 'none' must be the first class"),
        ({"classes": ["none", "Spiral", "spiral"]}, "taxonomy.classes: duplicate class 'spiral'"),
        ({"classes": ["none", "A+B"]}, "taxonomy.classes: class 'A+B': letters, digits"),
        (
            {"classes": ["none", "Spiral", "Swirl"], "synonyms": {"Spiral": ["swirl"]}},
            "taxonomy.synonyms: synonyms.Spiral: 'swirl' already names 'Swirl'",
        ),
        (
            {"classes": ["none", "A", "B"], "synonyms": {"A": ["x"], "B": ["X"]}},
            "taxonomy.synonyms: synonyms.B: 'X' already names 'A'",
        ),
        (
            {"classes": ["none", "Spiral"], "synonyms": {"Edge-Loc": ["edgeloc"]}},
            "taxonomy.synonyms: synonyms.Edge-Loc: not a class of taxonomy.classes",
        ),
    ],
)
def test_a_bad_taxonomy_is_one_line_naming_the_key(tmp_path, section, expected):
    assert expected in _error(tmp_path, section)


def test_readers_follow_the_active_taxonomy(custom):
    assert taxonomy.classes() == ("none", "Center", "Edge-Ring", "Scratch", "Spiral")
    assert taxonomy.patterns()[-1] == "Spiral" and taxonomy.class_index()["Spiral"] == 4
    assert taxonomy.canonical(" SWIRL ") == "Spiral" and taxonomy.canonical("edgering") == "Edge-Ring"
    with pytest.raises(KeyError):
        taxonomy.canonical("Donut")  # a WM-811K class this taxonomy lacks
    assert check_labels(["swirl", "center"], "t", 0) == ["Center", "Spiral"]
    with pytest.raises(WaferSageError, match="unknown label"):
        check_labels(["Donut"], "t", 0)
    assert taxonomy.confusable_with("Center") == []  # Loc is not a class here
    assert taxonomy.primary_label(["Spiral", "Center"]) == "Center+Spiral"


def test_the_answer_parser_knows_a_new_class_by_name_and_synonym(custom):
    assert parse_labels("A Spiral arm from the centre outwards.") == {"Spiral"}
    assert parse_labels("a swirl of fails") == {"Spiral"}
    assert parse_labels("It is not a spiral; a scratch.") == {"Scratch"}
    assert parse_labels("no defect") == {"none"}
    assert parse_primary("spiral and edge ring") == "Edge-Ring+Spiral"


def test_the_answer_parser_of_the_default_taxonomy_is_unchanged():
    assert parse_labels("an edge ring and a localized cluster") == {"Edge-Ring", "Loc"}
    assert parse_labels("a spiral") == set()  # not a WM-811K class


def test_phrasing_falls_back_to_the_name_and_synonyms(custom):
    shape, texture = structure("Spiral")
    assert "Spiral" in shape and morph_keyword("Spiral") in shape
    assert structure("Center") == structure("Center")  # WM-811K's own table still answers
    assert mentions_class("Is there a swirl on this wafer?", ["Spiral"])
    assert mentions_class("Which spiral-like shape?", ["Spiral"]) is True
    assert not mentions_class("Where are the fails?", ["Spiral"])
    assert class_term("Center") == r"\bcent(?:er|re)\b"


def test_a_class_missing_from_the_knowledge_base_gets_a_generic_entry_and_a_warning(custom, caplog):
    with caplog.at_level(logging.WARNING, logger="wafersage.annotation.knowledge"):
        kb = load_knowledge_base()
    assert kb.generic == ["Spiral"]
    assert "no entry for Spiral" in caplog.text
    assert kb.patterns["Spiral"].sources == [GENERIC_SOURCE] and GENERIC_SOURCE in kb.sources
    attrs = {
        "n_dies": 300,
        "n_fail": 40,
        "fail_fraction": 0.13,
        "main": {"n_dies": 30, "zone": "middle", "distribution": "arc", "mean_r": 0.5},
        "patterns": [
            {"class": "Spiral", "separable": True, "n_dies": 30, "zone": "middle", "distribution": "arc"}
        ],
    }
    r = build_rubric("w1", ["Spiral"], attrs, kb, "A spiral arm.")
    assert r.defect_types.must_hit == ["Spiral"]
    assert r.root_cause.process_step == "unattributed process step (Spiral)"
    assert r.root_cause.in_knowledge_base is False
    assert r.spatial.distribution == "arc"  # the measured one: the class fixes none
    assert "Spiral signature" in r.morphology.must_hit


def test_the_default_knowledge_base_needs_no_generic_entry():
    assert load_knowledge_base().generic == []


def test_the_gx_suites_take_their_class_sets_from_the_taxonomy(custom):
    raw = {e["type"]: e["kwargs"] for e in load_suite(ROOT / "expectations/raw.json")["expectations"]}
    assert raw["expect_column_distinct_values_to_contain_set"]["value_set"] == list(taxonomy.classes())
    regex = raw["expect_column_values_to_match_regex"]["regex"]
    import re

    assert re.match(regex, "Center+Spiral") and not re.match(regex, "Donut")
    classes = load_suite(ROOT / "expectations/clean_classes.json")["expectations"][0]["kwargs"]
    assert classes["value_set"] == ["none", "Center", "Edge-Ring", "Scratch", "Spiral"]


def test_the_synthetic_source_refuses_a_taxonomy_without_its_classes(custom):
    from wafersage.stages.ingest import build_table

    with pytest.raises(WaferSageError, match="taxonomy.classes lacks classes the synthetic generator"):
        build_table("synthetic", [], {"n_wafers": 4})


def test_the_committed_custom_example_is_the_factorys_and_holds_every_class():
    committed = pd.read_csv(CUSTOM_CLASSES_EXAMPLE)
    made = custom_classes_example()
    pd.testing.assert_frame_equal(committed, made.astype(committed.dtypes.to_dict()), check_dtype=False)
    per_class = committed.groupby("label")["wafer_id"].nunique().to_dict()
    assert per_class == {c: CUSTOM_PER_CLASS for c in CUSTOM_TAXONOMY["classes"]}
    assert committed.groupby("wafer_id")["lot_id"].nunique().max() == 1
    assert np.all(committed.groupby("lot_id")["wafer_id"].nunique() == 10)
