"""clean: find wrong labels in the raw table and write the cleaned label table.

The cleaner fits and flags on every split of the split stage but test; test-split wafers pass
through with their labels as given. Features are the geometric ones (:mod:`wafersage.wafers.features`),
plus the pretrained vision encoder's embedding when ``clean.embedding: vision``. Scores and verdicts
come from :mod:`wafersage.labels.cleaning`; an engineer's corrections (:mod:`wafersage.labels.corrections`,
exported from the review page) then override the verdicts of the wafers they name, test wafers
included. The outputs pass a Great Expectations gate before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.gates import run_gate
from wafersage.labels.cleaning import (
    MIXED,
    SCORES,
    VERDICTS,
    CleanConfig,
    CleanResult,
    clean_labels,
    cleanlab_flags,
    detection_scores,
    standardise,
)
from wafersage.labels.corrections import DEFAULT_PATH, HEADER, apply_corrections, read_corrections
from wafersage.tracking import flatten, stage_run
from wafersage.wafers import taxonomy
from wafersage.wafers.features import geometric_features
from wafersage.wafers.rawtable import decode_map, read_raw
from wafersage.wafers.render import DEFAULT_SIZE, render_map
from wafersage.wafers.splits import TRAINABLE, wafer_splits

SCHEMA = pa.schema(
    [
        ("wafer_id", pa.string()),
        ("given_labels", pa.list_(pa.string())),
        ("kept_labels", pa.list_(pa.string())),
        ("verdict", pa.string()),
        ("noise_score", pa.float64()),
        *[(f"score_{s}", pa.float64()) for s in SCORES],
        ("suggested_label", pa.string()),
        ("suggestion_confidence", pa.float64()),
        ("cluster_id", pa.int64()),
        ("tag", pa.string()),
        ("cleaner_verdict", pa.string()),
        ("corrected", pa.bool_()),
    ]
)


#: Raw-table columns the stage reads (with the required ones); the rest stay on disk.
READ_COLUMNS = ("noise_flipped",)


def features_of(df: pd.DataFrame, embedding: str, vision: Path | None, file: Path) -> np.ndarray:
    """The feature matrix: geometric features, with the vision embedding appended when asked."""
    x = geometric_features(df).to_numpy()
    if embedding == "none":
        return x
    if embedding != "vision":
        raise WaferSageError("params.yaml", "clean.embedding must be 'vision' or 'none'", repr(embedding))
    if vision is None or not Path(vision).is_dir():
        raise WaferSageError(
            vision or "models/vision", "clean.embedding is 'vision' but the encoder is missing"
        )
    from wafersage.modeling.vision_encoder import embed

    z = np.asarray(embed(df, vision), dtype=np.float64)
    if z.shape[0] != len(df):
        raise WaferSageError(
            vision, "encoder returned the wrong number of embeddings", f"{z.shape} for {len(df)}"
        )
    return np.hstack([x, z])


def label_table(df: pd.DataFrame, res: CleanResult) -> pd.DataFrame:
    """The ``data/clean/labels.parquet`` rows."""

    def split(k: object) -> list[str]:
        return [] if k is None or k == MIXED else str(k).split("+")

    given = df["labels"].map(list).tolist()
    kept = [
        g if v == "keep" else (split(k) if v == "relabel" else [])
        for g, v, k in zip(given, res.verdict, res.final_key, strict=True)
    ]
    out = pd.DataFrame(
        {
            "wafer_id": df["wafer_id"].astype(str).to_numpy(),
            "given_labels": given,
            "kept_labels": kept,
            "verdict": res.verdict.astype(str),
            "noise_score": res.noise_score,
            **{f"score_{s}": res.scores[s] for s in SCORES},
            "suggested_label": pd.array(res.suggested, dtype=object),
            "suggestion_confidence": res.confidence,
            "cluster_id": res.cluster_id,
            "tag": pd.array(res.tag, dtype=object),
        }
    )
    return out


def as_given_table(df: pd.DataFrame) -> pd.DataFrame:
    """Label-table rows for wafers the cleaner does not touch (the test split): kept as given,
    verdict ``keep``, no scores, tag ``test``."""
    given = df["labels"].map(list).tolist()
    nan = np.full(len(df), np.nan)
    return pd.DataFrame(
        {
            "wafer_id": df["wafer_id"].astype(str).to_numpy(),
            "given_labels": given,
            "kept_labels": given,
            "verdict": "keep",
            "noise_score": nan,
            **{f"score_{s}": nan for s in SCORES},
            "suggested_label": pd.array([None] * len(df), dtype=object),
            "suggestion_confidence": nan,
            "cluster_id": np.full(len(df), -1, dtype=np.int64),
            "tag": "test",
        }
    )


def class_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per taxonomy class: wafers given it that were kept / flagged / relabelled, and the kept pool
    (wafers whose kept labels include it)."""
    out: dict[str, dict[str, int]] = {}
    for c in taxonomy.classes():
        has = table["given_labels"].map(lambda v, c=c: c in v)
        pool = table["kept_labels"].map(lambda v, c=c: c in v)
        names = {"keep": "kept", "flag": "flagged", "relabel": "relabelled"}
        out[c] = {names[v]: int((has & (table["verdict"] == v)).sum()) for v in VERDICTS}
        out[c]["kept_pool"] = int(pool.sum())
    return out


