"""The wafer vision encoder: inputs as the VLM sees them, weights the VLM loads, D4 invariance,
training that learns, and one-line errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from factories import disc, raw_table

from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL
from wafersage.wafers.rawtable import new_table, write_raw

#: A very small tower so tests take seconds (the default sizes live in tiny_config).
TINY = {
    "vision": {
        "depth": 1,
        "hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 64,
        "num_position_embeddings": 16,
        "deepstack_visual_indexes": [0],
    },
    "text": {"hidden_size": 32, "num_attention_heads": 2, "head_dim": 16, "mrope_section": [4, 2, 2]},
}
SIZE = 64
FAST = {"max_steps": 40, "batch_size": 12, "lr": 0.005, "warmup_steps": 3, "speckle": 0.0}


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def edge_loc(n: int = 32, side: int = 0) -> np.ndarray:
    """A disc with a fail blob at the edge, rotated ``side`` quarter turns."""
    m = disc(n)
    m[n // 2 - 3 : n // 2 + 3, n - 6 : n - 1] = FAIL
    m[disc(n) == 0] = 0
    return np.rot90(m, side).copy()


def center(n: int = 32) -> np.ndarray:
    m = disc(n)
    m[n // 2 - 4 : n // 2 + 4, n // 2 - 4 : n // 2 + 4] = FAIL
    return m


def test_pixel_values_are_what_the_vlm_image_processor_makes():
    from wafersage.modeling.vision_inputs import pixel_values, processor_pixel_values, visual_tokens

    maps = [center(30), edge_loc(41), disc(52)]
    mine, grid = pixel_values(maps, 96)
    ref = processor_pixel_values(maps, 96)
    assert mine.shape == ref["pixel_values"].shape == (3 * 36, 3 * 2 * 16 * 16)
    np.testing.assert_allclose(mine, ref["pixel_values"], atol=1e-5)
    assert grid.tolist() == ref["image_grid_thw"].tolist() == [[1, 6, 6]] * 3
    assert visual_tokens(96) == 9 and visual_tokens(64) == 4


def test_saved_tower_loads_into_the_vlm_with_no_missing_or_unexpected_keys(tmp_path):
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from wafersage.modeling.tiny_config import qwen3vl_config, vision_config
    from wafersage.modeling.vision_encoder import build_encoder, load_tower_state, save_encoder

    enc = build_encoder(vision_config(), seed=3)
    save_encoder(enc, tmp_path, 96)
    vlm = Qwen3VLForConditionalGeneration(qwen3vl_config(vocab_size=300))
    result = vlm.model.visual.load_state_dict(load_tower_state(tmp_path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in vlm.model.visual.state_dict().items():
        assert torch.equal(v, enc.visual.state_dict()[k]), k
    assert json.loads((tmp_path / "encoder.json").read_text())["image_size"] == 96


def test_tiny_config_rules():
    from wafersage.modeling.tiny_config import qwen3vl_config

    cfg = qwen3vl_config()
    t = cfg.text_config
    assert sum(t.rope_parameters["mrope_section"]) * 2 == t.head_dim
    assert cfg.vision_config.out_hidden_size == t.hidden_size and cfg.vision_config.patch_size == 16
    with pytest.raises(WaferSageError, match="mrope_section"):
        qwen3vl_config({"text": {"mrope_section": [8, 8, 8]}})
    with pytest.raises(WaferSageError, match="unknown key"):
        qwen3vl_config({"vison": {}})


@pytest.fixture(scope="module")
def trained():
    """A tiny encoder trained a few steps on hand-made Center / Edge-Loc / none maps."""
    from wafersage.modeling.tiny_config import vision_config
    from wafersage.modeling.vision_encoder import multi_hot
    from wafersage.modeling.vision_inputs import resample_batch
    from wafersage.modeling.vision_train import train_encoder

    maps, labels = [], []
    for i in range(8):
        maps += [center(32 + i % 3), edge_loc(32 + i % 3, side=i % 4), disc(32 + i % 3)]
        labels += [["Center"], ["Edge-Loc"], ["none"]]
    grids = resample_batch(maps, SIZE)
    model, history = train_encoder(grids, multi_hot(labels), vision_config(TINY), FAST)
    return model, history


def test_short_training_lowers_the_loss(trained):
    _, history = trained
    first = np.mean([h["loss"] for h in history[:3]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert len(history) == FAST["max_steps"]
    assert last < 0.8 * first


def test_rotated_or_flipped_map_gets_the_same_class(trained):
    from wafersage.modeling.vision_encoder import encode_grids
    from wafersage.modeling.vision_inputs import resample_batch
    from wafersage.wafers import taxonomy

    model, _ = trained
    m = edge_loc(32, side=1)
    views = [m, np.rot90(m, 1), np.rot90(m, 2), np.fliplr(m), np.flipud(np.rot90(m))]
    z, p = encode_grids(model, resample_batch([v.copy() for v in views], SIZE))
    assert (p.argmax(1) == taxonomy.class_index()["Edge-Loc"]).all()
    np.testing.assert_allclose(p, np.repeat(p[:1], len(views), 0), atol=1e-5)
    np.testing.assert_allclose(z, np.repeat(z[:1], len(views), 0), atol=1e-4)
    _, pc = encode_grids(model, resample_batch([center(33)], SIZE))
    assert pc.argmax() == taxonomy.class_index()["Center"]


@pytest.mark.slow
def test_stage_writes_encoder_metrics_and_embeddings(tmp_path):
    from wafersage.modeling.vision_encoder import embed
    from wafersage.stages import pretrain_vision
    from wafersage.wafers.splits import wafer_splits

    df = raw_table(n_per_class=4, size=24)
    df.loc[::5, "labels"] = pd.Series([[]] * len(df.loc[::5]), index=df.index[::5], dtype=object)
    df.loc[3, "labels"] = ["Center", "Scratch"]  # a mixed map is trained on, not dropped
    write_raw(df, tmp_path / "raw.parquet")
    m = pretrain_vision.run(
        {**FAST, "max_steps": 4},
        tmp_path / "raw.parquet",
        tmp_path / "vision",
        tmp_path / "m.json",
        SIZE,
        TINY,
    )
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved == m and saved["image_size"] == SIZE and saved["steps"] == 4
    assert {"linear_probe_macro_f1", "knn_macro_f1", "train_wall_s"} <= set(saved)
    assert 0.0 <= saved["linear_probe_macro_f1"] <= 1.0
    assert saved["n_train"] == int((wafer_splits(df, None) == "train").sum())  # the train split only
    files = {p.name for p in (tmp_path / "vision").iterdir()}
    assert files == {"vision_tower.safetensors", "vision_config.json", "head.safetensors", "encoder.json"}
    maps = [disc(24), center(24)]
    z = embed(maps, tmp_path / "vision")
    assert z.shape == (2, 32) and np.isfinite(z).all()
    np.testing.assert_allclose(embed([np.rot90(x).copy() for x in maps], tmp_path / "vision"), z, atol=1e-4)


def test_held_out_wafers_are_scored_on_true_labels():
    from wafersage.stages.pretrain_vision import scoring_labels

    df = raw_table(n_per_class=10, size=16)
    df["true_labels"] = [["Donut"]] * len(df)
    assert (scoring_labels(df) == 2).all()


def _write(tmp_path, df):
    write_raw(df, tmp_path / "raw.parquet")
    return tmp_path / "raw.parquet"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no wafers"),
        ("unlabelled", "all wafers are unlabelled"),
        ("size", "multiple of 32"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, message):
    from wafersage.stages import pretrain_vision

    df = raw_table(n_per_class=2, size=16)
    params, size = {**FAST, "max_steps": 2}, SIZE
    raw = tmp_path / "raw.parquet"
    if case == "empty":
        df.iloc[:0].to_parquet(raw)  # write_raw itself refuses an empty table
    elif case == "unlabelled":
        df["labels"] = [[] for _ in range(len(df))]
        raw, params = _write(tmp_path, df), {**params, "ssl_weight": 0.0}
    else:
        raw, size = _write(tmp_path, df), 80
    with pytest.raises(WaferSageError, match=message) as e:
        pretrain_vision.run(params, raw, tmp_path / "vision", tmp_path / "m.json", size, TINY)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "vision").exists() and not (tmp_path / "m.json").exists()


def test_new_table_with_only_unlabelled_maps_trains_self_supervised(tmp_path):
    from wafersage.stages import pretrain_vision

    maps = [center(20), disc(20), edge_loc(20), disc(22)] * 2
    df = new_table(
        {
            "wafer_id": [f"u{i}" for i in range(len(maps))],
            "source": ["test"] * len(maps),
            "rows": [m.shape[0] for m in maps],
            "cols": [m.shape[1] for m in maps],
            "map": [m.tobytes() for m in maps],
            "labels": [[] for _ in maps],
        }
    )
    m = pretrain_vision.run(
        {**FAST, "max_steps": 3, "batch_size": 4},
        _write(tmp_path, df),
        tmp_path / "vision",
        tmp_path / "m.json",
        SIZE,
        TINY,
    )
    assert m["steps"] == 3 and m["linear_probe_macro_f1"] is None
