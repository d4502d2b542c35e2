"""The GSPO reward: TRL ``reward_func(prompts, completions, **kwargs) -> list[float]`` callables that
wrap the one rule score (:mod:`wafersage.score.rules`) under ``models/reward/reward_config.json``.

The dataset columns the trainer passes as keyword lists: ``question`` (or the prompt), ``answer``
(the reference), ``rubric`` (JSON string or dict), ``labels`` and ``category``.
:func:`make_reward_funcs` returns the overall reward first, one callable per logged component and
last the exact-type correctness term (:func:`type_exact`, as Visual-RFT rewards classification):
on ``type`` questions 1 when the answer's parsed label set (the evaluation's
:func:`~wafersage.annotation.answer_parser.parse_labels`) equals the wafer's labels, else 0; ``None`` on other
categories, so TRL neither adds it there nor counts it in ``rewards/type_exact/mean``.
:func:`reward_weights` gives the matching ``GRPOConfig.reward_weights``: overall 1, components 0
(logged, not trained on), type term ``type_weight``; TRL sums them into the training reward.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.score.config import ScoreConfig, load
from wafersage.score.rules import Item, combine, features

COMPONENTS: tuple[str, ...] = ("rubric", "type_f1", "polarity", "rouge")
#: Name of the exact-type reward function (TRL logs ``rewards/type_exact/mean``).
TYPE_EXACT = "type_exact"


def _text(x: Any) -> str:
    """A completion as plain text (TRL passes strings, or chat message lists)."""
    if isinstance(x, str):
        return x
    if isinstance(x, Sequence) and x and isinstance(x[-1], dict):
        content = x[-1].get("content", "")
        if isinstance(content, list):
            return " ".join(c.get("text", "") for c in content if isinstance(c, dict))
        return str(content)
    return str(x)


@lru_cache(maxsize=4096)
def _rubric_json(text: str) -> dict[str, Any]:
    """A rubric column value parsed once (a GSPO group repeats it; callers never mutate it)."""
    return json.loads(text)


def _items(prompts: Sequence[Any], completions: Sequence[Any], kw: dict[str, Any]) -> list[Item]:
    n = len(completions)
    questions = kw.get("question") or [_text(p) for p in prompts]
    refs, rubrics, labels = kw.get("answer"), kw.get("rubric"), kw.get("labels")
    if refs is None or rubrics is None or labels is None:
        raise KeyError("the reward needs dataset columns 'answer', 'rubric' and 'labels'")
    out = []
    for i in range(n):
        rub = rubrics[i]
        rub = _rubric_json(rub) if isinstance(rub, str) else rub
        out.append(Item(str(questions[i]), _text(completions[i]), str(refs[i]), rub, list(labels[i])))
    return out


def type_exact(answer: str, labels: Sequence[str]) -> float | None:
    """1.0 when the classes ``answer`` asserts are exactly ``labels``, else 0.0 (a negated or a
    missing/extra class is wrong); ``None`` when the wafer has no labels (evaluation skips it too)."""
    truth = {str(c) for c in labels}
    if not truth:
        return None
    return float(parse_labels(answer) == truth)


def type_exact_reward(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float | None]:
    """TRL reward function: :func:`type_exact` on ``type`` questions, ``None`` on the others."""
    categories, labels = kw.get("category"), kw.get("labels")
    if categories is None or labels is None:
        raise KeyError("the type reward needs dataset columns 'category' and 'labels'")
    return [
        type_exact(_text(c), lb) if str(cat) == TYPE_CATEGORY else None
        for c, cat, lb in zip(completions, categories, labels, strict=True)
    ]


type_exact_reward.__name__ = TYPE_EXACT


def reward_weights(type_weight: float) -> list[float]:
    """``GRPOConfig.reward_weights`` in :func:`make_reward_funcs` order."""
    return [1.0] + [0.0] * len(COMPONENTS) + [float(type_weight)]


def make_reward_funcs(config: ScoreConfig | str | Path) -> list[Callable[..., list[float]]]:
    """``[overall, *components, type_exact]`` reward callables for TRL's GRPOTrainer, sharing one
    scoring pass per batch (the components reuse the features of the last overall call on the same
    batch); weight them with :func:`reward_weights`."""
    cfg = config if isinstance(config, ScoreConfig) else load(config)
    last: dict[str, Any] = {}

    def scores(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> dict[str, np.ndarray]:
        key = (id(completions), len(completions), tuple(map(_text, completions[:2])))
        if last.get("key") != key:
            last["key"] = key
            last["out"] = combine(features(_items(prompts, completions, kw), cfg), cfg)
        return last["out"]

    def overall(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        return [float(v) for v in scores(prompts, completions, **kw)["score"]]

    overall.__name__ = "wafersage_reward"
    funcs: list[Callable[..., list[float]]] = [overall]
    for name in COMPONENTS:

        def component(
            prompts: Sequence[Any], completions: Sequence[Any], _n: str = name, **kw: Any
        ) -> list[float]:
            v = scores(prompts, completions, **kw)[_n]
            return [None if np.isnan(x) else float(x) for x in v]

        component.__name__ = f"reward_{name}"
        funcs.append(component)
    funcs.append(type_exact_reward)
    return funcs
