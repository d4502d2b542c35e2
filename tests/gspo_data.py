"""Small but realistic inputs for the GSPO tests: synthetic wafers -> rubric records -> VQA splits
(every category and difficulty, the VQA stage's columns) and ``rubrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from wafersage.annotation.attributes import wafer_attributes
from wafersage.annotation.knowledge import load_knowledge_base
from wafersage.annotation.rubric import rubric_record
from wafersage.annotation.vqa import qa_pairs
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import png_bytes
from wafersage.wafers.synthetic import SyntheticConfig, generate


def records_and_pairs(n_wafers: int, size: int, seed: int) -> tuple[list[dict], pd.DataFrame]:
    """Rubric records and their QA pairs (with the rendered PNG in ``image``)."""
    kb = load_knowledge_base()
    raw = generate(SyntheticConfig(n_wafers=n_wafers, seed=seed, noise_rate=0.0, mixed_fraction=0.0))
    records, rows = [], []
    for r in raw.itertuples():
        labels = list(r.labels)
        m = decode_map(r.map, r.rows, r.cols)
        attrs = wafer_attributes(m, labels)
        rec = rubric_record(r.wafer_id, labels, attrs, kb, "a summary of the wafer map")
        records.append(rec)
        png = png_bytes(m, size)
        for p in qa_pairs(rec):
            rows.append({**p, "image": {"bytes": png, "path": None}})
    return records, pd.DataFrame(rows)


def write_inputs(folder: Path, n_wafers: int = 12, size: int = 64) -> tuple[Path, Path]:
    """``folder/vqa/{train,rl,val,test}.parquet`` (disjoint wafers) and ``folder/rubrics.jsonl``."""
    vqa = folder / "vqa"
    vqa.mkdir(parents=True, exist_ok=True)
    all_records = []
    for i, split in enumerate(("train", "val", "test", "rl")):
        n = n_wafers if split == "train" else max(n_wafers // 2, 4)
        records, df = records_and_pairs(n, size, seed=200 + i)
        df = df.assign(wafer_id=df["wafer_id"] + f"-{split}", split=split)
        df["pair_id"] = df["pair_id"].str.replace("#", f"-{split}#")
        for rec in records:
            rec["wafer_id"] = f"{rec['wafer_id']}-{split}"
        all_records.extend(records)
        df.to_parquet(vqa / f"{split}.parquet", index=False)
    rubrics = folder / "rubrics.jsonl"
    rubrics.write_text("".join(json.dumps(r) + "\n" for r in all_records))
    return vqa, rubrics
