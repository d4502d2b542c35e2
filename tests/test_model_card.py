"""The model card (figures, data, intended use, limits, lineage, from known inputs) and the
registered pyfunc's requirements (every distribution the served model imports, pinned)."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

from test_import_graph import imports, modules

from wafersage.registry.model_card import model_card
from wafersage.stages.register import requirements


def _ci(low: float, high: float) -> dict[str, float]:
    return {"low": low, "high": high}


#: ``reports/evaluate/metrics.json`` of a run with a real val split (model ``sft``).
METRICS = {
    "sft": {
        "n": 400,
        "n_type": 52,
        "type_macro_f1": 0.8291,
        "type_accuracy": 0.8846,
        "rule_score": 0.6123,
        "judge_score": 6.4571,
        "ci": {
            "type_macro_f1": _ci(0.8031, 0.8534),
            "type_accuracy": _ci(0.7885, 0.9615),
            "rule_score": _ci(0.5912, 0.6334),
            "judge_score": _ci(6.1, 6.8),
        },
    },
    "sft_vs_base": {"type_macro_f1": {"diff": 0.7012, "ci_low": 0.6, "ci_high": 0.7904}},
    "real_val": {
        "n": 1200,
        "sft": {
            "type_macro_f1": 0.7123,
            "type_accuracy": 0.81,
            "ci": {"type_macro_f1": _ci(0.6881, 0.7356), "type_accuracy": _ci(0.79, 0.83)},
        },
        "trees": {
            "type_macro_f1": 0.6902,
            "type_accuracy": 0.8,
            "ci": {"type_macro_f1": _ci(0.665, 0.7149), "type_accuracy": _ci(0.78, 0.82)},
        },
        "best_vs_trees": {"type_macro_f1": {"diff": 0.0221, "ci_low": -0.0042, "ci_high": 0.0467}},
    },
}
INFO = {"base": "tiny", "image_size": 64, "grounding": "image+attributes", "specialist": True}
PARAMS = {
    "ingest": {"source": "wm811k", "path": ["data/inputs/wm811k/train.pkl.xz"]},
    "evaluate": {"confidence": 0.9},
}
COUNTS = {"wafers": 5000, "labelled": 4100, "mixed": 0, "lots": 120, "classes": {"Center": 300, "Donut": 40}}
LINEAGE = {
    "git.commit": "0123abcd",
    "git.dirty": "false",
    "dvc.data/vqa.md5": "abc123.dir",
    "dvc.data/inputs.md5": "in456.dir",
    "dvc.reports/evaluate/metrics.json.md5": "rep789",
    "wafersage.run.sft": "run-id",
}


def test_the_card_states_the_figures_data_limits_and_lineage():
    card = model_card(
        METRICS, "sft", name="wafer-vlm", info=INFO, params=PARAMS, data_counts=COUNTS, lineage=LINEAGE
    )
    lines = card.splitlines()
    assert lines[0] == "# wafer-vlm: sft"
    assert "400 held-out test questions (52 of them on the defect type), value [90% bootstrap" in card
    for row in (
        "| type macro-F1 | 0.829 [0.803, 0.853] |",
        "| type accuracy | 0.885 [0.788, 0.962] |",
        "| rule score | 0.612 [0.591, 0.633] |",
        "| judge score (0-10) | 6.457 [6.100, 6.800] |",
        "Paired difference sft - base: type macro-F1 +0.701 [0.600, 0.790].",
        "1200 maps of the real source's own val split, one type question each:",
        "| sft (this model) | 0.712 [0.688, 0.736] | 0.810 [0.790, 0.830] |",
        "| trees baseline | 0.690 [0.665, 0.715] | 0.800 [0.780, 0.820] |",
        "Final model minus trees (best_vs_trees), paired: type macro-F1 +0.022 [-0.004, 0.047].",
        "- Source: `wm811k` (`data/inputs/wm811k/train.pkl.xz`)",
        "- Ingested: 5000 wafers, 4100 labelled, 0 with mixed patterns, 120 lots",
        "- Wafers per pattern: Center 300, Donut 40",
        "- Code: git commit `0123abcd`, working tree clean",
        "  - `data/inputs`: `in456.dir`",
        "  - `data/vqa`: `abc123.dir`",
    ):
        assert row in lines, row
    assert "rep789" not in card and "run-id" not in card  # reports and run ids stay tags only
    sections = [line for line in lines if line.startswith("## ")]
    assert sections == [
        "## Intended use",
        "## Evaluation (test split)",
        "## Evaluation (real labelled val maps)",
        "## Data",
        "## Known limits",
        "## Lineage",
    ]
    limits = card.split("## Known limits\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line[:40] for line in limits] == [
        "- Trained on the `wm811k` source only: m",
        "- The test figures come from a held-out ",
        "- It consults the specialist shipped in ",
        "- Grounding mode `image+attributes`: the",
        "- Answers in English only.",
    ]
    assert "not a substitute for failure analysis" in card


def test_a_card_without_real_val_git_or_specialist_says_so():
    metrics = {"sft": {k: v for k, v in METRICS["sft"].items() if k != "judge_score"}}
    card = model_card(metrics, "sft", info={"grounding": "image"}, lineage={"git.dirty": "true"})
    assert "## Evaluation (real labelled val maps)" not in card and "sft - base" not in card
    assert "| judge score (0-10) | n/a [6.100, 6.800] |" in card  # a missing figure is no zero
    assert "value [bootstrap confidence interval]" in card
    assert "- Source: `synthetic`\n" in card and "Ingested" not in card
    assert "- It consults no specialist: the VLM answers alone." in card
    assert "- Grounding mode `image`: the image alone is the prompt." in card
    assert "- Code: not recorded (not registered from a git repository)" in card


def _third_party(path: Path) -> set[str]:
    """Top-level names of the absolute, non-project, non-stdlib imports in a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"wafersage"}


def test_requirements_pin_every_distribution_the_served_model_imports():
    known, todo, seen = modules(), ["wafersage.serving.pyfunc_model"], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imports(name, known[name], known)
    assert {"wafersage.serving.predictor", "wafersage.modeling.specialist"} <= seen
    dists = metadata.packages_distributions()
    needed = {m: {d.lower() for d in dists[m]} for m in set().union(*(_third_party(known[m]) for m in seen))}
    pins = dict(r.split("==") for r in requirements())
    assert {m for m, d in needed.items() if not d & set(pins)} == set()
    assert {"skops", "scikit-learn", "safetensors", "pyyaml", "torch"} <= set().union(*needed.values())
    for name in ("skops", "scikit-learn", "safetensors", "tokenizers", "pyyaml", "mlflow"):
        assert pins[name] == metadata.version(name)
    assert "wafersage" not in pins  # on no index: its source is the model's code_paths
