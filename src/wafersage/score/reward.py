"""The GSPO reward: TRL ``reward_func(prompts, completions, **kwargs) -> list[float]`` callables that
wrap the one rule score (:mod:`wafersage.score.rules`) under ``models/reward/reward_config.json``.

The dataset columns the trainer passes as keyword lists: ``question`` (or the prompt), ``answer``
(the reference), ``rubric`` (JSON string or dict) and ``labels``. :func:`make_reward_funcs` returns
the overall reward first (weight 1 in ``GRPOConfig.reward_weights``) and one callable per logged
component (give those weight 0: TRL logs them without training on them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wafersage.score.config import ScoreConfig, load
from wafersage.score.rules import Item, combine, features

COMPONENTS: tuple[str, ...] = ("rubric", "type_f1", "polarity", "rouge")


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


def make_reward_funcs(config: ScoreConfig | str | Path) -> list[Callable[..., list[float]]]:
    """``[overall, *components]`` reward callables for TRL's GRPOTrainer, sharing one scoring pass
    per batch (the components reuse the features of the last overall call on the same batch)."""
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
    return funcs
