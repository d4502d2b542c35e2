"""Defect-type quality of free-text answers: parse answer and reference with the answer parser,
then accuracy (exact label-set match) and macro-F1 over the taxonomy classes (multi-label
one-vs-rest, averaged over the classes present in the references or the predictions)."""

from __future__ import annotations

from collections.abc import Sequence

from wafersage.annotation.answer_parser import parse_labels
from wafersage.wafers import taxonomy


def type_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """``type_macro_f1``, ``type_accuracy`` and ``type_n`` (references that name a class)."""
    if len(references) != len(predictions):
        raise ValueError("references and predictions differ in length")
    pairs = [(parse_labels(r), parse_labels(p)) for r, p in zip(references, predictions, strict=True)]
    pairs = [(t, p) for t, p in pairs if t]
    if not pairs:
        return {"type_macro_f1": 0.0, "type_accuracy": 0.0, "type_n": 0}
    f1s = []
    for c in taxonomy.classes():
        tp = sum(c in t and c in p for t, p in pairs)
        fp = sum(c not in t and c in p for t, p in pairs)
        fn = sum(c in t and c not in p for t, p in pairs)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "type_macro_f1": round(sum(f1s) / len(f1s), 4),
        "type_accuracy": round(sum(t == p for t, p in pairs) / len(pairs), 4),
        "type_n": len(pairs),
    }
