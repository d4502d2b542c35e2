"""Defect-type answers on a real labelled val split (e.g. ../shared/data/wm811k/val_data.pkl.xz),
beside the VQA test split, when the pipeline ingests real maps.

``evaluate.real_val``: ``auto`` (the default) uses ``val_data.pkl.xz`` beside the first ingest
path when ``ingest.source`` is a real labelled source and that file exists; ``off`` never; or a
mapping ``{source: <loader source>, path: <file>}``. A val file that is also an ingest path is
refused (the models would be scored on maps they were trained on). Maps load through
:func:`wafersage.wafers.loaders.load` (restricted unpickler), render at each model's image size, and
every model answers the same type question; macro-F1 / accuracy with bootstrap CIs and paired
model-vs-model differences, per-class F1 in the breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.grounding import image_to_map
from wafersage.annotation.vqa import Q_TYPE
from wafersage.errors import WaferSageError
from wafersage.evaluation import stats
from wafersage.serving.workers import answer_in_workers
from wafersage.wafers import taxonomy
from wafersage.wafers.features import geometric_features
from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import decode_map, read_raw
from wafersage.wafers.render import render_map
from wafersage.wafers.taxonomy import NONE, primary_label

#: Ingest sources whose maps carry real labels (``png-folder`` and ``synthetic`` do not count).
REAL_SOURCES = ("wm811k", "wm811k-processed", "mixedwm38", "mixedwm38-processed")
VAL_FILE = "val_data.pkl.xz"
#: The question every model answers about each real map (the VQA stage's first type question).
QUESTION_INDEX = 0
#: The classical baseline's name among the answering models: gradient-boosted trees on the
#: geometric features of the die-level maps, trained on the pipeline's training split.
TREES = "trees"
#: The final model's specialist answering alone (its top classes, no VLM).
SPECIALIST = "specialist"
#: The pipeline's final model, the one ``best_vs_trees`` compares: the last of these present.
FINAL_ORDER = ("base", "sft", "gspo")


@dataclass(frozen=True)
class RealVal:
    source: str
    path: Path


def _ingest_paths(ingest: dict[str, Any]) -> list[Path]:
    raw = ingest.get("path")
    if raw is None:
        return []
    return [Path(p) for p in (raw if isinstance(raw, list | tuple) else [raw])]


def resolve(setting: Any, ingest: dict[str, Any]) -> RealVal | None:
    """The real val split ``evaluate.real_val`` names (``None``: none), checked."""
    if setting in (None, False, "off"):
        return None
    source = str(ingest.get("source", "synthetic"))
    ingest_paths = _ingest_paths(ingest)
    if setting == "auto":
        if source not in REAL_SOURCES or not ingest_paths:
            return None
        first = ingest_paths[0]
        path = (first if first.is_dir() else first.parent) / VAL_FILE
        if not path.is_file():
            return None
        chosen = RealVal(source, path)
    elif isinstance(setting, dict) and set(setting) == {"source", "path"}:
        if setting["source"] not in REAL_SOURCES:
            raise WaferSageError(
                "params.yaml", "evaluate.real_val.source must be one of " + "/".join(REAL_SOURCES)
            )
        chosen = RealVal(str(setting["source"]), Path(setting["path"]))
        if not chosen.path.exists():
            raise WaferSageError(chosen.path, "evaluate.real_val.path not found")
    else:
        raise WaferSageError(
            "params.yaml", "evaluate.real_val must be auto, off or {source, path}", repr(setting)
        )
    if any(chosen.path.resolve() == p.resolve() for p in ingest_paths):
        raise WaferSageError(chosen.path, "evaluate.real_val is also an ingest path (train = val)")
    folders = [p.resolve() for p in ingest_paths if p.is_dir()]
    if any(f in chosen.path.resolve().parents for f in folders):
        raise WaferSageError(
            chosen.path,
            "evaluate.real_val lies inside an ingest folder, whose every file is trained on",
            "name the train files in ingest.path instead of their folder",
        )
    return chosen


def load_maps(real: RealVal, max_maps: int | None, seed: int) -> pd.DataFrame:
    """The labelled maps of the val split (unlabelled rows dropped), at most ``max_maps`` of them
    (seeded sample, table order kept)."""
    df = load(real.source, real.path)
    df = df[df["labels"].map(len) > 0]
    if df.empty:
        raise WaferSageError(real.path, "real val split has no labelled map")
    if max_maps is not None and len(df) > int(max_maps):
        df = df.sample(n=int(max_maps), random_state=seed).sort_index()
    return df.reset_index(drop=True)


def answers(pred: Any, maps: pd.DataFrame, workers: int = 1, threads: int = 0) -> tuple[list[str], str]:
    """Every map rendered at the model's image size, answered by ``pred`` (a serving
    ``Predictor``, batched; in ``workers`` processes of ``threads`` torch threads, see
    :func:`~wafersage.serving.workers.answer_in_workers`); the question asked."""
    question = Q_TYPE[QUESTION_INDEX]
    cells = zip(maps["map"], maps["rows"], maps["cols"], strict=True)
    images = [render_map(decode_map(b, r, c), pred.image_size) for b, r, c in cells]
    label = f"real val {pred.folder.name}"
    out = answer_in_workers(pred, images, [question] * len(images), workers, threads, label)
    return out, question


def answer_table(maps: pd.DataFrame | None, answers_by_model: dict[str, list[str]]) -> pd.DataFrame:
    """One row a model x map: ``model, wafer_id, truth`` (labels joined by +), ``answer``, ``pred``
    (parsed); empty (same columns) without a real val split."""
    cols = ["model", "wafer_id", "truth", "answer", "pred"]
    if maps is None or not answers_by_model:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in cols})

    truth = [primary_label(list(v)) or "" for v in maps["labels"]]
    frames = [
        pd.DataFrame(
            {
                "model": m,
                "wafer_id": maps["wafer_id"].astype(str),
                "truth": truth,
                "answer": ans,
                "pred": [primary_label(list(parse_labels(a))) or "" for a in ans],
            }
        )
        for m, ans in answers_by_model.items()
    ]
    return pd.concat(frames, ignore_index=True)[cols]


def score_models(
    maps: pd.DataFrame, answers_by_model: dict[str, list[str]], p: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, breakdown): per model type macro-F1 / accuracy with CIs and paired differences;
    per-class F1 and support per model."""
    truth = [set(v) for v in maps["labels"]]
    n, n_boot, seed, conf = len(truth), int(p["n_boot"]), int(p["seed"]), float(p["confidence"])
    preds = {m: [parse_labels(a) for a in ans] for m, ans in answers_by_model.items()}
    f1 = {m: stats.macro_f1_metric(truth, pr) for m, pr in preds.items()}
    acc = {m: stats.accuracy_metric(truth, pr) for m, pr in preds.items()}
    metrics: dict[str, Any] = {"n": n}
    detail: dict[str, Any] = {}
    for m in preds:
        a, b = (
            stats.rounded(stats.ci(f1[m], n, n_boot, seed, conf)),
            stats.rounded(stats.ci(acc[m], n, n_boot, seed, conf)),
        )
        metrics[m] = {
            "type_macro_f1": a["value"],
            "type_accuracy": b["value"],
            "ci": {
                "type_macro_f1": {"low": a["ci_low"], "high": a["ci_high"]},
                "type_accuracy": {"low": b["ci_low"], "high": b["ci_high"]},
            },
        }
        detail[m] = {"per_class": stats.per_class_f1(truth, preds[m])}
    best = final_model(list(preds))
    pairs = [*stats.COMPARISONS, *([("best_vs_trees", best, TREES)] if best and TREES in preds else [])]
    for name, a_m, b_m in pairs:
        if a_m in preds and b_m in preds:
            metrics[name] = {
                "type_macro_f1": stats.rounded(stats.paired_diff(f1[a_m], f1[b_m], n, n_boot, seed, conf))
            }
    return metrics, detail


