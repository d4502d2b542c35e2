"""The grounding text and the attribute dicts, computed over whole batches, against frozen copies of
what the per-map code produced before (the model was trained on this text, so not a character
may change): seeded synthetic maps of their own sizes (20-80 dies a side) and rendered at 64 and
96 px, and hand-made maps on each branch."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from factories import disc
from PIL import Image
from scipy import ndimage

from wafersage.annotation.attributes import (
    _closing,
    geometry,
    shapes_of,
    wafer_attributes,
    wafer_attributes_batch,
)
from wafersage.annotation.grounding import (
    IMAGE_ATTRIBUTES,
    Grounder,
    attributes_text,
    attributes_texts,
    image_to_map,
    images_to_maps,
)
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import PALETTE, render_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

TEXTS_64 = [
    "Map facts: yield 82%; 6 clusters; main defect clustered in the center zone; "
    "area 6%; density 77%; elongation 1.3; rule guess Center.",
    "Map facts: yield 81%; 2 clusters; main defect ring in the edge zone; "
    "area 16%; density 93%; elongation 1.2; rule guess Edge-Ring.",
    "Map facts: yield 84%; 8 clusters; main defect clustered in the inner zone at 3 o'clock; "
    "area 5%; density 96%; elongation 1.1; rule guess Loc.",
    "Map facts: yield 48%; 1 cluster; main defect scattered in the whole zone; "
    "area 52%; density 60%; elongation 1.1; rule guess Random.",
    "Map facts: yield 79%; 15 clusters; main defect clustered in the center zone; "
    "area 6%; density 90%; elongation 1.5; rule guess Center.",
    "Map facts: yield 94%; 6 clusters; main defect ring in the edge zone at 7 o'clock; "
    "area 4%; density 80%; elongation 4.9; rule guess Edge-Ring.",
    "Map facts: yield 93%; 1 cluster; main defect clustered in the center zone; "
    "area 4%; density 86%; elongation 1.1; rule guess Center.",
    "Map facts: yield 90%; 1 cluster; main defect clustered in the inner zone at 8 o'clock; "
    "area 3%; density 75%; elongation 2.5; rule guess Loc.",
    "Map facts: yield 5%; 1 cluster; main defect full in the whole zone; "
    "area 95%; density 95%; elongation 1.0; rule guess Near-full.",
    "Map facts: yield 97%; 1 cluster; main defect line in the middle zone at 3 o'clock; "
    "area 1%; density 86%; elongation 11.1; rule guess Scratch.",
    "Map facts: yield 82%; 2 clusters; main defect clustered in the center zone; "
    "area 9%; density 83%; elongation 1.1; rule guess Center.",
    "Map facts: yield 98%; 0 clusters; no defect cluster; rule guess none.",
    "Map facts: yield 92%; 6 clusters; main defect arc in the edge zone at 2 o'clock; "
    "area 1%; density 100%; elongation 8.4; rule guess none.",
    "Map facts: yield 83%; 14 clusters; main defect clustered in the middle zone at 8 o'clock; "
    "area 2%; density 100%; elongation 2.5; rule guess Loc.",
    "Map facts: yield 89%; 2 clusters; main defect clustered in the middle zone at 10 o'clock; "
    "area 0%; density 100%; elongation 1.9; rule guess none.",
    "Map facts: yield 70%; 12 clusters; main defect clustered in the inner zone; "
    "area 18%; density 100%; elongation 1.2; rule guess Loc.",
    "Map facts: yield 90%; 4 clusters; main defect ring in the edge zone at 9 o'clock; "
    "area 6%; density 96%; elongation 4.8; rule guess Edge-Ring.",
    "Map facts: yield 43%; 2 clusters; main defect scattered in the whole zone; "
    "area 57%; density 62%; elongation 1.1; rule guess Random.",
    "Map facts: yield 88%; 9 clusters; main defect clustered in the center zone at 6 o'clock; "
    "area 2%; density 100%; elongation 2.1; rule guess Center.",
    "Map facts: yield 78%; 14 clusters; main defect clustered in the middle zone at 5 o'clock; "
    "area 5%; density 90%; elongation 1.2; rule guess Loc.",
    "Map facts: yield 89%; 9 clusters; main defect arc in the edge zone at 5 o'clock; "
    "area 1%; density 100%; elongation 3.4; rule guess Edge-Loc.",
    "Map facts: yield 92%; 1 cluster; main defect line in the inner zone at 2 o'clock; "
    "area 3%; density 96%; elongation 14.6; rule guess Scratch.",
    "Map facts: yield 91%; 4 clusters; main defect arc in the edge zone at 11 o'clock; "
    "area 0%; density 100%; elongation 3.6; rule guess none.",
    "Map facts: yield 82%; 5 clusters; main defect ring in the inner zone at 6 o'clock; "
    "area 8%; density 84%; elongation 2.4; rule guess Donut.",
]

HANDMADE_TEXTS = [
    "Map facts: yield 100%; 0 clusters; no defect cluster; rule guess none.",
    "Map facts: yield 100%; 0 clusters; no defect cluster; rule guess none.",
    "Map facts: yield 0%; 1 cluster; main defect full in the whole zone; "
    "area 100%; density 100%; elongation 1.0; rule guess Near-full.",
    "Map facts: yield 71%; 22 clusters; main defect scattered in the whole zone; "
    "area 29%; density 39%; elongation 1.0; rule guess Random.",
    "Map facts: yield 99%; 2 clusters; main defect clustered in the middle zone at 10 o'clock; "
    "area 0%; density 100%; elongation 1.0; rule guess none.",
    "Map facts: yield 76%; 1 cluster; main defect ring in the edge zone; "
    "area 24%; density 100%; elongation 1.0; rule guess Edge-Ring.",
    "Map facts: yield 100%; 0 clusters; no defect cluster; rule guess none.",
]

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


def test_grounding_texts_are_the_frozen_ones():
    maps, _ = _synthetic()
    pictures = [Image.fromarray(np.asarray(render_map(m, 64))) for m in maps]  # without their maps
    assert Grounder(IMAGE_ATTRIBUTES).texts(pictures) == TEXTS_64
    assert Grounder(IMAGE_ATTRIBUTES).texts([render_map(m, 64) for m in maps]) == attributes_texts(maps)
    seen = images_to_maps(pictures)
    assert attributes_texts(seen) == TEXTS_64
    assert [attributes_text(m) for m in seen[:4]] == TEXTS_64[:4]
    assert attributes_texts(_handmade()) == HANDMADE_TEXTS


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


def test_closing_is_scipys_binary_closing_map_by_map():
    rng = np.random.default_rng(3)
    for rows, cols in ((1, 1), (1, 5), (2, 2), (3, 7), (9, 4), (16, 16)):
        masks = rng.random((4, rows, cols)) < 0.4
        expected = np.stack([ndimage.binary_closing(m, structure=np.ones((3, 3), dtype=bool)) for m in masks])
        assert np.array_equal(_closing(masks), expected)


def _nearest(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's nearest palette colour, measured for every pixel (the reference)."""
    values = np.array([OFF, PASS, FAIL], dtype=np.uint8)
    colours = np.array([PALETTE[int(v)] for v in values], dtype=np.int32)
    dist = ((np.asarray(rgb, dtype=np.int32)[:, :, None, :] - colours[None, None]) ** 2).sum(axis=-1)
    return values[dist.argmin(axis=-1)]


def test_images_decode_as_the_nearest_palette_colour_alone_or_together():
    rng = np.random.default_rng(2)
    maps, _ = _synthetic()
    clean = [np.asarray(render_map(m, 64)) for m in maps[:4]]
    noisy = [
        np.clip(a.astype(np.int16) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8) for a in clean
    ]
    images = [
        *[Image.fromarray(a) for a in clean],
        *noisy,
        noisy[0].astype(np.int64),
        noisy[1].astype(np.float64) + 0.4,
        rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        np.asarray(render_map(maps[5], 96)),
    ]
    expected = [_nearest(np.asarray(im)) for im in images]
    got = images_to_maps(images)
    assert all(np.array_equal(g, e) and g.dtype == np.uint8 for g, e in zip(got, expected, strict=True))
    assert all(np.array_equal(image_to_map(im), e) for im, e in zip(images, expected, strict=True))
