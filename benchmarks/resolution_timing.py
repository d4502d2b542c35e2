"""CPU cost of the image size: seconds per step of the vision-encoder pretraining and of SFT (the
tiny VLM, TRL), and greedy answers/s, at each render size, run one after the other in one process
so the sizes share the machine's state; ratios to 96 px.

    .venv/bin/python benchmarks/resolution_timing.py [--configs 64:image 96:image ...] [--sft-steps 40]

Synthetic single-pattern wafers, one type question a wafer, batch 16 (SFT) / 64 (encoder),
torch threads 1 (the pipeline's setting); a grounded prompt (``image+attributes``) is longer, so
its SFT steps cost more. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

QUESTION = "What type of defect pattern is visible on this wafer map?"


def vqa_dir(root: Path, size: int, n: int) -> Path:
    from wafersage.wafers.rawtable import decode_map
    from wafersage.wafers.render import render_map
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    raw = generate(SyntheticConfig(n_wafers=n, seed=0, noise_rate=0.0, mixed_fraction=0.0))
    images = []
    for b, r, c in zip(raw["map"], raw["rows"], raw["cols"], strict=True):
        buf = io.BytesIO()
        render_map(decode_map(b, r, c), size).save(buf, format="PNG")
        images.append(buf.getvalue())
    df = pd.DataFrame(
        {
            "wafer_id": raw["wafer_id"],
            "image": images,
            "question": QUESTION,
            "answer": [" and ".join(v) + "." for v in raw["true_labels"]],
            "category": "type",
            "labels": [list(v) for v in raw["true_labels"]],
        }
    )
    out = root / f"vqa{size}"
    out.mkdir()
    df.to_parquet(out / "train.parquet")
    df.head(32).to_parquet(out / "val.parquet")
    df.head(64).to_parquet(out / "test.parquet")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs",
        nargs="+",
        default=[
            "64:image",
            "96:image",
            "128:image",
            "160:image",
            "64:image+attributes",
            "96:image+attributes",
        ],
        help="size:grounding pairs",
    )
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--encoder-steps", type=int, default=20)
    ap.add_argument("--wafers", type=int, default=400)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="res_timing-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")

    import torch

    from wafersage.modeling.tiny_config import vision_config
    from wafersage.modeling.vision_encoder import multi_hot
    from wafersage.modeling.vision_inputs import resample_batch, visual_tokens
    from wafersage.modeling.vision_train import train_encoder
    from wafersage.serving.predictor import Predictor
    from wafersage.stages import init_model, sft
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    torch.set_num_threads(1)
    raw = generate(SyntheticConfig(n_wafers=args.wafers, seed=0))
    from wafersage.modeling.vision_encoder import table_maps
    from wafersage.modeling.vqa_data import pil_image

    def sft_cost(size: int, grounding: str) -> tuple[float, float]:
        """SFT seconds a step and greedy answers a second for one size and prompt."""
        name = f"{size}-{grounding.replace('+', '_')}"
        vqa = tmp / f"vqa{size}" if (tmp / f"vqa{size}").is_dir() else vqa_dir(tmp, size, args.wafers)
        base = tmp / f"base{name}"
        params = {"vision_init": "off", "grounding": grounding}
        init_model.run(params, {}, vqa / "train.parquet", Path("off"), base, size)
        sft_params = {
            "threads": 1,
            "max_steps": args.sft_steps,
            "eval_steps": args.sft_steps,
            "type_eval_max": 16,
        }
        m = sft.run(sft_params, base, vqa, tmp / f"sft{name}", tmp / f"m{name}.json", tmp / f"ck{name}")
        pred = Predictor(tmp / f"sft{name}", batch_size=32, max_new_tokens=12)
        imgs = [pil_image(v) for v in pd.read_parquet(vqa / "train.parquet")["image"].head(128)]
        t = time.perf_counter()
        pred.answer(imgs, [QUESTION] * len(imgs))
        return m["train_wall_s"] / m["steps"], len(imgs) / (time.perf_counter() - t)

    rows = []
    encoder_s: dict[int, float] = {}
    for config in args.configs:
        size_text, grounding = config.split(":", 1)
        size = int(size_text)
        if size in encoder_s:
            rows.append((size, grounding, visual_tokens(size), encoder_s[size], *sft_cost(size, grounding)))
            continue
        grids = resample_batch(table_maps(raw), size)
        targets = multi_hot([list(v) for v in raw["labels"]])
        times: list[float] = []
        last = [time.perf_counter()]

        def log(step: int, rec: dict, times: list[float] = times, last: list[float] = last) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        p = {"seed": 0, "threads": 1, "max_steps": args.encoder_steps, "max_train_s": 1e9, "warmup_steps": 2}
        train_encoder(grids, targets, vision_config(), p, log)
        encoder_s[size] = statistics.median(times[2:]) if len(times) > 3 else float("nan")
        rows.append((size, grounding, visual_tokens(size), encoder_s[size], *sft_cost(size, grounding)))

    ref = next((r for r in rows if r[0] == 96 and r[1] == "image"), None)
    print(
        "| image px | prompt | visual tokens | encoder s/step | SFT s/step | answers/s "
        "| SFT step vs 96 px image |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for size, grounding, tok, enc, step, aps in rows:
        ratio = f"{step / ref[4]:.2f}x" if ref else "n/a"
        print(f"| {size} | {grounding} | {tok} | {enc:.3f} | {step:.3f} | {aps:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
