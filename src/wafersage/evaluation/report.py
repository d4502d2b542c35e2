"""The evaluation report a yield engineer opens: one self-contained HTML file (``reports/index.html``)
with the headline table (metrics with bootstrap CIs, paired differences), plots as inline PNGs,
and a gallery of wafer images with question, reference, each model's answer and scores, worst
cases first. No external assets: it opens from a file share or an air-gapped laptop."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd

HEADLINE = (
    ("type_macro_f1", "type macro-F1"),
    ("type_accuracy", "type accuracy"),
    ("rule_score", "rule score"),
    ("judge_score", "judge score (0-10)"),
)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2733;
max-width:1200px}h1{font-size:1.6rem}
h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ccd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccd;padding:.3rem .6rem;text-align:right}
th{background:#eef2f7}td:first-child,th:first-child{text-align:left}.ci{color:#667;font-size:.85em}
.pos{color:#17612e}.neg{color:#a32020}.plots img{max-width:100%;margin:.5rem 0}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1rem}
.card{border:1px solid #ccd;border-radius:6px;padding:.6rem;display:flex;gap:.6rem}
.card img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #dde}
.card p{margin:.15rem 0;font-size:.85rem}.tag{font-size:.75rem;color:#556}.ans{margin-left:.5rem}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def headline_table(metrics: dict[str, Any], names: list[str]) -> str:
    """Models x metrics, value and CI."""
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in HEADLINE)
    rows = []
    for n in names:
        m = metrics[n]
        cells = "".join(
            f"<td>{_fmt(m.get(k))} <span class=ci>[{_fmt(m['ci'][k]['low'])}, "
            f"{_fmt(m['ci'][k]['high'])}]</span></td>"
            for k, _ in HEADLINE
        )
        speed = _fmt(m.get("answers_per_s"), 2)
        rows.append(f"<tr><td>{html.escape(n)}</td>{cells}<td>{m['n']}</td><td>{speed}</td></tr>")
    table = f"<table><tr><th>model</th>{head}<th>answers</th><th>answers/s</th></tr>{''.join(rows)}</table>"
    comps = [k for k in metrics if "_vs_" in k]
    if comps:
        crow = []
        for c in comps:
            for m, d in metrics[c].items():
                cls = "pos" if (d["ci_low"] or 0) > 0 else "neg" if (d["ci_high"] or 0) < 0 else ""
                crow.append(
                    f"<tr><td>{html.escape(c)}</td><td>{html.escape(m)}</td>"
                    f"<td class={cls}>{_fmt(d['diff'])}</td>"
                    f"<td>[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]</td></tr>"
                )
        table += (
            "<h3>Paired differences (bootstrap over the same questions)</h3><table><tr><th>comparison</th>"
        )
        table += "<th>metric</th><th>difference</th><th>95% CI</th></tr>" + "".join(crow) + "</table>"
    return table


def plots(
    metrics: dict[str, Any], detail: dict[str, Any], items: pd.DataFrame, names: list[str]
) -> list[str]:
    """Inline PNG plots: headline metrics with CIs, rule score per category, the last model's confusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes, ("type_macro_f1", "rule_score", "judge_score"), strict=True):
        vals = [metrics[n][key] or 0 for n in names]
        lo = [vals[i] - (metrics[n]["ci"][key]["low"] or vals[i]) for i, n in enumerate(names)]
        hi = [(metrics[n]["ci"][key]["high"] or vals[i]) - vals[i] for i, n in enumerate(names)]
        ax.bar(names, vals, yerr=[lo, hi], capsize=4, color=["#9aa7b8", "#4a78b0", "#1f9a5a"][: len(names)])
        ax.set_title(key)
    out.append(_png(fig))
    cats = sorted({c for n in names for c in detail[n]["category"]})
    fig, ax = plt.subplots(figsize=(11, 3))
    w = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        v = [(detail[n]["category"].get(c) or {}).get("rule_score", {}).get("value") or 0 for c in cats]
        ax.bar(np.arange(len(cats)) + i * w, v, w, label=n)
    ax.set_xticks(np.arange(len(cats)) + w * (len(names) - 1) / 2, cats)
    ax.set_title("rule score by question category")
    ax.legend()
    out.append(_png(fig))
    t = items[(items["model"] == names[-1]) & items["is_type"] & (items["truth"] != "")]
    if len(t):
        pred = t["pred"].replace("", "(none)")
        labels = sorted(set(t["truth"]) | set(pred))
        idx = {x: i for i, x in enumerate(labels)}
        cm = np.zeros((len(labels), len(labels)), dtype=int)
        for a, b in zip(t["truth"], pred, strict=True):
            cm[idx[a], idx[b]] += 1
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 0.8 + 0.5 * len(labels)))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"defect type confusion ({names[-1]})")
        out.append(_png(fig))
    return out


def gallery(items: pd.DataFrame, images: dict[str, Any], names: list[str], n: int) -> str:
    """Cards for the ``n`` questions the last model scored worst on (rule score, then judge)."""
    from wafersage.modeling.vqa_data import image_bytes

    last = items[items["model"] == names[-1]].sort_values(["rule_score", "judge_score", "item_id"])
    by = {m: g.set_index("item_id") for m, g in items.groupby("model")}
    cards = []
    for r in last.head(n).itertuples():
        src = "data:image/png;base64," + base64.b64encode(image_bytes(images[r.item_id])).decode()
        answers = "".join(
            f"<p class=ans><b>{html.escape(m)}</b> (rule {_fmt(by[m].loc[r.item_id, 'rule_score'], 2)}, "
            f"judge {_fmt(by[m].loc[r.item_id, 'judge_score'], 1)}): "
            f"{html.escape(str(by[m].loc[r.item_id, 'answer']) or '(empty)')}</p>"
            for m in names
        )
        tag = (
            f"{html.escape(r.wafer_id)} &middot; {html.escape(r.category)} &middot; difficulty {r.difficulty}"
        )
        cards.append(
            f'<div class=card><img alt="{html.escape(r.wafer_id)}" src="{src}"><div>'
            f"<p class=tag>{tag}</p>"
            f"<p><b>Q:</b> {html.escape(r.question)}</p><p><b>Reference:</b> {html.escape(r.reference)}</p>"
            f"{answers}</div></div>"
        )
    return "<div class=gallery>" + "".join(cards) + "</div>"


def render_html(
    metrics: dict[str, Any],
    detail: dict[str, Any],
    items: pd.DataFrame,
    images: dict[str, Any],
    names: list[str],
    judge: str,
    gallery_n: int = 24,
) -> str:
    """The whole report as one HTML string."""
    n_q = int(items["item_id"].nunique())
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>wafersage evaluation</title>",
        f"<style>{CSS}</style></head><body><h1>wafersage evaluation</h1>",
        f"<p>{n_q} test questions answered by {len(names)} model(s): {html.escape(', '.join(names))}. "
        f"Judge: <b>{html.escape(judge)}</b>"
        + (" (the offline claim-level rubric judge, not an LLM)" if judge == "reference" else "")
        + ". Brackets: 95% bootstrap confidence intervals.</p>",
        "<h2>Headline</h2>",
        headline_table(metrics, names),
        "<h2>Plots</h2><div class=plots>",
        *plots(metrics, detail, items, names),
        "</div>",
        f"<h2>Gallery: worst {gallery_n} answers of {html.escape(names[-1])} first</h2>",
        gallery(items, images, names, gallery_n),
        "</body></html>",
    ]
    return "\n".join(parts)
