"""The model card of a registered model: a Markdown text built from the evaluate stage's metrics,
the data it was trained on, its intended use, its known limits and its lineage. ``register`` puts
it in the model version's description and, as ``README.md``, in the logged model folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wafersage.evaluation.real_val import SPECIALIST, TREES
from wafersage.evaluation.report import HEADLINE

#: The card's file name inside the logged model folder (the folder allowlist accepts ``.md``).
CARD_FILE = "README.md"
#: Lineage tags on the model version: the git commit, its working-tree state and DVC hashes.
COMMIT_TAG, DIRTY_TAG = "git.commit", "git.dirty"
DVC_TAG_PREFIX, DVC_TAG_SUFFIX = "dvc.", ".md5"

INTENDED_USE = """\
Answering questions about wafer bin maps of the fab's own process: which defect pattern a map
shows, where its failing dies lie and what commonly causes such a pattern, to sort and triage
maps for yield engineers. It is not a substitute for failure analysis: a root cause it names is a
hypothesis to confirm with physical failure analysis and process data."""


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def with_ci(block: Mapping[str, Any], metric: str) -> str:
    """``value [low, high]`` of ``metric`` in a metrics block with a ``ci`` mapping."""
    ci = (block.get("ci") or {}).get(metric) or {}
    return f"{_num(block.get(metric))} [{_num(ci.get('low'))}, {_num(ci.get('high'))}]"


def _diff(d: Mapping[str, Any]) -> str:
    diff = "n/a" if d.get("diff") is None else f"{float(d['diff']):+.3f}"
    return f"{diff} [{_num(d.get('ci_low'))}, {_num(d.get('ci_high'))}]"


def _confidence(params: Mapping[str, Any]) -> str:
    conf = (params.get("evaluate") or {}).get("confidence")
    return "bootstrap" if conf is None else f"{float(conf):.0%} bootstrap"


def _test_section(metrics: Mapping[str, Any], key: str, params: Mapping[str, Any]) -> list[str]:
    m = metrics.get(key) or {}
    out = [
        "## Evaluation (test split)",
        "",
        f"{m.get('n', 'n/a')} held-out test questions ({m.get('n_type', 'n/a')} of them on the defect "
        f"type), value [{_confidence(params)} confidence interval]:",
        "",
        "| metric | value [CI] |",
        "| --- | --- |",
        *(f"| {label} | {with_ci(m, metric)} |" for metric, label in HEADLINE),
    ]
    for name, comp in sorted(metrics.items()):
        if name.startswith(f"{key}_vs_") and isinstance(comp, Mapping) and "type_macro_f1" in comp:
            other = name.removeprefix(f"{key}_vs_")
            out += ["", f"Paired difference {key} - {other}: type macro-F1 {_diff(comp['type_macro_f1'])}."]
    return out


def _real_val_section(real: Mapping[str, Any], key: str) -> list[str]:
    labels = {key: f"{key} (this model)", SPECIALIST: "its specialist alone", TREES: "trees baseline"}
    rows = [
        f"| {label} | {with_ci(real[name], 'type_macro_f1')} | {with_ci(real[name], 'type_accuracy')} |"
        for name, label in labels.items()
        if isinstance(real.get(name), Mapping)
    ]
    out = [
        "## Evaluation (real labelled val maps)",
        "",
        f"{real.get('n', 'n/a')} maps of the real source's own val split, one type question each:",
        "",
        "| answerer | type macro-F1 [CI] | type accuracy [CI] |",
        "| --- | --- | --- |",
        *rows,
    ]
    best = (real.get("best_vs_trees") or {}).get("type_macro_f1")
    if best:
        out += ["", f"Final model minus trees (best_vs_trees), paired: type macro-F1 {_diff(best)}."]
    return out


def _data_section(params: Mapping[str, Any], counts: Mapping[str, Any] | None) -> list[str]:
    ingest = params.get("ingest") or {}
    source, path = ingest.get("source", "synthetic"), ingest.get("path")
    paths = [path] if isinstance(path, str) else list(path or [])
    where = f" ({', '.join(f'`{p}`' for p in paths)})" if paths else ""
    out = ["## Data", "", f"- Source: `{source}`{where}"]
    if counts:
        out.append(
            f"- Ingested: {counts.get('wafers', 'n/a')} wafers, {counts.get('labelled', 'n/a')} labelled, "
            f"{counts.get('mixed', 'n/a')} with mixed patterns, {counts.get('lots', 'n/a')} lots"
        )
        classes = counts.get("classes") or {}
        if classes:
            out.append("- Wafers per pattern: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))
    out.append("- Split into train / val / test by lot where lots exist, else by wafer")
    return out


def _limits_section(params: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    source = (params.get("ingest") or {}).get("source", "synthetic")
    grounding = info.get("grounding") or "image"
    specialist = (
        "It consults the specialist shipped in its folder (a small CNN blended with gradient-boosted "
        "trees on the map's features, trained on the same training split): its class probabilities "
        "are part of the prompt, so its mistakes can become the model's."
        if info.get("specialist")
        else "It consults no specialist: the VLM answers alone."
    )
    return [
        "## Known limits",
        "",
        f"- Trained on the `{source}` source only: maps of other products, die grids, bin "
        "conventions or fabs are outside what it has seen, and a defect type outside its taxonomy is "
        "missed or named as the nearest known pattern.",
        "- The test figures come from a held-out split of that same source, not from production "
        "maps; they say how it does on data like its training data.",
        f"- {specialist}",
        f"- Grounding mode `{grounding}`: "
        + (
            "the prompt carries the map's analytic attributes as text; answers lean on them."
            if grounding != "image"
            else "the image alone is the prompt."
        ),
        "- Answers in English only.",
    ]


def _lineage_section(lineage: Mapping[str, str]) -> list[str]:
    commit = lineage.get(COMMIT_TAG)
    if commit is None:
        code = "- Code: not recorded (not registered from a git repository)"
    else:
        state = {"true": " with uncommitted changes", "false": ", working tree clean"}
        code = f"- Code: git commit `{commit}`{state.get(str(lineage.get(DIRTY_TAG)), '')}"
    data = sorted(
        (k.removeprefix(DVC_TAG_PREFIX).removesuffix(DVC_TAG_SUFFIX), v)
        for k, v in lineage.items()
        if k.startswith(DVC_TAG_PREFIX) and k.endswith(DVC_TAG_SUFFIX)
    )
    out = ["## Lineage", "", code]
    if data:
        out.append("- Data and models (MD5 in `dvc.lock`; with the reports, the `dvc.<path>.md5` tags):")
        out += [f"  - `{path}`: `{md5}`" for path, md5 in data if not path.startswith("reports/")]
    return out


def model_card(
    metrics: Mapping[str, Any],
    model_key: str,
    *,
    name: str = "wafersage",
    info: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    data_counts: Mapping[str, Any] | None = None,
    lineage: Mapping[str, str] | None = None,
) -> str:
    """The Markdown card of model ``model_key`` (``models/<model_key>``), registered as ``name``:
    ``metrics`` is ``reports/evaluate/metrics.json``, ``info`` the folder's ``wafersage.json``,
    ``params`` the params.yaml sections (``ingest``, ``evaluate``, ...), ``data_counts``
    ``reports/ingest/metrics.json`` and ``lineage`` the version's ``git.*`` / ``dvc.*`` tags."""
    info, params, lineage = info or {}, params or {}, lineage or {}
    base = info.get("base", "n/a")
    lines = [
        f"# {name}: {model_key}",
        "",
        f"A vision-language model answering questions about wafer bin maps (base `{base}`, "
        f"{info.get('image_size', 'n/a')} px images), trained by the wafersage pipeline.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        *_test_section(metrics, model_key, params),
    ]
    real = metrics.get("real_val")
    if isinstance(real, Mapping) and isinstance(real.get(model_key), Mapping):
        lines += ["", *_real_val_section(real, model_key)]
    sections = (_data_section(params, data_counts), _limits_section(params, info), _lineage_section(lineage))
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"