def metrics_of(df: pd.DataFrame, table: pd.DataFrame, res: CleanResult) -> dict[str, Any]:
    """The metrics JSON: counts and per class of the written table (corrections applied), and
    flipped-label detection of the cleaner's own verdicts where ground truth exists."""
    verdict = table["verdict"]
    counts = class_counts(table)
    m: dict[str, Any] = {
        "wafers": len(table),
        "kept_fraction": round(float((verdict == "keep").mean()), 4),
        "flagged": int((verdict == "flag").sum()),
        "relabelled": int((verdict == "relabel").sum()),
        "unscored": int((~res.scorable).sum()),
        "per_class": {c: {k: v for k, v in d.items()} for c, d in counts.items()},
    }
    labelled = np.array([k is not None for k in res.given_key])
    if "noise_flipped" in df and df["noise_flipped"].notna()[labelled].all() and labelled.any():
        truth = df["noise_flipped"].to_numpy(dtype=bool)
        found = np.asarray(res.verdict != "keep", dtype=bool)
        m["noise_detection"] = detection_scores(found[labelled], truth[labelled])
        m["noise_detection_cleanlab"] = detection_scores(cleanlab_flags(res)[labelled], truth[labelled])
    return m


def gate_frames(
    df: pd.DataFrame, table: pd.DataFrame, counts: dict, min_kept: Any
) -> tuple[pd.DataFrame, ...]:
    """The per-wafer frame (raw and clean ids joined) and the per-class frame the suites check."""
    raw_ids = pd.Series(df["wafer_id"].astype(str).unique())
    joined = pd.DataFrame({"wafer_id": raw_ids, "in_raw": True}).merge(
        table[["wafer_id", "verdict", "noise_score"]].assign(in_clean=True), on="wafer_id", how="outer"
    )
    joined["in_raw"] = joined["in_raw"].astype("boolean").fillna(False).astype(bool)
    joined["in_clean"] = joined["in_clean"].astype("boolean").fillna(False).astype(bool)
    mins = min_kept if isinstance(min_kept, dict) else {c: min_kept for c in taxonomy.classes()}
    per_class = pd.DataFrame(
        {
            "label": list(taxonomy.classes()),
            "kept": [counts[c]["kept_pool"] for c in taxonomy.classes()],
            "min_kept": [int(mins.get(c, 0)) for c in taxonomy.classes()],
        }
    )
    return joined, per_class


