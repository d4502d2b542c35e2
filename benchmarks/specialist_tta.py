"""What eight-view test-time averaging (``specialist.tta``) buys: the specialist shipped in a model
folder answers the same real val maps with one view and averaged over the eight rotations/flips,
and, with ``--vlm``, the VLM answers them with either specialist in its grounding line (the model
trained with one-view clauses). Macro-F1 with bootstrap CIs, the paired difference (eight views -
one view) on the same maps, and the wall time of each.

    .venv/bin/python benchmarks/specialist_tta.py --model <run>/models/gspo \
        --val ../shared/data/wm811k/val_data.pkl.xz [--n 2000] [--vlm] --json specialist_tta.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from _paired import report

from wafersage.annotation.grounding import Grounder, image_to_map
from wafersage.evaluation import real_val
from wafersage.modeling.specialist import FOLDER, Specialist
from wafersage.serving.predictor import Predictor
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder with its specialist")
    ap.add_argument("--val", type=Path, required=True, help="WM-811K processed val pickle")
    ap.add_argument("--source", default="wm811k-processed")
    ap.add_argument("--n", type=int, default=None, help="val maps (seeded sample; default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vlm", action="store_true", help="also the VLM with each specialist")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    maps = real_val.load_maps(real_val.RealVal(args.source, args.val), args.n, args.seed)
    one = Specialist.load(args.model / FOLDER)
    one.config.tta = False
    eight = Specialist(dataclasses.replace(one.config, tta=True), one.net, one.trees)
    dies = [decode_map(b, r, c) for b, r, c in zip(maps["map"], maps["rows"], maps["cols"], strict=True)]
    images = [render_map(m, one.config.size) for m in dies]
    seen = [image_to_map(im) for im in images]
    answers: dict[str, list[str]] = {}
    wall: dict[str, float] = {}
    for name, spec in (("specialist_1", one), ("specialist_8", eight)):
        t0 = time.perf_counter()
        answers[name] = [" and ".join(sorted(s)) + "." for s in spec.predict(seen, dies)]
        wall[name] = round(time.perf_counter() - t0, 1)
    if args.vlm:
        pred = Predictor(args.model, batch_size=args.batch)
        question = real_val.Q_TYPE[real_val.QUESTION_INDEX]
        for name, spec in (("vlm_1", one), ("vlm_8", eight)):
            pred.grounder = Grounder(pred.grounder.mode, spec, pred.grounder.rule_guess)
            t0 = time.perf_counter()
            answers[name] = pred.answer(images, [question] * len(images))
            wall[name] = round(time.perf_counter() - t0, 1)

    truth = [set(v) for v in maps["labels"]]
    pairs = {who: (f"{who}_8", f"{who}_1") for who in ("specialist", "vlm")}
    report(args, answers, truth, pairs, wall, "eight_minus_one")


if __name__ == "__main__":
    main()
