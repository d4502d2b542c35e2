"""Small VQA tables (the columns of docs/architecture.md) from synthetic wafers, for the model tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import png_bytes
from wafersage.wafers.synthetic import SyntheticConfig, generate

QUESTIONS = (
    ("type", "What type of defect pattern is visible on this wafer map?"),
    ("spatial", "Where on the wafer are the failing dies concentrated?"),
)


def vqa_table(n_wafers: int = 40, size: int = 64, seed: int = 0) -> pd.DataFrame:
    """Two QA pairs a single-label synthetic wafer (its true label in ``labels``): its type (answer
    names the class) and a spatial one."""
    raw = generate(
        SyntheticConfig.from_dict(
            {"n_wafers": n_wafers, "seed": seed, "noise_rate": 0.0, "mixed_fraction": 0.0}
        )
    )
    rec: dict[str, list] = {
        k: []
        for k in ("wafer_id", "image", "question", "answer", "category", "difficulty", "rubric_ref", "labels")
    }
    for row in raw.itertuples():
        cls = list(row.true_labels)[0]
        png = png_bytes(decode_map(row.map, row.rows, row.cols), size)
        answers = {
            "type": f"{cls}." if cls != "none" else "No defect pattern.",
            "spatial": "Across the wafer." if cls in ("none", "Random", "Near-full") else "In one zone.",
        }
        for cat, q in QUESTIONS:
            rec["wafer_id"].append(row.wafer_id)
            rec["image"].append(png)
            rec["question"].append(q)
            rec["answer"].append(answers[cat])
            rec["category"].append(cat)
            rec["difficulty"].append(1)
            rec["rubric_ref"].append(f"{row.wafer_id}#{cat}")
            rec["labels"].append([cls])
    return pd.DataFrame(rec)


def write_vqa(folder: Path, n_wafers: int = 40, size: int = 64) -> Path:
    """train/rl/val/test parquet files of disjoint wafers under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "val", "test", "rl")):
        n = n_wafers if split == "train" else max(n_wafers // 4, 4)
        vqa_table(n, size, seed=100 + i).to_parquet(folder / f"{split}.parquet", index=False)
    return folder
