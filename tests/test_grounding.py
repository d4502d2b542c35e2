"""Grounding: the label-free attribute text from the model's own image, the three prompt modes, and
one mode per model folder that training, generation and serving all read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vqa_tables import vqa_table, write_vqa

from wafersage.annotation.grounding import (
    ATTRIBUTES,
    IMAGE,
    IMAGE_ATTRIBUTES,
    attributes_text,
    check_mode,
    ground,
    ground_png,
    image_text,
    image_to_map,
)
from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.render import PALETTE, render_map, resample


def _disc(n: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    return np.where(r <= n / 2 - 0.5, PASS, OFF).astype(np.uint8)


def _edge_blob_at_3() -> np.ndarray:
    m = _disc()
    m[17:23, 34:38] = FAIL  # right-hand rim: 3 o'clock
    return np.where(_disc() == OFF, OFF, m).astype(np.uint8)


def test_image_decodes_back_to_the_rendered_map_even_after_lossy_noise():
    m = _edge_blob_at_3()
    img = render_map(m, 64)
    assert np.array_equal(image_to_map(img), resample(m, 64))
    noisy = np.clip(
        np.asarray(img, dtype=np.int16) + np.random.default_rng(0).integers(-25, 26, (64, 64, 3)), 0, 255
    )
    assert np.array_equal(image_to_map(noisy.astype(np.uint8)), resample(m, 64))


def test_text_names_zone_clock_and_follows_a_rotation():
    m = _edge_blob_at_3()
    text = attributes_text(m)
    assert text.startswith("Map facts: ") and "edge zone" in text and "at 3 o'clock" in text
    rotated = attributes_text(np.rot90(m, k=-1))  # a quarter turn clockwise: 3 -> 6 o'clock
    assert "at 6 o'clock" in rotated
    assert "rule guess Edge-Loc" in text


def test_a_clean_wafer_has_no_cluster_and_a_none_guess():
    text = attributes_text(_disc())
    assert "no defect cluster" in text and "yield 100%" in text and text.endswith("rule guess none.")


def test_modes():
    img = render_map(_edge_blob_at_3(), 64)
    q = "What type of defect pattern is visible on this wafer map?"
    same, text = ground(IMAGE, img, q)
    assert same is img and text == q
    same, text = ground(IMAGE_ATTRIBUTES, img, q)
    assert same is img and text == f"{image_text(img)}\n{q}" and "3 o'clock" in text
    blank, text2 = ground(ATTRIBUTES, img, q)
    assert text2 == text and blank.size == img.size
    assert set(map(tuple, np.asarray(blank).reshape(-1, 3))) == {PALETTE[OFF]}


def test_png_cells_keep_their_bytes_unless_blanked():
    buf = io.BytesIO()
    render_map(_edge_blob_at_3(), 64).save(buf, format="PNG")
    png = buf.getvalue()
    assert ground_png(IMAGE_ATTRIBUTES, png, "q")[0] == png
    blank = Image.open(io.BytesIO(ground_png(ATTRIBUTES, png, "q")[0]))
    assert blank.size == (64, 64) and blank.getcolors() == [(64 * 64, PALETTE[OFF])]


def test_unknown_mode_is_a_clear_error():
    assert check_mode(None) == IMAGE  # folders from before the option
    with pytest.raises(WaferSageError, match="init_model.grounding must be one of"):
        check_mode("image+text")


def test_sft_dataset_and_tokenizer_corpus_carry_the_facts():
    from wafersage.modeling.vqa_data import corpus, to_dataset

    df = vqa_table(n_wafers=6, size=64)
    plain = to_dataset(df, IMAGE)
    grounded = to_dataset(df, IMAGE_ATTRIBUTES)
    assert not plain[0]["messages"][0]["content"].startswith("Map facts")
    assert grounded[0]["messages"][0]["content"].startswith("Map facts: ")
    assert grounded[0]["messages"][0]["content"].endswith(df["question"].iloc[0])
    assert grounded[0]["messages"][1] == plain[0]["messages"][1]  # the answer is untouched
    facts = [t for t in corpus(df, IMAGE_ATTRIBUTES) if t.startswith("Map facts")]
    assert len(facts) == df["wafer_id"].nunique()
    assert not [t for t in corpus(df, IMAGE) if t.startswith("Map facts")]


def test_the_mode_lives_in_the_model_folder_and_the_predictor_uses_it(tmp_path, monkeypatch):
    from wafersage.serving.predictor import Predictor
    from wafersage.stages import init_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    vqa = write_vqa(tmp_path / "vqa", n_wafers=12, size=64)
    out = tmp_path / "base"
    info = init_model.run(
        {"vision_init": "off", "vocab_size": 400, "grounding": IMAGE_ATTRIBUTES},
        {},
        vqa / "train.parquet",
        Path("nowhere"),
        out,
        64,
    )
    assert info["grounding"] == IMAGE_ATTRIBUTES
    assert json.loads((out / "wafersage.json").read_text())["grounding"] == IMAGE_ATTRIBUTES
    pred = Predictor(out, max_new_tokens=4)
    assert pred.grounding == IMAGE_ATTRIBUTES
    answers = pred.answer([render_map(_edge_blob_at_3(), 64)], ["Where are the fails?"])
    assert len(answers) == 1 and isinstance(answers[0], str)
    # the facts are in the tokenizer's vocabulary, not spelled out byte by byte
    facts = image_text(render_map(_edge_blob_at_3(), 64))
    assert pred.count_tokens(facts) < len(facts.encode()) / 2.5
    with pytest.raises(WaferSageError, match="init_model.grounding"):
        init_model.run({"grounding": "text"}, {}, vqa / "train.parquet", Path("nowhere"), tmp_path / "x", 64)
    assert not (tmp_path / "x").exists()


def test_sft_trains_on_grounded_prompts_and_keeps_the_mode(tmp_path, monkeypatch):
    from wafersage.stages import init_model, sft

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    vqa = write_vqa(tmp_path / "vqa", n_wafers=12, size=64)
    params = {"vision_init": "off", "vocab_size": 400, "grounding": ATTRIBUTES}
    init_model.run(params, {}, vqa / "train.parquet", Path("nowhere"), tmp_path / "base", 64)
    fast = {"max_steps": 2, "eval_steps": 2, "per_device_train_batch_size": 4, "type_eval_max": 4}
    args = (tmp_path / "base", vqa, tmp_path / "sft", tmp_path / "m.json", tmp_path / "ck")
    m = sft.run({**fast, "rule_eval_max": 0}, *args)
    assert m["steps"] == 2
    assert json.loads((tmp_path / "sft" / "wafersage.json").read_text())["grounding"] == ATTRIBUTES
