"""The answer parser: taxonomy synonyms, negations, mixed answers."""

from __future__ import annotations

import pytest

from wafersage.annotation.answer_parser import parse_labels, parse_primary


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Edge-Ring.", {"Edge-Ring"}),
        ("The map shows an edge ring of failing dies.", {"Edge-Ring"}),
        ("An edge_ring pattern", {"Edge-Ring"}),
        ("A ring at the edge of the wafer.", {"Edge-Ring"}),
        ("Edge-Loc: a cluster on the rim", {"Edge-Loc"}),
        ("a localized cluster near the edge", {"Edge-Loc"}),
        ("Loc", {"Loc"}),
        ("A local cluster in the middle zone.", {"Loc"}),
        ("near full failure", {"Near-full"}),
        ("Near-full", {"Near-full"}),
        ("A long scratch runs across the wafer.", {"Scratch"}),
        ("Donut-shaped ring around the center", {"Donut"}),
        ("Center", {"Center"}),
        ("Randomly scattered fails.", {"Random"}),
        ("No defect pattern; the wafer is normal.", {"none"}),
        ("none", {"none"}),
        ("No defect.", {"none"}),
        ("no scratch is visible", set()),
        ("It is not an edge ring, it is a Donut.", {"Donut"}),
        ("Edge-Loc rather than Loc.", {"Edge-Loc"}),
        ("A Center blob plus a scratch", {"Center", "Scratch"}),
        ("Mixed: Edge-Ring and Loc.", {"Edge-Ring", "Loc"}),
        ("I cannot tell.", set()),
        ("", set()),
    ],
)
def test_parse_labels(answer: str, expected: set[str]) -> None:
    assert parse_labels(answer) == expected


def test_parse_primary_joins_in_taxonomy_order() -> None:
    assert parse_primary("Scratch and Center") == "Center+Scratch"
    assert parse_primary("nothing recognisable") is None
    assert parse_primary("Edge-Ring") == "Edge-Ring"
