"""Corruptions of the judge-calibration pool change what they name, and nothing else."""

from __future__ import annotations

import numpy as np

from wafersage.score.calibration import corrupt
from wafersage.wafers.taxonomy import confusable_with


def test_swap_type_replaces_the_class_name_only_as_a_whole_word():
    text = "A Loc pattern: the mass sits at 5 o'clock, away from any Edge-Loc arc."
    rec = {"labels": ["Loc"], "rubric": {}}
    out = corrupt("swap_type", text, rec, None, np.random.default_rng(0))
    assert "5 o'clock" in out and "Edge-Loc arc" in out
    new = out.split(" pattern")[0].removeprefix("A ")
    assert new != "Loc" and new in confusable_with("Loc")
    assert out == text.replace("A Loc pattern", f"A {new} pattern")
