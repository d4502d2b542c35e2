"""The attribute dicts, computed over whole batches, against frozen copies of what the per-map code
produced before (the grounding text, which the model was trained on, is made from them, so not a
figure may change): seeded synthetic maps of their own sizes (20-80 dies a side) and rendered at
96 px, and hand-made maps on each branch."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from factories import disc

from wafersage.attributes import geometry, shapes_of, wafer_attributes, wafer_attributes_batch
from wafersage.encoding import FAIL, OFF
from wafersage.grounding import image_to_map
from wafersage.rawtable import decode_map
from wafersage.render import render_map
from wafersage.synthetic import SyntheticConfig, generate

HANDMADE_LABELS = [
    ["Random", "Loc"],
    [],
    ["Near-full"],
    ["Random"],
    ["Loc", "Center"],
    ["Edge-Ring", "Scratch"],
    ["Loc"],
]
# fmt: off
#: The first 16 hex digits of the sha256 of each attribute dict's JSON.
LABELLED = [
    "9c87576a486edcbb", "1d0d5b27dd5597f5", "db6cb663976c26b5", "08976e6d70031a22", "97c843d563f267ea",
    "5bdd6d80d51c90ed", "da7de07be6716fe2", "f0ec31ae5696e95f", "5f0193afdd6dfe22", "1cb41ab50ee7dc3f",
    "0fb9232fd3e93629", "38a5409fa63d3d8c", "281e1ce75e4d9988", "58d1eb608ba752e0", "396a8041468479af",
    "9553fd9ff884c812", "083024eddcf36545", "9fe85918910cd846", "0f605b7013ff3433", "2c244c90006e3ed8",
    "73e1e36b7f2c0739", "88eb2095b16da3d6", "5fa546442965878f", "4142ce37329effdb",
]

HANDMADE_LABELLED = [
    "ac6d3833843b2f14", "a8e8f72a91059d36", "70f0a0de627a159a", "516d2dae947c97f9", "262a770779cb0f2a",
    "5ac8880437db7c40", "3759e741377e3d86",
]

LABEL_FREE_96 = [
    "fca137a88b861e73", "b50bad655bfad015", "971131c079d3625c", "ff525bc48602a8fe", "f7899494b58764be",
    "a8387f6dd5be9b2c", "3d11af754d595e6c", "dcf453249de17417", "dff304fff4c163e0", "7dd33b3cc69d8469",
    "46bdb52fa805774b", "4963e3b90b233680", "391365e07c5e473a", "178e66c6e74b6ad6", "dd14b901d20c6054",
    "ce21899facfa013d", "d00f45221313644f", "ca58ffb13732c68c", "fa9ca150cbdec711", "34341a920a6f2ec8",
    "e11a9d2d47f0a0b5", "1dd41448c3385f45", "07c5a75ac08e563d", "05f19e1881fdbd21",
]
# fmt: on


def _synthetic() -> tuple[list[np.ndarray], list[list[str]]]:
    """Seeded synthetic wafers of their own sizes (20-80 dies a side, some mixed) and their labels."""
    raw = generate(SyntheticConfig.from_dict({"n_wafers": 24, "seed": 0, "mixed_fraction": 0.3}))
    return [decode_map(r.map, r.rows, r.cols) for r in raw.itertuples()], [list(v) for v in raw["labels"]]


def _handmade() -> list[np.ndarray]:
    """Maps on each branch: no fails, no wafer, all fails, scattered fails, two equal blobs (a
    tie), an edge ring, a lone die."""
    rng = np.random.default_rng(0)
    clean, off = disc(30), np.full((20, 20), OFF, dtype=np.uint8)
    full = disc(25)
    full[full > 0] = FAIL
    scattered = disc(40)
    scattered[(scattered > 0) & (rng.random(scattered.shape) < 0.3)] = FAIL
    tie = disc(36)
    tie[8:10, 8:10] = tie[26:28, 26:28] = FAIL
    ring = disc(32)
    yy, xx = np.mgrid[:32, :32]
    ring[(np.hypot(yy - 15.5, xx - 15.5) > 14) & (ring > 0)] = FAIL
    lone = disc(28)
    lone[14, 14] = FAIL
    return [clean, off, full, scattered, tie, ring, lone]


def _digests(dicts: list[dict]) -> list[str]:
    return [hashlib.sha256(json.dumps(a).encode()).hexdigest()[:16] for a in dicts]


def test_attribute_dicts_are_the_frozen_ones():
    maps, labels = _synthetic()
    assert _digests([wafer_attributes(m, v) for m, v in zip(maps, labels, strict=True)]) == LABELLED
    hand = _handmade()
    assert (
        _digests([wafer_attributes(m, v) for m, v in zip(hand, HANDMADE_LABELS, strict=True)])
        == HANDMADE_LABELLED
    )
    seen = [image_to_map(render_map(m, 96)) for m in maps]
    batch = wafer_attributes_batch(seen)
    assert _digests(batch) == LABEL_FREE_96
    assert batch == [wafer_attributes(m) for m in seen]
    # maps of several shapes in one call keep their order
    mixed = [*maps[:6], *hand, *seen[:6]]
    assert wafer_attributes_batch(mixed) == [wafer_attributes(m) for m in mixed]


def test_shapes_of_a_mass_do_not_depend_on_the_others_in_its_batch():
    rng = np.random.default_rng(1)
    geo = geometry(40, 44)
    masses = [np.sort(rng.choice(40 * 44, k, replace=False)) for k in (1, 2, 5, 7, 8, 9, 30, 200)]
    one_by_one = [shapes_of(geo, [m])[0] for m in masses]
    assert shapes_of(geo, masses) == one_by_one
    assert shapes_of(geo, masses[::-1]) == one_by_one[::-1]
