"""Human label corrections: the file an engineer exports from ``reports/clean/review.html``.

A CSV with a header ``wafer_id,label`` and an optional ``note`` column, one row a wafer. ``label``
is a taxonomy class (``Center``, ``none``, ...; the sources' spellings are accepted), or several
joined with ``+`` or ``;`` for a mixed-type map. The clean stage reads it before it cleans: a
corrected wafer keeps exactly the engineer's label (verdict ``keep``, whatever the cleaner said),
every other wafer gets the cleaner's verdict. A missing or header-only file is no correction.

The file is refused as a whole, with one line naming the file, the row (data rows from 0) and the
rule, when a column is missing or unknown, a wafer id is empty, not in the raw table or listed
twice, or a label is empty or no taxonomy class.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.errors import WaferSageError
from wafersage.wafers.rawtable import check_labels
from wafersage.wafers.taxonomy import primary_label

#: Where the pipeline reads the corrections (dvc.yaml: a dependency of the clean stage).
DEFAULT_PATH = Path("data/review/corrections.csv")
REQUIRED = ("wafer_id", "label")
OPTIONAL = ("note",)
HEADER = ",".join(REQUIRED + OPTIONAL)


def empty() -> pd.DataFrame:
    """No corrections."""
    return pd.DataFrame(
        {"wafer_id": pd.Series([], dtype=str), "labels": [], "note": pd.Series([], dtype=str)}
    )


def split_label(cell: str) -> list[str]:
    """A ``label`` cell's class names (``+`` or ``;`` between the classes of a mixed map)."""
    return [p.strip() for p in cell.replace(";", "+").split("+")]


def read_corrections(path: str | Path | None, wafer_ids: Iterable[str]) -> pd.DataFrame:
    """The corrections of ``path`` as ``wafer_id, labels (canonical, taxonomy order), note``,
    checked against the raw table's ``wafer_ids``; a missing file is no correction."""
    if path is None or not Path(path).exists():
        return empty()
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        return empty()
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WaferSageError(path, "not a readable CSV", reason) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise WaferSageError(path, "missing columns", f"{', '.join(missing)}; header must be {HEADER}")
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise WaferSageError(path, "unknown columns", f"{', '.join(unknown)}; header must be {HEADER}")
    known = set(map(str, wafer_ids))
    seen: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    notes = df["note"] if "note" in df else pd.Series([""] * len(df), index=df.index)
    for i, (wid, label, note) in enumerate(zip(df["wafer_id"], df["label"], notes, strict=True)):
        wid, label = wid.strip(), label.strip()
        if not wid:
            raise WaferSageError(path, "empty wafer_id", row=i)
        if wid not in known:
            raise WaferSageError(path, "unknown wafer_id (not in the raw table)", repr(wid), row=i)
        if wid in seen:
            raise WaferSageError(path, "duplicate wafer_id", f"{wid!r}, first at row {seen[wid]}", row=i)
        seen[wid] = i
        if not label:
            raise WaferSageError(path, "empty label", f"{wid!r}: name a taxonomy class", row=i)
        labels = check_labels(split_label(label), path, i)
        rows.append({"wafer_id": wid, "labels": labels, "note": note.strip()})
    return pd.DataFrame(rows) if rows else empty()


def apply_corrections(table: pd.DataFrame, corrections: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The clean table with each corrected wafer's ``kept_labels`` set to the engineer's labels and
    its verdict ``keep``, and the ``corrections.*`` metrics. ``table`` has the cleaner's verdict and
    suggestion (``suggested_label``: the given key for a kept wafer); ``cleaner_verdict`` keeps the
    former and ``corrected`` marks the corrected rows. A correction that changes the cleaned label
    drops the wafer's cluster (-1) and typical/hard tag (describe then tags it from its geometry):
    both were measured against the class the cleaner chose."""
    out = table.copy()
    out["cleaner_verdict"] = out["verdict"].astype(str)
    out["corrected"] = False
    pos = pd.Series(np.arange(len(out)), index=out["wafer_id"].astype(str))
    by_verdict = dict.fromkeys(("keep", "flag", "relabel"), 0)
    agreed = changed_given = changed_kept = 0
    kept = out["kept_labels"].map(list).tolist()
    stale: list[int] = []
    for wid, labels in zip(corrections["wafer_id"], corrections["labels"], strict=True):
        i = int(pos[wid])
        row = out.iloc[i]
        by_verdict[str(row["verdict"])] = by_verdict.get(str(row["verdict"]), 0) + 1
        agreed += int(primary_label(labels) == row["suggested_label"])
        changed_given += int(list(labels) != list(row["given_labels"]))
        if list(labels) != list(row["kept_labels"]):
            changed_kept += 1
            stale.append(i)
        kept[i] = list(labels)
    idx = pos[list(corrections["wafer_id"])].to_numpy(dtype=int)
    out["kept_labels"] = kept
    verdict = out["verdict"].to_numpy(dtype=object).copy()
    verdict[idx] = "keep"
    out["verdict"] = verdict
    corrected = np.zeros(len(out), dtype=bool)
    corrected[idx] = True
    out["corrected"] = corrected
    if stale:
        out["cluster_id"] = out["cluster_id"].to_numpy().copy()
        out.loc[out.index[stale], "cluster_id"] = -1
        tag = out["tag"].to_numpy(dtype=object).copy()
        tag[stale] = None
        out["tag"] = tag
    n = len(corrections)
    metrics = {
        "applied": n,
        "agreed_with_cleaner": agreed,
        "agreement": round(agreed / n, 4) if n else None,
        "changed_given_label": changed_given,
        "changed_cleaned_label": changed_kept,
        "cleaner_verdict": by_verdict,
    }
    return out, metrics
