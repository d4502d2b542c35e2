"""An externally graded answer set: read it, check it, and turn it into rule-score items.

The ``align`` stage fits the rule score to the pipeline's own judge; with ``align.external`` set it
also measures (and can fit) the rule score against answers graded by an independent judge, e.g.
``../shared/calibration/llm_graded.jsonl`` (an LLM that never saw this code graded them 0-10).
One JSON object a line, each self-contained:

``item_id``, ``wafer_id`` (strings); ``rows``, ``cols`` (ints) and ``map`` (``rows`` strings of
``cols`` digits: 0 off-wafer, 1 pass, 2 fail); ``true_labels`` (taxonomy names); ``category``,
``question``, ``reference``, ``answer`` (strings; an answer may be empty); ``answer_source``
(``model`` or ``corruption``); ``llm_score`` (the grade, a number in 0-10). Other fields
(``labels``, ``judge_facts``, ``llm_reason``) are ignored.

The items carry no rubric: each wafer's rubric is rebuilt from its map and ``true_labels`` with the
pipeline's own code, as the describe and rubrics stages build one for a pipeline wafer (analytic
attributes of the map guided by the labels, the analytic ``full`` description as the summary, the
packaged knowledge base). The true labels, not the wafer's noisy ``labels``, because they are what
the external judge was shown; the rule score's defect-type F1 uses them too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.descriptions import analytic_descriptions
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import build_rubric
from wafersage.errors import WaferSageError
from wafersage.score.rules import Item
from wafersage.wafers import taxonomy

#: The field holding the external judge's grade (0-10).
GRADE = "llm_score"
SOURCES: tuple[str, ...] = ("model", "corruption")
_STRINGS = ("item_id", "wafer_id", "category", "question", "reference", "answer", "answer_source")


@dataclass(frozen=True)
class ExternalSet:
    """The checked items of one external file, in file order."""

    path: Path
    item_ids: list[str]
    wafer_ids: np.ndarray  # str
    sources: np.ndarray  # str: model | corruption
    categories: np.ndarray  # str
    grades: np.ndarray  # float, 0-10
    items: list[Item]

    def __len__(self) -> int:
        return len(self.items)


def _check(rec: Any, where: str) -> dict[str, Any]:
    """One parsed line, checked; a broken rule raises naming ``where`` (``file:line``)."""
    if not isinstance(rec, dict):
        raise WaferSageError(where, "line is not a JSON object", type(rec).__name__)
    for key in (*_STRINGS, "rows", "cols", "map", "true_labels", GRADE):
        if key not in rec:
            raise WaferSageError(where, "missing field", key)
    for key in _STRINGS:
        if not isinstance(rec[key], str):
            raise WaferSageError(where, "field must be a string", key)
    if rec["answer_source"] not in SOURCES:
        raise WaferSageError(where, "answer_source must be model or corruption", repr(rec["answer_source"]))
    g = rec[GRADE]
    if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or not 0 <= g <= 10:
        raise WaferSageError(where, "grade out of 0-10", f"{GRADE} = {g!r}")
    rows, cols, grid = rec["rows"], rec["cols"], rec["map"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (rows, cols)):
        raise WaferSageError(where, "rows and cols must be positive integers", f"{rows!r} x {cols!r}")
    if (
        not isinstance(grid, list)
        or len(grid) != rows
        or not all(isinstance(r, str) and len(r) == cols and set(r) <= set("012") for r in grid)
    ):
        raise WaferSageError(where, "map must be rows strings of cols digits 0/1/2", f"{rows} x {cols}")
    labels = rec["true_labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(c, str) for c in labels):
        raise WaferSageError(where, "true_labels must be a non-empty list of names", repr(labels)[:80])
    unknown = [c for c in labels if c not in taxonomy.class_index()]
    if unknown:
        raise WaferSageError(where, "unknown label in true_labels", unknown[0])
    return rec


def read_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line, checked (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise WaferSageError(path, "external graded file not found")
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WaferSageError(where, "invalid JSON line", exc.msg) from None
            rec = _check(rec, where)
            if rec["item_id"] in seen:
                raise WaferSageError(where, "duplicate item_id", rec["item_id"])
            seen.add(rec["item_id"])
            out.append((n, rec))
    if not out:
        raise WaferSageError(path, "external graded file has no items")
    return out


def wafer_rubric(wafer_id: str, grid: list[str], labels: list[str]) -> dict[str, Any]:
    """The rubric (as the rubrics stage writes it) of one wafer, from its map and labels."""
    kb = load_knowledge_base()
    m = np.array([[int(ch) for ch in row] for row in grid], dtype=np.uint8)
    attrs = wafer_attributes(m, labels)
    summary = analytic_descriptions(wafer_id, labels, attrs, kb, 0)["full"]
    return build_rubric(wafer_id, labels, attrs, kb, summary).model_dump(mode="json")


def read_external(path: str | Path) -> ExternalSet:
    """Every item of ``path`` with its rebuilt rubric; bad input raises one line naming the file,
    the line and the rule, before anything is computed from it."""
    path = Path(path)
    lines = read_lines(path)
    rubrics: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}
    items = []
    for n, rec in lines:
        key = (rec["wafer_id"], tuple(rec["map"]), tuple(rec["true_labels"]))
        if key not in rubrics:
            try:
                rubrics[key] = wafer_rubric(rec["wafer_id"], rec["map"], list(rec["true_labels"]))
            except (ValueError, KeyError) as exc:
                raise WaferSageError(
                    f"{path}:{n}", "rubric does not validate", str(exc).splitlines()[0]
                ) from None
        labels = rubrics[key]["defect_types"]["labels"]
        items.append(Item(rec["question"], rec["answer"], rec["reference"], rubrics[key], labels))
    recs = [r for _, r in lines]
    return ExternalSet(
        path=path,
        item_ids=[r["item_id"] for r in recs],
        wafer_ids=np.array([r["wafer_id"] for r in recs], dtype=object),
        sources=np.array([r["answer_source"] for r in recs], dtype=object),
        categories=np.array([r["category"] for r in recs], dtype=object),
        grades=np.array([float(r[GRADE]) for r in recs]),
        items=items,
    )