def final_model(names: list[str]) -> str | None:
    """The pipeline's final model among ``names`` (gspo, else sft, else base), never chosen by
    the real val scores themselves."""
    present = [m for m in FINAL_ORDER if m in names]
    return present[-1] if present else None


def training_maps(raw: Path, vqa_train: Path) -> pd.DataFrame:
    """The die-level maps of the VQA train split's wafers with the labels that split carries (what
    the VLM and the specialist learned from)."""
    from wafersage.modeling.vqa_data import LABELS, WAFER, read_split

    train = read_split(vqa_train)
    if LABELS not in train.columns:
        raise WaferSageError(vqa_train, "VQA split lacks columns", LABELS)
    labels = train.drop_duplicates(WAFER).set_index(WAFER)[LABELS]
    table = read_raw(raw, columns=["wafer_id", "rows", "cols", "map"])
    table = table[table["wafer_id"].isin(labels.index)].reset_index(drop=True)
    if table.empty:
        raise WaferSageError(raw, "no VQA train wafer in the raw table")
    table["labels"] = [[c for c in labels[w] if c != NONE] or [NONE] for w in table["wafer_id"]]
    return table


def trees_answers(train: pd.DataFrame, maps: pd.DataFrame, seed: int) -> list[str]:
    """The trees baseline's answer for each val map: gradient-boosted trees
    (:func:`wafersage.modeling.baselines.fit_trees`) on the geometric features, fitted on ``train``;
    multi-label data gets one tree model a class (one-vs-rest, every class at >= 0.5, else the
    most probable). Answers name the classes so they are parsed like any model's."""
    from wafersage.modeling.baselines import fit_trees

    sets = [set(v) for v in train["labels"]]
    used = [c for c in taxonomy.classes() if any(c in s for s in sets)]
    x_train, x_val = geometric_features(train), geometric_features(maps)
    if any(len(s) > 1 for s in sets):
        y = np.array([[c in s for c in used] for s in sets], dtype=int)
        proba = fit_trees(x_train, y, seed).predict_proba(x_val)
        chosen = [[used[i] for i in np.flatnonzero(row >= 0.5)] or [used[int(row.argmax())]] for row in proba]
    else:
        clf = fit_trees(x_train, [next(iter(s)) for s in sets], seed)
        chosen = [[str(c)] for c in clf.predict(x_val)]
    return [" and ".join(c) + "." for c in chosen]


def specialist_answers(folder: Path, maps: pd.DataFrame) -> list[str] | None:
    """The answers of the specialist shipped in model ``folder`` alone (``None``: it has none),
    from the same rendered images (and the die-level maps they carry) the VLM sees."""
    from wafersage.modeling.specialist import FOLDER, Specialist

    if not (Path(folder) / FOLDER).is_dir():
        return None
    model = Specialist.load(Path(folder) / FOLDER)
    seen, dies = specialist_inputs(maps, model.config.size)
    return [" and ".join(sorted(labels)) + "." for labels in model.predict(seen, dies)]


def specialist_inputs(maps: pd.DataFrame, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What a specialist reads of real maps (:func:`load_maps`' table): the ``size``-square map of
    each rendered image the VLM sees, and the die-level map behind it."""
    dies = [decode_map(b, r, c) for b, r, c in zip(maps["map"], maps["rows"], maps["cols"], strict=True)]
    return [image_to_map(render_map(m, size)) for m in dies], dies
