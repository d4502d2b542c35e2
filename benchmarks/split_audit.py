"""Audit a reproduced workspace for test-split leaks: every VQA table holds only its own split's
wafers, the encoder trained on exactly the train split, the cleaner left every test wafer as given,
and a test wafer's described labels are its truth (true labels, else given) or an engineer's
correction. Prints one line a check and exits non-zero if any fails.

    python benchmarks/split_audit.py --workspace .
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from wafersage.wafers.rawtable import read_raw
from wafersage.wafers.splits import SPLITS, read_splits


def audit(ws: Path) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for the workspace ``ws``."""
    split = read_splits(ws / "data/split/splits.parquet")
    out: list[tuple[str, bool, str]] = []
    for s in SPLITS:
        wafers = set(pd.read_parquet(ws / f"data/vqa/{s}.parquet", columns=["wafer_id"])["wafer_id"])
        foreign = {w for w in wafers if split.get(w) != s}
        out.append(
            (
                f"vqa/{s}.parquet holds only {s} wafers",
                not foreign,
                f"{len(wafers)} wafers, {len(foreign)} foreign",
            )
        )
    enc = json.loads((ws / "models/vision/encoder.json").read_text())
    n_train = int((split == "train").sum())
    trained = enc.get("n_train", enc.get("meta", {}).get("n_train"))
    out.append(
        (
            "the encoder trained on the train split only",
            trained == n_train,
            f"n_train {trained}, train {n_train}",
        )
    )
    clean = pd.read_parquet(ws / "data/clean/labels.parquet").set_index("wafer_id")
    test_ids = split.index[split == "test"]
    rows = clean.loc[clean.index.intersection(test_ids)]
    untouched = rows[~rows.get("corrected", pd.Series(False, index=rows.index)).astype(bool)]
    same = all(
        list(a) == list(b) for a, b in zip(untouched["given_labels"], untouched["kept_labels"], strict=True)
    )
    ok = len(rows) == len(test_ids) and same and (untouched["verdict"] == "keep").all()
    out.append(("the cleaner left every test wafer as given", bool(ok), f"{len(rows)} test wafers"))
    raw = read_raw(ws / "data/raw/wafers.parquet", columns=["true_labels"]).set_index("wafer_id")
    bad = 0
    described = 0
    for line in (ws / "data/describe/descriptions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if split.get(rec["wafer_id"]) != "test":
            continue
        described += 1
        r = raw.loc[rec["wafer_id"]]
        truth = r.get("true_labels") if "true_labels" in raw else None
        want = list(truth) if truth is not None and len(truth) else list(r["labels"])
        fixed = rec["wafer_id"] in clean.index and bool(clean.loc[rec["wafer_id"]].get("corrected", False))
        bad += int(sorted(rec["labels"]) != sorted(want) and not fixed)
    out.append(("test wafers are described with their truth", bad == 0, f"{described} described, {bad} not"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("."))
    args = ap.parse_args()
    results = audit(args.workspace)
    for check, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {check}: {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


if __name__ == "__main__":
    main()
