"""init_model and the torchvision-free processor: the tiny default, its tokenizer and template,
the vision tower's initialisation, a local base, and bad inputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from vqa_tables import write_vqa

from wafersage.errors import WaferSageError

SIZE = 64  # 4x4 patches of 16 -> 2x2 = 4 visual tokens


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory) -> Path:
    return write_vqa(tmp_path_factory.mktemp("vqa"), n_wafers=30, size=SIZE)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, vqa_dir) -> Path:
    import os

    from wafersage.stages import init_model

    out = tmp_path_factory.mktemp("models") / "base"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out.parent / 'mlflow.db'}")
    init_model.run(
        {"vision_init": "off", "vocab_size": 400}, {}, vqa_dir / "train.parquet", Path("nowhere"), out, SIZE
    )
    return out


def _image(vqa_dir: Path):
    from PIL import Image

    df = pd.read_parquet(vqa_dir / "test.parquet")
    return Image.open(io.BytesIO(df["image"].iloc[0])).convert("RGB")


def test_auto_processor_is_not_a_bare_tokenizer(base_dir):
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    from wafersage.modeling.processor import WaferQwen3VLProcessor

    proc = AutoProcessor.from_pretrained(str(base_dir))
    assert isinstance(proc, WaferQwen3VLProcessor)
    assert not isinstance(proc, PreTrainedTokenizerBase)
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert not hasattr(proc, "video_processor") or proc.video_processor is None


def test_load_processor_rejects_a_tokenizer_only_folder(base_dir, tmp_path):
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    from wafersage.modeling.chat import train_tokenizer
    from wafersage.modeling.processor import load_processor

    # a folder with only a tokenizer: plain AutoProcessor falls back to the bare tokenizer ...
    train_tokenizer(["a wafer map"] * 5, 300).save_pretrained(str(tmp_path / "tok"))
    assert isinstance(AutoProcessor.from_pretrained(str(tmp_path / "tok")), PreTrainedTokenizerBase)
    # ... which load_processor refuses
    with pytest.raises(WaferSageError, match="not a Qwen3-VL processor"):
        load_processor(tmp_path / "tok")
    # and a tokenizer saved from our processor names it, so AutoProcessor never silently degrades
    AutoProcessor.from_pretrained(str(base_dir)).tokenizer.save_pretrained(str(tmp_path / "tok2"))
    with pytest.raises(WaferSageError, match="cannot load the processor"):
        load_processor(tmp_path / "tok2")


def test_model_reloads_with_the_tokenizer_ids(base_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(str(base_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(base_dir))
    tok = proc.tokenizer
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == proc.image_token_id
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.text_config.vocab_size == len(tok)
    info = json.loads((base_dir / "wafersage.json").read_text())
    assert info["base"] == "tiny" and info["image_size"] == SIZE and info["vision_init"] is None


def test_image_keeps_its_size_and_gives_the_expected_visual_tokens(base_dir, vqa_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(base_dir))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What pattern?"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    out = proc(text=[text], images=[_image(vqa_dir)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, SIZE // 16, SIZE // 16]]
    assert out["pixel_values"].shape == ((SIZE // 16) ** 2, 3 * 2 * 16 * 16)
    assert int((out["input_ids"] == proc.image_token_id).sum()) == (SIZE // 32) ** 2


def test_chat_template_masks_everything_but_assistant_turns(base_dir, vqa_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(base_dir))
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image", "image": _image(vqa_dir)}, {"type": "text", "text": "Type?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Edge-Ring."}]},
        {"role": "user", "content": [{"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "At the edge."}]},
    ]
    out = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = np.asarray(out["input_ids"]).reshape(-1)
    mask = np.asarray(out["assistant_masks"]).reshape(-1)
    assert len(ids) == len(mask) and 0 < mask.sum() < len(mask)
    tok = proc.tokenizer
    kept = tok.decode(ids[mask == 1])
    assert kept == "Edge-Ring.<|im_end|>At the edge.<|im_end|>"
    assert proc.image_token_id not in ids[mask == 1]
    assert tok.decode(ids[mask == 0]).count("<|im_start|>") == 4


def test_tokenizer_is_domain_trained(base_dir):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(str(base_dir)).tokenizer
    q = "What type of defect pattern is visible on this wafer map?"
    assert len(tok(q)["input_ids"]) < len(q) / 3  # merges learned from the corpus
    assert tok.decode(tok(q)["input_ids"]) == q


@pytest.mark.slow
def test_vision_tower_starts_from_the_pretrained_encoder(tmp_path, vqa_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    from wafersage.modeling.tiny_config import vision_config
    from wafersage.modeling.vision_encoder import build_encoder, save_encoder
    from wafersage.stages import init_model

    enc = build_encoder(vision_config(), seed=7)
    (tmp_path / "vision").mkdir()
    save_encoder(enc, tmp_path / "vision", SIZE)
    out = tmp_path / "base"
    init_model.run(
        {"vocab_size": 400, "vision_init": str(tmp_path / "vision")},
        {},
        vqa_dir / "train.parquet",
        tmp_path / "vision",
        out,
        SIZE,
    )
    model = AutoModelForImageTextToText.from_pretrained(str(out))
    mine = model.model.visual.state_dict()
    for k, v in enc.visual.state_dict().items():
        assert torch.equal(mine[k], v), k


@pytest.mark.slow
def test_vision_encoder_of_another_shape_or_size_is_refused(tmp_path, vqa_dir):
    from wafersage.modeling.tiny_config import vision_config
    from wafersage.modeling.vision_encoder import build_encoder, save_encoder
    from wafersage.stages import init_model

    (tmp_path / "v").mkdir()
    save_encoder(build_encoder(vision_config({"vision": {"hidden_size": 64}})), tmp_path / "v", SIZE)
    with pytest.raises(WaferSageError, match="does not fit") as e:
        init_model.run(
            {"vocab_size": 400}, {}, vqa_dir / "train.parquet", tmp_path / "v", tmp_path / "b", SIZE
        )
    assert "\n" not in str(e.value) and not (tmp_path / "b").exists()
    with pytest.raises(WaferSageError, match="another image size"):
        init_model.run({"vocab_size": 400}, {}, vqa_dir / "train.parquet", tmp_path / "v", tmp_path / "b", 96)


@pytest.mark.slow
def test_local_base_goes_through_the_same_path(base_dir, vqa_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    from wafersage.modeling.processor import load_processor
    from wafersage.stages import init_model

    out = tmp_path / "base2"
    info = init_model.run(
        {}, {"base": str(base_dir), "dtype": "float32"}, vqa_dir / "train.parquet", Path("unused"), out, SIZE
    )
    assert info["base"] == str(base_dir)
    a = AutoModelForImageTextToText.from_pretrained(str(base_dir)).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(str(out)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_processor(out).tokenizer.get_vocab() == load_processor(base_dir).tokenizer.get_vocab()


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("missing_vqa", "VQA split not found"),
        ("empty_vqa", "VQA split is empty"),
        ("missing_base", "neither 'tiny' nor a local model folder"),
        ("bad_dtype", "model.dtype: input should be 'float32'"),
    ],
)
def test_bad_inputs_are_one_line_errors(case, rule, tmp_path, vqa_dir):
    from wafersage.stages import init_model

    train = vqa_dir / "train.parquet"
    model: dict = {}
    if case == "missing_vqa":
        train = tmp_path / "nope.parquet"
    elif case == "empty_vqa":
        train = tmp_path / "empty.parquet"
        pd.read_parquet(vqa_dir / "train.parquet").iloc[:0].to_parquet(train)
    elif case == "missing_base":
        model = {"base": str(tmp_path / "no-such-model")}
    else:
        model = {"dtype": "int3"}
    with pytest.raises(WaferSageError, match=rule) as e:
        init_model.run({"vision_init": "off"}, model, train, Path("x"), tmp_path / "out", SIZE)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
