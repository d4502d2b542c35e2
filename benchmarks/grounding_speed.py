"""Grounding speed: the grounding code as it was at a git ref (default ``main``) against the
working tree, on the same maps in one run, with a check that every text and attribute dict is the
same.

    .venv/bin/python benchmarks/grounding_speed.py [--data ../shared/data/wm811k/val_data.pkl.xz]
        [--n 512] [--size 64] [--repeats 5] [--ref main] [--specialist FOLDER] [--synthetic]
        [--model FOLDER] [--batch 32] [--max-new-tokens 40] [--threads N]

The maps are ``--n`` real maps drawn with seed 0 from ``--data`` when it loads, else synthetic
ones (generator seed 0). The images are the maps rendered at ``--size``, as the model sees them.
The old code is the ref's ``attributes.py`` and ``grounding.py`` (``git show``), run as modules
beside the package. The rest of the package is the working tree's.

Timed, old then new, ``--repeats`` times (the runs alternate; each figure is the median):

- ``image_to_map``: the images decoded back to maps;
- ``attributes_text``: the grounding text of each decoded map;
- ``Grounder.texts``: the whole grounding line of each image, as ``ground_all`` asks for it. The
  text cache is cleared before each run, so every image is computed, as for a folder of new maps;
- ``wafer_attributes`` with labels: the raw maps (their own sizes) with their labels, as the
  describe stage calls it;
- with ``--specialist`` (a specialist folder), ``Grounder.texts`` with that specialist as the
  advisor, and its ``clauses`` alone (the same code in both runs);
- with ``--model`` (a model folder), answering the type question end to end
  (``generate_answers``, the fast greedy path) with the folder's own grounding (its specialist
  too, when it ships one), the old or the new grounding code swapped in; and, for reference, the
  same model answering with ``image`` grounding (no text).

Before timing, the two versions' decoded maps, texts, attribute dicts (labelled and label-free)
and, with ``--model``, answers are compared, and the script stops if one differs. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wafersage.annotation import grounding
from wafersage.annotation.attributes import wafer_attributes, wafer_attributes_batch
from wafersage.annotation.grounding import IMAGE_ATTRIBUTES, Grounder, attributes_texts, images_to_maps
from wafersage.errors import WaferSageError
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map

QUESTION = "What type of defect pattern is visible on this wafer map?"
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wm811k" / "val_data.pkl.xz"


def old_modules(ref: str) -> tuple[types.ModuleType, types.ModuleType]:
    """The ref's ``attributes`` and ``grounding`` modules (grounding importing the old attributes)."""

    def module(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        if replace is not None:
            if replace[0] not in source:
                raise SystemExit(f"{ref}:{path} does not import {replace[0]!r}")
            source = source.replace(*replace)
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        exec(compile(source, f"{ref}:{path}", "exec"), mod.__dict__)
        return mod

    attributes = module("_old_attributes", "src/wafersage/annotation/attributes.py")
    old = module(
        "_old_grounding",
        "src/wafersage/annotation/grounding.py",
        ("from wafersage.annotation.attributes import", "from _old_attributes import"),
    )
    return attributes, old


def real_maps(path: Path, n: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """``n`` maps drawn with seed 0 from a WM-811K pickle, and their labels."""
    from wafersage.wafers.loaders import load

    df = load("wm811k-processed", path)
    rows = df.iloc[np.sort(np.random.default_rng(0).choice(len(df), min(n, len(df)), replace=False))]
    maps = [decode_map(b, r, c) for b, r, c in zip(rows["map"], rows["rows"], rows["cols"], strict=True)]
    return maps, [list(v) for v in rows["labels"]]


def synthetic_maps(n: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """``n`` synthetic maps (seed 0) and their labels."""
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    raw = generate(SyntheticConfig.from_dict({"n_wafers": n, "seed": 0}))
    return [decode_map(r.map, r.rows, r.cols) for r in raw.itertuples()], [list(v) for v in raw["labels"]]


def alternate(runs: dict[str, Callable[[], Any]], n: int, repeats: int) -> dict[str, list[float]]:
    """Maps/s of each run, ``repeats`` times, the runs alternating."""
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            rates[k].append(n / (time.perf_counter() - t))
    return rates


def cold(g: Any, images: list[Any], module: types.ModuleType) -> Callable[[], list[str]]:
    """``g.texts(images)`` with ``module``'s text cache cleared first."""

    def run() -> list[str]:
        module._TEXTS.clear()
        return g.texts(images)

    return run


def answering(
    pred: Any, images: list[Any], module: types.ModuleType, g: Any, batch: int, max_new_tokens: int
) -> Callable[[], list[str]]:
    """``generate_answers`` on ``images`` with ``module``'s ``ground_all`` and grounding ``g``,
    the text cache cleared first."""
    from wafersage.modeling import generate

    def run() -> list[str]:
        module._TEXTS.clear()
        generate.ground_all = module.ground_all
        try:
            questions = [QUESTION] * len(images)
            return generate.generate_answers(
                pred.model, pred.processor, images, questions, batch, max_new_tokens, g
            )
        finally:
            generate.ground_all = grounding.ground_all

    return run


def same(a: Any, b: Any, what: str) -> int:
    """How many items of two parallel lists agree; stops the script if one does not."""
    pairs = list(zip(a, b, strict=True))
    bad = [i for i, (x, y) in enumerate(pairs) if json.dumps(x) != json.dumps(y)]
    if bad:
        raise SystemExit(f"{what}: {len(bad)} of {len(pairs)} differ, first at {bad[0]}")
    return len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a WM-811K pickle (else synthetic maps)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic maps even when --data loads")
    ap.add_argument("--n", type=int, default=512, help="maps")
    ap.add_argument("--size", type=int, default=64, help="image side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref", default="main", help="git ref of the old code")
    ap.add_argument("--specialist", type=Path, default=None, help="a specialist folder (the advisor)")
    ap.add_argument("--model", type=Path, default=None, help="a model folder: answering end to end too")
    ap.add_argument("--batch", type=int, default=32, help="answering batch size")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args()

    source = "synthetic (seed 0)"
    maps, labels = None, None
    if not a.synthetic and a.data.exists():
        try:
            maps, labels = real_maps(a.data, a.n)
            source = f"{a.data.name} (seed 0)"
        except (WaferSageError, OSError) as exc:
            print(f"{a.data} did not load ({type(exc).__name__}: {exc}); synthetic maps instead")
    if maps is None or labels is None:
        maps, labels = synthetic_maps(a.n)
    images = [render_map(m, a.size) for m in maps]
    old_attributes, old = old_modules(a.ref)
    seen = images_to_maps(images)

    checked = {
        "image_to_map": same(
            [m.tolist() for m in map(old.image_to_map, images)], [m.tolist() for m in seen], "image_to_map"
        ),
        "label-free dicts": same(
            [old_attributes.wafer_attributes(m) for m in seen],
            wafer_attributes_batch(seen),
            "label-free dicts",
        ),
        "labelled dicts": same(
            [old_attributes.wafer_attributes(m, v) for m, v in zip(maps, labels, strict=True)],
            [wafer_attributes(m, v) for m, v in zip(maps, labels, strict=True)],
            "labelled dicts",
        ),
        "texts": same(
            cold(old.Grounder(IMAGE_ATTRIBUTES), images, old)(),
            Grounder(IMAGE_ATTRIBUTES).texts(images),
            "texts",
        ),
    }
    rows: dict[str, dict[str, Callable[[], Any]]] = {
        "`image_to_map`": {
            "old": lambda: [old.image_to_map(im) for im in images],
            "new": lambda: images_to_maps(images),
        },
        "`attributes_text`": {
            "old": lambda: [old.attributes_text(m) for m in seen],
            "new": lambda: attributes_texts(seen),
        },
        "`Grounder.texts`": {
            "old": cold(old.Grounder(IMAGE_ATTRIBUTES), images, old),
            "new": cold(Grounder(IMAGE_ATTRIBUTES), images, grounding),
        },
        "`wafer_attributes` with labels (raw maps)": {
            "old": lambda: [old_attributes.wafer_attributes(m, v) for m, v in zip(maps, labels, strict=True)],
            "new": lambda: [wafer_attributes(m, v) for m, v in zip(maps, labels, strict=True)],
        },
    }
    if a.specialist is not None:
        from wafersage.modeling.specialist import Specialist

        advisor = Specialist.load(a.specialist)
        checked["texts with the specialist"] = same(
            cold(old.Grounder(IMAGE_ATTRIBUTES, advisor), images, old)(),
            Grounder(IMAGE_ATTRIBUTES, advisor).texts(images),
            "texts with the specialist",
        )
        rows["`Grounder.texts` with the specialist"] = {
            "old": cold(old.Grounder(IMAGE_ATTRIBUTES, advisor), images, old),
            "new": cold(Grounder(IMAGE_ATTRIBUTES, advisor), images, grounding),
        }
        rows["the specialist's `clauses` alone (unchanged)"] = {
            "old": lambda: advisor.clauses(seen),
            "new": lambda: advisor.clauses(seen),
        }

    note = ""
    if a.model is not None:
        import torch

        from wafersage.serving.predictor import Predictor

        if a.threads:
            torch.set_num_threads(a.threads)
        pred = Predictor(a.model)
        shown = [render_map(m, pred.image_size) for m in maps]
        g = pred.grounder
        args = (a.batch, a.max_new_tokens)
        answer_old = answering(pred, shown, old, old.Grounder(g.mode, g.advisor), *args)
        answer_new = answering(pred, shown, grounding, g, *args)
        checked["answers"] = same(answer_old(), answer_new(), "answers")
        rows[f"answering, `{g.mode}`{' + specialist' if g.advisor else ''} (batch {a.batch})"] = {
            "old": answer_old,
            "new": answer_new,
            "image": answering(pred, shown, grounding, "image", *args),
        }
        note = f"the model: {a.model} ({pred.image_size} px), torch threads {torch.get_num_threads()}; "

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{len(maps)} maps: {source}, rendered at {a.size} px; {note}old code: {a.ref}; load average {load}"
    )
    print("identical: " + ", ".join(f"{k} {v}/{v}" for k, v in checked.items()))
    print("\n| step | old maps/s | new maps/s | new / old | runs (old; new) |")
    print("|---|---:|---:|---:|---|")
    after = []
    for name, runs in rows.items():
        rates = alternate(runs, len(maps), a.repeats)
        med = {k: statistics.median(v) for k, v in rates.items()}
        text = "; ".join(", ".join(f"{x:.0f}" for x in rates[k]) for k in ("old", "new"))
        print(f"| {name} | {med['old']:.0f} | {med['new']:.0f} | {med['new'] / med['old']:.1f}x | {text} |")
        if "image" in rates:
            text = ", ".join(f"{x:.0f}" for x in rates["image"])
            after.append(
                f"The same model, `image` grounding, same rounds: {med['image']:.0f} maps/s ({text})"
            )
    for line in after:
        print(f"\n{line}")
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