REVIEW_SCRIPT = """
function cell(s) {
  s = String(s == null ? "" : s);
  return /[",\\r\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function decisions() {
  var rows = new Map();
  JSON.parse(document.getElementById("applied").textContent).forEach(function (r) {
    rows.set(r.wafer_id, [r.label, r.note]);
  });
  document.querySelectorAll(".c[data-wafer]").forEach(function (c) {
    var d = c.querySelector("input[type=radio]:checked");
    if (!d) return;
    var label = d.value === "given" ? c.dataset.given
      : d.value === "suggested" ? c.dataset.suggested : c.querySelector("select").value;
    rows.set(c.dataset.wafer, [label, c.querySelector(".note").value]);
  });
  return rows;
}
function exportCorrections() {
  var rows = decisions(), csv = "wafer_id,label,note\\n";
  rows.forEach(function (v, k) { csv += cell(k) + "," + cell(v[0]) + "," + cell(v[1]) + "\\n"; });
  var a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csv], {type: "text/csv"}));
  a.download = "corrections.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  document.getElementById("count").textContent = rows.size + " correction(s) exported";
}
document.getElementById("export").addEventListener("click", exportCorrections);
document.querySelectorAll(".c select").forEach(function (s) {
  s.addEventListener("change", function () {
    s.closest(".c").querySelector("input[value=other]").checked = true;
  });
});
"""


def review_html(
    df: pd.DataFrame,
    table: pd.DataFrame,
    count: int,
    size: int,
    applied: pd.DataFrame | None = None,
    corrections_path: str | Path = DEFAULT_PATH,
) -> str:
    """An HTML page of the most suspicious wafers (map, given vs suggested label, scores) where an
    engineer keeps the given label, accepts the suggestion or picks another class per wafer and
    exports the corrections file (a client-side CSV download that carries the ``applied``
    corrections forward). Self-contained: inline images, style and script, no network."""
    import base64
    import html
    import io

    applied = applied if applied is not None else pd.DataFrame(columns=["wafer_id", "labels", "note"])
    cand = table[table["verdict"] != "keep"].copy()
    cand["_s"] = cand["noise_score"].fillna(2.0)  # unscored first: nothing vouches for them
    top = cand.sort_values(["_s", "wafer_id"], ascending=[False, True]).head(count)
    esc = html.escape
    cards = []
    for n, (i, row) in enumerate(top.iterrows()):
        m = decode_map(df["map"].iat[i], df["rows"].iat[i], df["cols"].iat[i])
        buf = io.BytesIO()
        render_map(m, size).save(buf, format="PNG")
        img = base64.b64encode(buf.getvalue()).decode()
        given_key = "+".join(row["given_labels"])
        given = given_key or "(unlabelled)"
        sugg = row["suggested_label"]
        sugg_key = "" if sugg is None or pd.isna(sugg) or sugg == MIXED else str(sugg)
        score = "unscored" if pd.isna(row["noise_score"]) else f"{row['noise_score']:.3f}"
        parts = " ".join(f"{s} {row[f'score_{s}']:.2f}" for s in SCORES if not pd.isna(row[f"score_{s}"]))
        wid = str(row["wafer_id"])
        options = "".join(f"<option>{esc(c)}</option>" for c in taxonomy.classes())
        off_given = "" if given_key else " disabled"
        off_sugg = "" if sugg_key else " disabled"
        cards.append(
            f'<div class="c" data-wafer="{esc(wid)}" data-given="{esc(given_key)}" '
            f'data-suggested="{esc(sugg_key)}">'
            f'<img src="data:image/png;base64,{img}" width="{size}" height="{size}" alt="{esc(wid)}">'
            f"<b>{esc(wid)}</b><br>given: {esc(given)}<br>"
            f"suggested: {esc(str(sugg))} "
            f"({row['suggestion_confidence']:.2f})<br>{row['verdict']}, score {score}<br>"
            f"<small>{parts}</small>"
            f'<fieldset><label><input type="radio" name="d{n}" value="given"{off_given}> keep given</label>'
            f'<label><input type="radio" name="d{n}" value="suggested"{off_sugg}> accept suggestion</label>'
            f'<label><input type="radio" name="d{n}" value="other"> other: '
            f'<select aria-label="class for {esc(wid)}">{options}</select></label>'
            f'<input class="note" type="text" placeholder="note (optional)" aria-label="note for {esc(wid)}">'
            f"</fieldset></div>"
        )
    carried = [
        {"wafer_id": str(w), "label": "+".join(lab), "note": str(note)}
        for w, lab, note in zip(applied["wafer_id"], applied["labels"], applied["note"], strict=True)
    ]
    # JSON inside <script>: no "</" can close it early
    data = json.dumps(carried, sort_keys=True).replace("<", "\\u003c")
    style = (
        "body{font-family:sans-serif}.c{display:inline-block;width:190px;margin:6px;vertical-align:top;"
        "font-size:12px}.c img{display:block;image-rendering:pixelated}"
        ".c fieldset{border:0;padding:2px 0;margin:0}.c label{display:block}.c .note{width:180px}"
        ".bar{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ccc}"
    )
    where = esc(str(corrections_path))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>wafersage clean review</title>"
        f"<style>{style}</style></head><body><h1>Most suspicious labels</h1>"
        f"<p>{len(top)} of {len(cand)} flagged or relabelled wafers, most suspicious first. "
        f"Per wafer keep the given label, accept the suggestion or pick another class (undecided "
        f"wafers are left to the cleaner), then export: save the file as <code>{where}</code>, "
        f"commit it and run <code>dvc repro</code>. The export carries the {len(carried)} "
        f"correction(s) already applied.</p>"
        f'<div class="bar"><button id="export" type="button">Export corrections.csv</button> '
        f'<span id="count"></span> <small>columns: {esc(HEADER)}</small></div>'
        + "".join(cards)
        + f'<script type="application/json" id="applied">{data}</script>'
        + f"<script>{REVIEW_SCRIPT}</script>"
        + "</body></html>\n"
    )


