"""The exact-type correctness reward: 1 only when the parsed label set equals the wafer's labels,
only on type questions, in TRL's reward-function signature and weight order."""

from __future__ import annotations

import pytest

from wafersage.score.config import HARDENED, save
from wafersage.score.reward import (
    COMPONENTS,
    TYPE_EXACT,
    make_reward_funcs,
    reward_weights,
    type_exact,
    type_exact_reward,
)


@pytest.mark.parametrize(
    ("answer", "labels", "expected"),
    [
        ("It is a Center pattern.", ["Center"], 1.0),
        ("Center.", ["Center"], 1.0),
        ("No defect pattern: a normal wafer.", ["none"], 1.0),
        ("An Edge-Ring and a Scratch.", ["Edge-Ring", "Scratch"], 1.0),
        ("Edge-Ring.", ["Center"], 0.0),  # wrong class
        ("not Center", ["Center"], 0.0),  # negated: asserts nothing
        ("This is not a Center pattern; it is Loc.", ["Center"], 0.0),
        ("Center and Scratch.", ["Center"], 0.0),  # an extra class
        ("Center.", ["Center", "Scratch"], 0.0),  # a missing class
        ("", ["Center"], 0.0),
        ("The wafer map shows a defect pattern.", ["Loc"], 0.0),
    ],
)
def test_type_exact_is_one_only_for_the_exact_label_set(
    answer: str, labels: list[str], expected: float
) -> None:
    assert type_exact(answer, labels) == expected


def test_type_exact_leaves_unlabelled_wafers_unscored() -> None:
    assert type_exact("Center.", []) is None


def test_type_reward_only_on_type_questions_in_trl_signature() -> None:
    texts = ("Center.", "not Center", "Center.", "Loc.")
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    out = type_exact_reward(
        ["q"] * 4,
        completions,
        category=["type", "type", "spatial", "type"],
        labels=[["Center"], ["Center"], ["Center"], ["Center"]],
        answer=["ref"] * 4,
    )
    assert out == [1.0, 0.0, None, 0.0]
    with pytest.raises(KeyError, match="category"):
        type_exact_reward(["q"], completions[:1], labels=[["Center"]])


def test_reward_funcs_end_with_the_type_term_and_weights_match(tmp_path) -> None:
    save(HARDENED, tmp_path / "rc.json")
    funcs = make_reward_funcs(tmp_path / "rc.json")
    names = [f.__name__ for f in funcs]
    assert names == ["wafersage_reward", *[f"reward_{c}" for c in COMPONENTS], TYPE_EXACT]
    assert reward_weights(2.5) == [1.0] + [0.0] * len(COMPONENTS) + [2.5]
    assert len(reward_weights(1.0)) == len(funcs)
