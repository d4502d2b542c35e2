"""What a picture without its die-level map costs: a model folder answers the same real val maps
twice, once as ``serve``/``ask`` get a map (the rendered image carries its die-level map) and once
as the bare picture (the same pixels, no map: grounding facts and specialist features measured on
the 64 px pixels). The specialist shipped in the folder is scored both ways too. Macro-F1 with
bootstrap CIs and the paired difference (map - picture) on the same maps.

    .venv/bin/python benchmarks/picture_only.py --model <run>/models/gspo \
        --val ../shared/data/wm811k/val_data.pkl.xz --n 2000 --json picture_only.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _paired import report
from PIL import Image

from wafersage.annotation.grounding import image_to_map
from wafersage.evaluation import real_val
from wafersage.modeling.specialist import FOLDER, Specialist
from wafersage.serving.predictor import Predictor
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder (with its specialist)")
    ap.add_argument("--val", type=Path, required=True, help="WM-811K processed val pickle")
    ap.add_argument("--source", default="wm811k-processed")
    ap.add_argument("--n", type=int, default=2000, help="val maps (seeded sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    maps = real_val.load_maps(real_val.RealVal(args.source, args.val), args.n, args.seed)
    pred = Predictor(args.model, batch_size=args.batch)
    dies = [decode_map(b, r, c) for b, r, c in zip(maps["map"], maps["rows"], maps["cols"], strict=True)]
    carried = [render_map(m, pred.image_size) for m in dies]
    pictures = [Image.fromarray(np.asarray(im)) for im in carried]  # same pixels, no map
    question = real_val.Q_TYPE[real_val.QUESTION_INDEX]
    answers: dict[str, list[str]] = {}
    wall: dict[str, float] = {}
    for name, images in (("vlm_map", carried), ("vlm_picture", pictures)):
        t0 = time.perf_counter()
        answers[name] = pred.answer(images, [question] * len(images))
        wall[name] = round(time.perf_counter() - t0, 1)
    if (args.model / FOLDER).is_dir():
        spec = Specialist.load(args.model / FOLDER)
        seen = [image_to_map(im) for im in pictures]
        for name, given in (("specialist_map", dies), ("specialist_picture", None)):
            answers[name] = [" and ".join(sorted(s)) + "." for s in spec.predict(seen, given)]

    truth = [set(v) for v in maps["labels"]]
    pairs = {who: (f"{who}_map", f"{who}_picture") for who in ("vlm", "specialist")}
    report(args, answers, truth, pairs, wall, "map_minus_picture")


if __name__ == "__main__":
    main()