def embedding_2d(x: np.ndarray, table: pd.DataFrame, points: int, seed: int) -> pd.DataFrame:
    """A 2-D t-SNE of a seeded sample of the standardised features, for the plot."""
    from sklearn.manifold import TSNE

    n = len(x)
    idx = (
        np.arange(n) if n <= points else np.sort(np.random.default_rng(seed).choice(n, points, replace=False))
    )
    z = standardise(x)[idx]
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    sub = table.iloc[idx]
    return pd.DataFrame(
        {
            "wafer_id": sub["wafer_id"].to_numpy(),
            "x": np.round(xy[:, 0], 3),
            "y": np.round(xy[:, 1], 3),
            "label": sub["given_labels"].map(lambda v: "+".join(v) or "unlabelled").to_numpy(),
            "verdict": sub["verdict"].to_numpy(),
        }
    )


def plot_png(emb: pd.DataFrame, path: Path) -> None:
    """The embedding coloured by given label, flagged and relabelled wafers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    labels = emb["label"].where(~emb["label"].str.contains(r"\+"), "mixed")
    cmap = plt.get_cmap("tab20")
    for i, lab in enumerate(sorted(labels.unique())):
        m = (labels == lab).to_numpy()
        ax.scatter(emb["x"][m], emb["y"][m], s=6, color=cmap(i % 20), label=lab)
    bad = (emb["verdict"] != "keep").to_numpy()
    ax.scatter(
        emb["x"][bad],
        emb["y"][bad],
        s=30,
        facecolors="none",
        edgecolors="black",
        linewidths=0.6,
        label="flagged / relabelled",
    )
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title("clean: t-SNE of wafer features")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_labels(table: pd.DataFrame, path: Path) -> None:
    t = pa.Table.from_pandas(table, schema=SCHEMA, preserve_index=False)
    pq.write_table(t, path, compression="zstd")


def run(
    params: dict[str, Any],
    raw: Path,
    out: Path,
    metrics: Path,
    report_dir: Path,
    vision: Path | None = None,
    render_size: int = DEFAULT_SIZE,
    splits: Path | None = None,
    corrections: Path | None = None,
) -> dict[str, Any]:
    """Featurise, clean, apply the ``corrections`` file (None or a missing file: none), gate and
    write the label table, metrics, plot data and review page. The cleaner fits and flags on every
    split but test; test wafers are written as given (or as an engineer corrected them)."""
    params = validated("clean", params)
    cfg = CleanConfig.from_dict(params)
    everything = read_raw(raw, columns=(*READ_COLUMNS, "lot_id")).reset_index(drop=True)
    fixes = read_corrections(corrections, everything["wafer_id"].astype(str))  # refused before any work
    fit = np.isin(wafer_splits(everything, splits), TRAINABLE)
    df, held_out = everything[fit].reset_index(drop=True), everything[~fit]
    embedding = str(params["embedding"])
    suite = Path(params["suite"])
    class_suite = Path(params["class_suite"])
    inputs: dict[str, str | Path] = {"raw": raw}
    if embedding == "vision" and vision is not None:
        inputs["vision"] = vision
    if splits is not None:
        inputs["splits"] = splits
    if corrections is not None and Path(corrections).exists():
        inputs["corrections"] = corrections
    with stage_run("clean", params, inputs=inputs) as mlflow:
        x = features_of(df, embedding, vision, raw)
        res = clean_labels(x, df["labels"], cfg, file=str(raw))
        fitted = label_table(df, res)
        table = pd.concat([fitted, as_given_table(held_out)], ignore_index=True)
        order = pd.Series(range(len(everything)), index=everything["wafer_id"].astype(str))
        table = table.iloc[np.argsort(order[table["wafer_id"]].to_numpy())].reset_index(drop=True)
        table, applied = apply_corrections(table, fixes)
        cleaned = table[fit].reset_index(drop=True)  # the train and val rows, in df's order
        m = metrics_of(df, cleaned, res)
        m["test_as_given"] = len(held_out)
        m["corrections"] = applied
        min_kept = params["min_kept_per_class"]
        wafer_frame, class_frame = gate_frames(everything, table, m["per_class"], min_kept)
        docs = report_dir / "data_docs"
        g1 = run_gate("clean_labels", wafer_frame, suite, docs)
        g2 = run_gate("clean_classes", class_frame, class_suite, None)
        failures = g1.failures + g2.failures
        mlflow.log_metrics(
            {"gate_success": float(g1.success and g2.success), "expectations_failed": len(failures)}
        )
        if failures:
            short = [r for r in class_frame.itertuples() if r.kept < r.min_kept]
            detail = "; ".join(failures)
            if short:
                detail += "; classes below min_kept_per_class: " + ", ".join(
                    f"{r.label} {r.kept}<{r.min_kept}" for r in short
                )
            raise WaferSageError(out, "clean label gate failed", detail)
        m["gate"] = {"success": True, "expectations": g1.evaluated + g2.evaluated}
        emb = embedding_2d(x, cleaned, int(params["plot_points"]), cfg.seed)
        page = review_html(
            df, cleaned, int(params["review_count"]), render_size, fixes, corrections or DEFAULT_PATH
        )

        names = ("embedding.csv", "embedding.png", "review.html")
        outputs = [(out, False), *((report_dir / n, False) for n in names), (metrics, False)]
        with atomic_outputs(*outputs) as (t_labels, t_csv, t_png, t_html, t_metrics):
            write_labels(table, t_labels)
            emb.to_csv(t_csv, index=False)
            plot_png(emb, t_png)
            t_html.write_text(page)
            t_metrics.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")

        mlflow.log_metrics({k: float(v) for k, v in flatten(m).items() if isinstance(v, (int, float))})
        for p in (report_dir / "review.html", report_dir / "embedding.png", metrics):
            mlflow.log_artifact(str(p), "clean")
        for note in res.notes:
            mlflow.set_tag(f"note.{len(note) % 97}", note[:500])
    m["notes"] = res.notes
    return m
