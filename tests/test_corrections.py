"""The label-review round trip: the corrections file (parsed, checked, applied), the review page that
exports it, and the clean stage applying it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wafersage.errors import WaferSageError
from wafersage.labels.corrections import HEADER, apply_corrections, read_corrections
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import write_raw
from wafersage.wafers.synthetic import SyntheticConfig, generate

IDS = ["w0", "w1", "w2", "w3"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "corrections.csv"
    p.write_text(text)
    return p


def test_reads_labels_notes_aliases_and_mixed_maps(tmp_path):
    p = _write(
        tmp_path,
        "wafer_id,label,note\nw0,Center,blob in the middle\nw1, edge_ring ,\nw2,Loc+Center,\nw3,normal,ok\n",
    )
    c = read_corrections(p, IDS)
    assert c["wafer_id"].tolist() == IDS
    assert c["labels"].tolist() == [["Center"], ["Edge-Ring"], ["Center", "Loc"], ["none"]]
    assert c["note"].tolist() == ["blob in the middle", "", "", "ok"]


def test_note_is_optional(tmp_path):
    c = read_corrections(_write(tmp_path, "wafer_id,label\nw1,Scratch;Donut\n"), IDS)
    assert c["labels"].tolist() == [["Donut", "Scratch"]] and c["note"].tolist() == [""]


@pytest.mark.parametrize("text", [None, "", f"{HEADER}\n", "wafer_id,label\n"])
def test_missing_empty_or_header_only_file_is_no_correction(tmp_path, text):
    p = tmp_path / "corrections.csv" if text is None else _write(tmp_path, text)
    c = read_corrections(p, IDS)
    assert len(c) == 0 and list(c.columns) == ["wafer_id", "labels", "note"]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ("w0,Center\nw9,Loc\n", "row 1: unknown wafer_id (not in the raw table) ('w9')"),
        ("w0,Blob\n", "row 0: unknown label ('Blob')"),
        ("w0,mixed\n", "row 0: unknown label ('mixed')"),
        ("w0,Center+\n", "row 0: unknown label ('')"),
        ("w0,Center\nw1,Loc\nw0,Donut\n", "row 2: duplicate wafer_id ('w0', first at row 0)"),
        ("w0,\n", "row 0: empty label"),
        (",Center\n", "row 0: empty wafer_id"),
        ("w0,none+Center\n", "row 0: label 'none' combined with a defect"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_file_row_and_rule(tmp_path, body, rule):
    p = _write(tmp_path, "wafer_id,label\n" + body)
    with pytest.raises(WaferSageError) as err:
        read_corrections(p, IDS)
    msg = str(err.value)
    assert msg.startswith(f"{p}: {rule}") and "\n" not in msg, msg


@pytest.mark.parametrize(
    ("header", "rule"),
    [("wafer,label", "missing columns (wafer_id;"), ("wafer_id,label,who", "unknown columns (who;")],
)
def test_bad_header_is_a_one_line_error(tmp_path, header, rule):
    p = _write(tmp_path, f"{header}\nw0,Center,x\n" if header.count(",") == 2 else f"{header}\nw0,Center\n")
    with pytest.raises(WaferSageError, match=re.escape(f"{p}: {rule}")):
        read_corrections(p, IDS)


def _table() -> pd.DataFrame:
    """A clean table as the cleaner leaves it: w0 kept, w1 flagged, w2 relabelled, w3 kept."""
    return pd.DataFrame(
        {
            "wafer_id": IDS,
            "given_labels": [["Center"], ["Loc"], ["Loc"], ["Donut"]],
            "kept_labels": [["Center"], [], ["Edge-Loc"], ["Donut"]],
            "verdict": ["keep", "flag", "relabel", "keep"],
            "noise_score": [0.1, 0.8, 0.9, 0.2],
            "suggested_label": ["Center", "Edge-Loc", "Edge-Loc", "Donut"],
            "suggestion_confidence": [0.9, 0.6, 0.95, 0.8],
            "cluster_id": [0, -1, 5, 3],
            "tag": ["typical", None, "hard", "typical"],
        }
    )


def test_apply_overrides_verdicts_and_counts_agreement(tmp_path):
    p = _write(tmp_path, "wafer_id,label\nw1,Edge-Loc\nw2,Loc\nw0,Center\n")
    out, m = apply_corrections(_table(), read_corrections(p, IDS))
    assert out["kept_labels"].tolist() == [["Center"], ["Edge-Loc"], ["Loc"], ["Donut"]]
    assert out["verdict"].tolist() == ["keep", "keep", "keep", "keep"]
    assert out["cleaner_verdict"].tolist() == ["keep", "flag", "relabel", "keep"]
    assert out["corrected"].tolist() == [True, True, True, False]
    # a changed cleaned label drops the cluster and tag measured against the cleaner's class
    assert out["cluster_id"].tolist() == [0, -1, -1, 3]
    assert [t if isinstance(t, str) else None for t in out["tag"]] == ["typical", None, None, "typical"]
    assert m == {
        "applied": 3,
        "agreed_with_cleaner": 2,  # w1 took the suggestion, w0 confirmed the kept label; w2 did not
        "agreement": 0.6667,
        "changed_given_label": 1,
        "changed_cleaned_label": 2,
        "cleaner_verdict": {"keep": 1, "flag": 1, "relabel": 1},
    }


def test_no_corrections_leave_the_table_as_the_cleaner_made_it():
    out, m = apply_corrections(_table(), read_corrections(None, IDS))
    t = _table()
    assert out[t.columns].equals(t) and not out["corrected"].any()
    assert m["applied"] == 0 and m["agreed_with_cleaner"] == 0 and m["agreement"] is None


def _raw(n: int = 150) -> pd.DataFrame:
    return generate(SyntheticConfig(n_wafers=n, seed=3, noise_rate=0.15))


def test_review_page_has_a_decision_row_per_wafer_and_the_export_control():
    from wafersage.stages.clean import review_html

    raw = _raw(4)
    table = _table().assign(
        wafer_id=raw["wafer_id"].tolist(),
        **{f"score_{s}": 0.5 for s in ("classifier", "knn", "cluster", "density")},
    )
    table.loc[1, "suggested_label"] = "mixed"
    applied = pd.DataFrame(
        {"wafer_id": [raw["wafer_id"].iat[0]], "labels": [["Center"]], "note": ["</script><b>x"]}
    )
    page = review_html(raw, table, 10, 32, applied, "data/review/corrections.csv")
    assert '<button id="export" type="button">Export corrections.csv</button>' in page
    assert 'a.download = "corrections.csv"' in page and "wafer_id,label,note" in page
    for i in (1, 2):  # the flagged and the relabelled wafer, each with its three choices
        wid = raw["wafer_id"].iat[i]
        card = re.search(rf'<div class="c" data-wafer="{re.escape(wid)}".*?</fieldset></div>', page)
        assert card, wid
        for choice in ("given", "suggested", "other"):
            assert f'value="{choice}"' in card.group(0)
        assert all(f"<option>{c}</option>" in card.group(0) for c in taxonomy.classes())
    assert page.count('class="c" data-wafer=') == 2  # kept wafers are not asked about
    assert re.search(r'value="suggested" disabled', page)  # a pooled "mixed" suggestion is no class
    carried = re.search(r'<script type="application/json" id="applied">(.*?)</script>', page).group(1)
    assert json.loads(carried) == [
        {"wafer_id": raw["wafer_id"].iat[0], "label": "Center", "note": "</script><b>x"}
    ]
    assert "http://" not in page and "https://" not in page  # self-contained


# The page's script run by node against a stand-in DOM: the engineer's choices on three cards
# (keep given, accept the suggestion, another class with a note holding a comma and a quote).
HARNESS = """
const choices = JSON.parse(process.argv[1]);
const applied = process.argv[2];  // node -e: argv[1:] are the arguments
let handler = null, csv = null;
const card = (c) => ({
  dataset: {wafer: c.wafer, given: c.given, suggested: c.suggested},
  querySelector: (sel) => sel === "input[type=radio]:checked" ? (c.choice ? {value: c.choice} : null)
    : sel === "select" ? {value: c.other || "none"} : {value: c.note || ""},
});
global.document = {
  getElementById: (id) => id === "applied" ? {textContent: applied}
    : id === "export" ? {addEventListener: (e, f) => { handler = f; }} : {textContent: ""},
  querySelectorAll: (sel) => sel === ".c[data-wafer]" ? choices.map(card) : [],
  createElement: () => ({click() {}, remove() {}}),
  body: {appendChild() {}},
};
global.Blob = class { constructor(parts) { csv = parts.join(""); } };
global.URL = {createObjectURL: () => "blob:x"};
eval(require("fs").readFileSync(0, "utf8"));
handler();
process.stdout.write(csv);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_exported_file_is_what_the_pipeline_reads(tmp_path):
    from wafersage.stages.clean import review_html

    raw = _raw(4)
    ids = raw["wafer_id"].tolist()
    table = _table().assign(
        wafer_id=ids, **{f"score_{s}": 0.5 for s in ("classifier", "knn", "cluster", "density")}
    )
    applied = pd.DataFrame(
        {"wafer_id": [ids[0], ids[1]], "labels": [["Center"], ["Loc"]], "note": ["", "old"]}
    )
    page = review_html(raw, table, 10, 32, applied)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    carried = re.search(r'id="applied">(.*?)</script>', page).group(1)
    cards = re.findall(r'data-wafer="([^"]*)" data-given="([^"]*)" data-suggested="([^"]*)"', page)
    assert [c[0] for c in cards] == [ids[2], ids[1]]  # relabelled (0.9) before flagged (0.8)
    choices = [
        {"wafer": cards[0][0], "given": cards[0][1], "suggested": cards[0][2], "choice": "suggested"},
        {
            "wafer": cards[1][0],
            "given": cards[1][1],
            "suggested": cards[1][2],
            "choice": "other",
            "other": "Scratch",
            "note": 'long, thin "line"',
        },
    ]
    r = subprocess.run(
        ["node", "-e", HARNESS, json.dumps(choices), carried], input=script, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    p = _write(tmp_path, r.stdout)
    assert r.stdout.startswith(HEADER + "\n")
    c = read_corrections(p, ids).set_index("wafer_id")
    # the applied correction of ids[0] is carried; ids[1]'s is replaced by today's decision
    assert c["labels"].to_dict() == {ids[0]: ["Center"], ids[1]: ["Scratch"], ids[2]: ["Edge-Loc"]}
    assert c.loc[ids[1], "note"] == 'long, thin "line"'


PARAMS = {
    "folds": 3,
    "min_class_size": 3,
    "classifier_trees": 40,
    "knn_k": 5,
    "lof_neighbors": 5,
    "kmeans_per_label": 2,
    "plot_points": 60,
    "review_count": 8,
    "min_kept_per_class": 0,
}


@pytest.fixture
def stage_env(tmp_path, monkeypatch, repo_root):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = {
        **PARAMS,
        "suite": str(repo_root / "expectations/clean.json"),
        "class_suite": str(repo_root / "expectations/clean_classes.json"),
    }
    raw = tmp_path / "raw.parquet"
    write_raw(_raw(), raw)
    return tmp_path, params, raw


def _run(tmp: Path, params: dict, raw: Path, corrections: Path | None):
    from wafersage.stages import clean as stage

    return stage.run(
        params, raw, tmp / "labels.parquet", tmp / "metrics.json", tmp / "reports", corrections=corrections
    )


@pytest.mark.slow
def test_stage_applies_corrections_and_reports_them(stage_env):
    tmp, params, raw = stage_env
    _run(tmp, params, raw, None)
    before = pd.read_parquet(tmp / "labels.parquet")
    flagged = before[(before["verdict"] != "keep") & (before["suggested_label"] != "mixed")].iloc[0]
    kept = before[before["verdict"] == "keep"].iloc[0]
    other = next(c for c in taxonomy.classes() if [c] != list(kept["given_labels"]))
    fixes = _write(
        tmp,
        f"{HEADER}\n{flagged['wafer_id']},{flagged['suggested_label']},as suggested\n"
        f"{kept['wafer_id']},{other},\n",
    )
    m = _run(tmp, params, raw, fixes)
    after = pd.read_parquet(tmp / "labels.parquet").set_index("wafer_id")
    assert after.loc[flagged["wafer_id"], "kept_labels"].tolist() == flagged["suggested_label"].split("+")
    assert after.loc[kept["wafer_id"], "kept_labels"].tolist() == [other]
    assert after.loc[[flagged["wafer_id"], kept["wafer_id"]], "verdict"].tolist() == ["keep", "keep"]
    assert int(after["corrected"].sum()) == 2
    written = json.loads((tmp / "metrics.json").read_text())
    assert written["corrections"]["applied"] == 2 and written["corrections"]["agreed_with_cleaner"] == 1
    assert written["corrections"]["agreement"] == 0.5 and m["corrections"] == written["corrections"]
    # the cleaner's detection scores do not move with what the engineer decided
    first = json.loads(json.dumps(written["noise_detection"]))
    _run(tmp, params, raw, None)
    assert json.loads((tmp / "metrics.json").read_text())["noise_detection"] == first
    page = (tmp / "reports/review.html").read_text()
    assert page.count('class="c" data-wafer=') == min(8, int((before["verdict"] != "keep").sum()))


def test_stage_refuses_a_bad_corrections_file_and_writes_nothing(stage_env):
    tmp, params, raw = stage_env
    fixes = _write(tmp, "wafer_id,label\nnot-a-wafer,Center\n")
    with pytest.raises(WaferSageError, match=r"corrections.csv: row 0: unknown wafer_id"):
        _run(tmp, params, raw, fixes)
    assert not any((tmp / n).exists() for n in ("labels.parquet", "metrics.json", "reports"))
    assert not np.any([p.suffix == ".tmp" for p in tmp.rglob("*")])
