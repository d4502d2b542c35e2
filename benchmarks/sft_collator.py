"""SFT's collator with the processor's whole-row assistant mask against the stock token-by-token
mask (``Qwen3VLProcessor._adjust_assistant_masks_indices``), on the same batches in one run.

Builds the sft stage's trainer from a workspace whose pipeline has run (``models/base``,
``data/vqa``, ``data/specialist/oof.parquet``, ``params.yaml``), draws ``--batches`` seeded batches
of the training set at the stage's batch size, and times the collator on all of them with each
mask, alternating, ``--repeats`` times. Prints ms a batch (medians), the ratio, and whether every
tensor of every batch is equal.

    .venv/bin/python benchmarks/sft_collator.py --run . [--batches 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from wafersage.modeling.processor import WaferQwen3VLProcessor
from wafersage.modeling.vqa_data import read_split
from wafersage.params import load_section
from wafersage.stages import sft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a workspace whose pipeline ran")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    p = load_section("sft", a.run / "params.yaml")
    vqa = a.run / "data/vqa"
    trainer = sft.build_trainer(
        p,
        a.run / "models/base",
        read_split(vqa / "train.parquet"),
        read_split(vqa / "val.parquet").iloc[:0],
        Path(tempfile.mkdtemp(prefix="sft_collator_")),
        False,
        a.run / "data/specialist/oof.parquet",
    )
    data, collate = trainer.train_dataset, trainer.data_collator
    rng = np.random.default_rng(0)
    size = int(p["per_device_train_batch_size"])
    batches = [[data[int(i)] for i in rng.choice(len(data), size)] for _ in range(a.batches)]
    masks = {"stock": Qwen3VLProcessor._adjust_assistant_masks_indices}
    masks["whole-row"] = WaferQwen3VLProcessor._adjust_assistant_masks_indices
    times: dict[str, list[float]] = {k: [] for k in masks}
    outputs: dict[str, list] = {}
    for _ in range(a.repeats):
        for name, method in masks.items():
            WaferQwen3VLProcessor._adjust_assistant_masks_indices = method
            t = time.perf_counter()
            outputs[name] = [collate([dict(e) for e in b]) for b in batches]
            times[name].append((time.perf_counter() - t) / len(batches) * 1000)
    WaferQwen3VLProcessor._adjust_assistant_masks_indices = masks["whole-row"]
    same = all(
        x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)
        for x, y in zip(outputs["stock"], outputs["whole-row"], strict=True)
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.batches} batches of {size}, {a.repeats} runs each, run {a.run}")
    print("| mask | ms a batch (median) | runs |")
    print("|---|---:|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    ratio = med["stock"] / med["whole-row"]
    print(f"\nstock / whole-row: {ratio:.2f}x; batches equal: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("the two masks gave different batches")


if __name__ == "__main__":
    main()
