"""The align stage against an external judge (``align.external``): the graded file is read and
checked line by line, the fit sees only the fit half's grades, ``external.*`` lands in the metrics,
and bad input is one line with nothing written. A synthetic graded file is built here (wafers from
the generator, answers from the calibration corruptions, grades from the reference judge); the real
LLM-graded file is used only where ``../shared/calibration/`` is present."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.score import config as cfgmod
from wafersage.score.external import read_external
from wafersage.stages import align

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "calibration" / "llm_graded.jsonl"
#: Variants written as if a model had answered (the rest are corruptions).
MODEL_LIKE = ("reference", "paraphrase", "truncated", "drop_dimension")
FAST = {"n_trials": 12, "n_startup_trials": 4, "n_boot": 200, "dead_groups": 50, "throughput_batch": 64}


def _records(n_wafers: int, seed: int) -> tuple[dict, pd.DataFrame, dict]:
    """Rubric records by wafer id, their QA pairs, and the maps (as digit rows) by wafer id."""
    from wafersage.annotation.attributes import wafer_attributes
    from wafersage.annotation.knowledge import load_knowledge_base
    from wafersage.annotation.rubric import rubric_record
    from wafersage.annotation.vqa import qa_pairs
    from wafersage.wafers.rawtable import decode_map
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    kb = load_knowledge_base()
    recs, maps = {}, {}
    for r in generate(SyntheticConfig(n_wafers=n_wafers, seed=seed, noise_rate=0.0)).itertuples():
        m = decode_map(r.map, r.rows, r.cols)
        labels = list(r.labels)
        recs[r.wafer_id] = rubric_record(
            r.wafer_id, labels, wafer_attributes(m, labels), kb, "a test wafer summary"
        )
        maps[r.wafer_id] = ["".join(str(int(v)) for v in row) for row in m]
    pairs = pd.DataFrame([p for rec in recs.values() for p in qa_pairs(rec)])
    return recs, pairs, maps


def _graded(pool: pd.DataFrame, recs: dict) -> np.ndarray:
    """The reference judge's 0-10 grades of a pool's answers."""
    from wafersage.score.judges import ReferenceJudge
    from wafersage.stages.judge import judge_items

    return np.array([v.score for v in ReferenceJudge().judge(judge_items(pool, recs, {}))])


def write_external(path: Path, n_wafers: int = 14, seed: int = 3, n_pairs: int = 30) -> list[dict]:
    """A graded file in the external format; returns its records."""
    from wafersage.annotation.knowledge import load_knowledge_base
    from wafersage.score.calibration import build_pool

    recs, pairs, maps = _records(n_wafers, seed)
    pool = build_pool(pairs, recs, load_knowledge_base(), n_pairs, seed)
    grades = _graded(pool, recs)
    rows = []
    for p, g in zip(pool.itertuples(), grades, strict=True):
        m = maps[p.wafer_id]
        rows.append(
            {
                "item_id": p.item_id,
                "wafer_id": p.wafer_id,
                "rows": len(m),
                "cols": len(m[0]),
                "map": m,
                "labels": recs[p.wafer_id]["labels"],
                "true_labels": recs[p.wafer_id]["labels"],
                "category": p.category,
                "question": p.question,
                "reference": p.reference,
                "answer": p.answer,
                "answer_source": "model" if p.variant in MODEL_LIKE else "corruption",
                "llm_score": round(float(np.clip(g, 0, 10)), 1),
                "llm_reason": "synthetic",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def external_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ext") / "graded.jsonl"
    write_external(path)
    return path


def _write_pool(d: Path) -> None:
    """A small judged calibration pool (pool.parquet, scores.parquet, rubrics.jsonl) in ``d``."""
    from wafersage.annotation.knowledge import load_knowledge_base
    from wafersage.score.calibration import build_pool

    recs, pairs, _ = _records(16, seed=1)
    pool = build_pool(pairs, recs, load_knowledge_base(), 20, 0)
    pool.to_parquet(d / "pool.parquet")
    pd.DataFrame({"item_id": pool["item_id"], "judge": "reference", "score": _graded(pool, recs)}).to_parquet(
        d / "scores.parquet"
    )
    (d / "rubrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs.values()))


def _run(d: Path, **params) -> dict:
    return align.run(
        {**FAST, **params},
        d / "pool.parquet",
        d / "scores.parquet",
        d / "rubrics.jsonl",
        d / "out" / "rc.json",
        d / "out" / "align.json",
        d / "out" / "scatter.csv",
    )


def _outputs(d: Path) -> list[Path]:
    return sorted(p for p in (d / "out").glob("*")) if (d / "out").exists() else []


# --- the reader ------------------------------------------------------------------------------------


def test_reader_rebuilds_a_rubric_per_wafer(external_file) -> None:
    ext = read_external(external_file)
    rows = [json.loads(x) for x in external_file.read_text().splitlines()]
    assert len(ext) == len(rows) and ext.item_ids == [r["item_id"] for r in rows]
    assert set(ext.sources) == {"model", "corruption"}
    for it, r in zip(ext.items, rows, strict=True):
        assert it.rubric["wafer_id"] == r["wafer_id"] and it.answer == r["answer"]
        assert sorted(it.labels) == sorted(r["true_labels"])
        assert it.rubric["spatial"]["must_hit"]  # a rubric as the rubrics stage writes it


def _bad_line(rows: list[dict], i: int, change) -> list[str]:
    lines = [json.dumps(r) for r in rows]
    lines[i] = change(dict(rows[i]))
    return lines


CASES = {
    "malformed-json": (lambda r: json.dumps(r)[:-5], "invalid JSON line"),
    "grade-above-10": (lambda r: json.dumps({**r, "llm_score": 10.5}), "grade out of 0-10"),
    "grade-negative": (lambda r: json.dumps({**r, "llm_score": -1}), "grade out of 0-10"),
    "grade-a-string": (lambda r: json.dumps({**r, "llm_score": "7"}), "grade out of 0-10"),
    "grade-nan": (lambda r: json.dumps({**r, "llm_score": float("nan")}), "grade out of 0-10"),
    "missing-answer": (lambda r: json.dumps({k: v for k, v in r.items() if k != "answer"}), "missing field"),
    "missing-grade": (
        lambda r: json.dumps({k: v for k, v in r.items() if k != "llm_score"}),
        "missing field",
    ),
    "map-wrong-size": (lambda r: json.dumps({**r, "map": r["map"][:-1]}), "map must be rows strings"),
    "map-bad-digit": (lambda r: json.dumps({**r, "map": ["3" * r["cols"]] * r["rows"]}), "map must be"),
    "unknown-label": (lambda r: json.dumps({**r, "true_labels": ["Blob"]}), "unknown label"),
    "bad-source": (lambda r: json.dumps({**r, "answer_source": "human"}), "answer_source must be"),
    "not-an-object": (lambda r: "[1, 2]", "line is not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_external_line_is_one_line_and_writes_nothing(tmp_path, external_file, case) -> None:
    change, rule = CASES[case]
    rows = [json.loads(x) for x in external_file.read_text().splitlines()]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(_bad_line(rows, 2, change)) + "\n")
    with pytest.raises(WaferSageError) as exc:  # fails before the pool is even read
        _run(tmp_path, external=str(bad))
    msg = str(exc.value)
    assert "\n" not in msg and f"{bad}:3" in msg and rule in msg, msg
    assert _outputs(tmp_path) == []


def test_duplicate_item_and_missing_file_are_refused(tmp_path, external_file) -> None:
    lines = external_file.read_text().splitlines()
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join([*lines[:5], lines[1]]) + "\n")
    with pytest.raises(WaferSageError, match=rf"{dup}:6: duplicate item_id"):
        _run(tmp_path, external=str(dup))
    with pytest.raises(WaferSageError, match="external graded file not found"):
        _run(tmp_path, external=str(tmp_path / "absent.jsonl"))
    with pytest.raises(WaferSageError, match="needs align.external"):
        _run(tmp_path, fit_on="external")
    with pytest.raises(WaferSageError, match="align.fit_on: input should be 'reference' or 'external'"):
        _run(tmp_path, external=str(external_file), fit_on="both")
    assert _outputs(tmp_path) == []


# --- the fit -------------------------------------------------------------------------------------


def _permute(grades: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    out = grades.copy()
    idx = np.flatnonzero(mask)
    out[idx] = grades[np.random.default_rng(seed).permutation(idx)]
    assert not np.array_equal(out, grades)
    return out


def test_fit_never_reads_heldout_grades(external_file) -> None:
    ext = read_external(external_file)
    params = validated("align", {**FAST, "seed": 0})
    held = align.heldout_mask(pd.Series(ext.wafer_ids), 0.5, 0)
    assert held.any() and not held.all()
    best, report = align.external_alignment(ext, params)
    shuffled = dataclasses.replace(ext, grades=_permute(ext.grades, held, 1))
    best_shuffled, report_shuffled = align.external_alignment(shuffled, params)
    assert best_shuffled == best  # the held-out grades never reached the search
    assert report_shuffled["spearman_fit"] == report["spearman_fit"]
    assert report_shuffled["spearman_heldout"] != report["spearman_heldout"]  # ... only the report
    # the check can fail: the search does read the fit half's grades
    moved = dataclasses.replace(ext, grades=_permute(ext.grades, ~held, 1))
    assert align.external_alignment(moved, params)[1]["spearman_fit"] != report["spearman_fit"]


def test_rank_agreement_matches_scipy_and_brackets_the_point() -> None:
    from scipy.stats import kendalltau, spearmanr

    rng = np.random.default_rng(0)
    y = rng.integers(0, 11, 60).astype(float)
    a, b = y + rng.normal(0, 2, 60), rng.normal(0, 1, 60)
    out = align.rank_agreement({"a": a, "b": b}, y, n_boot=300, seed=0)
    assert out["spearman_heldout"] == round(spearmanr(a, y)[0], 4)
    assert out["kendall_heldout_b"] == round(kendalltau(b, y)[0], 4)
    ci = out["spearman_heldout_ci"]
    assert ci["low"] < out["spearman_heldout"] < ci["high"]
    assert out["spearman_gain_vs_b"]["low"] > 0  # a tracks y, b is noise


# --- the stage -------------------------------------------------------------------------------------


@pytest.mark.slow  # four stage runs, MLflow's sqlite schema among them
def test_stage_reports_external_keys_and_fit_on(tmp_path, monkeypatch, external_file) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    _write_pool(tmp_path)

    _run(tmp_path)
    metrics = json.loads((tmp_path / "out" / "align.json").read_text())
    assert "external" not in metrics and "proxy" in metrics["reference_judge_note"]
    default_config = (tmp_path / "out" / "rc.json").read_bytes()

    res = _run(tmp_path, external=str(external_file))
    metrics = json.loads((tmp_path / "out" / "align.json").read_text())
    ext = metrics["external"]
    assert res["external"] == ext
    # the reward config is the reference fit, byte for byte, whether or not an external file is set
    assert (tmp_path / "out" / "rc.json").read_bytes() == default_config
    for key in ("spearman_heldout", "kendall_heldout"):
        assert -1 <= ext[key] <= 1
        assert ext[f"{key}_ci"]["low"] <= ext[key] <= ext[f"{key}_ci"]["high"]
        assert ext["model_answers"][key] is not None and set(ext["model_answers"][f"{key}_ci"]) == {
            "low",
            "high",
        }
    for other in ("reference_fitted", "paper_default", "hardened"):
        assert f"spearman_heldout_{other}" in ext and f"spearman_heldout_{other}" in ext["model_answers"]
        assert set(ext[f"spearman_gain_vs_{other}"]) == {"diff", "low", "high"}
    items = ext["items"]
    assert items["fit"] + items["heldout"] == items["total"] == len(read_external(external_file))
    assert ext["model_answers"]["items"] == items["heldout_model"] > 0
    assert ext["fit_on"] == "reference" and len(ext["md5"]) == 32

    _run(tmp_path, external=str(external_file), fit_on="external")
    ext_fit = json.loads((tmp_path / "out" / "rc.json").read_text())
    fitted = cfgmod.load(tmp_path / "out" / "rc.json")
    assert ext_fit["_meta"]["fit_on"] == "external" and ext_fit["_meta"]["external_md5"] == ext["md5"]
    assert ext_fit["_meta"]["spearman_fit"] == ext["spearman_fit"]

    # shuffling the held-out grades leaves the reward config fitted on the external file unchanged
    e = read_external(external_file)
    held = align.heldout_mask(pd.Series(e.wafer_ids), 0.5, 0)
    rows = [json.loads(x) for x in external_file.read_text().splitlines()]
    grades = _permute(e.grades, held, 2)
    shuffled = tmp_path / "shuffled.jsonl"
    body = (json.dumps({**r, "llm_score": g}) for r, g in zip(rows, grades, strict=True))
    shuffled.write_text("\n".join(body) + "\n")
    _run(tmp_path, external=str(shuffled), fit_on="external")
    assert cfgmod.load(tmp_path / "out" / "rc.json") == fitted


@pytest.mark.realdata
def test_real_llm_graded_file_external_fit_beats_paper_default() -> None:
    """On the real LLM-graded answers (default seed and split), the config fitted on the fit half
    orders the held-out answers as the LLM judge does at least as well as the paper's weights, over
    all answers and over the model answers (docs/benchmarks.md: each true in 9 of 10 splits; the
    0.85 goal is not met, so it is not asserted)."""
    if not REAL.is_file():
        pytest.skip(f"LLM-graded calibration file not found at {REAL}")
    ext = read_external(REAL)
    _, report = align.external_alignment(ext, validated("align", {"seed": 0, "n_trials": 60, "n_boot": 1000}))
    assert report["items"]["total"] == len(ext) >= 100
    assert report["spearman_heldout"] >= report["spearman_heldout_paper_default"]
    model = report["model_answers"]
    assert model["items"] > 10 and model["spearman_heldout"] >= model["spearman_heldout_paper_default"]
