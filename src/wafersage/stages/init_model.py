"""init_model: the base VLM that SFT starts from, written to ``models/base/``.

``model.base: tiny`` builds the embedded default: a byte-level BPE tokenizer trained on the VQA
train split, the Qwen3-VL chat template with generation markers, ``Qwen2VLImageProcessorPil``
pinned to the render size, and a ``Qwen3VLForConditionalGeneration`` from ``model.tiny`` whose
vision tower starts from the pretrained wafer encoder (``init_model.vision_init``). Any other
``model.base`` is a local Qwen3-VL checkpoint, loaded with ``model.dtype``. Either way the folder
holds ``save_pretrained`` model + processor and ``wafersage.json`` (what was built, for SFT; its
``grounding`` is the prompt mode every later stage and the server use, see
``wafersage.annotation.grounding``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wafersage.annotation.grounding import IMAGE, Grounder
from wafersage.atomic import atomic_path
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.modeling.chat import CHAT_TEMPLATE, token_ids, train_tokenizer
from wafersage.modeling.model_folder import BASE_INFO
from wafersage.modeling.processor import WaferQwen3VLProcessor, as_wafer_processor
from wafersage.modeling.specialist import FOLDER as SPECIALIST_FOLDER
from wafersage.modeling.specialist import Specialist
from wafersage.modeling.tiny_config import qwen3vl_config
from wafersage.modeling.vision_encoder import META_FILE, load_tower_state
from wafersage.modeling.vision_inputs import image_processor
from wafersage.modeling.vqa_data import corpus, read_split
from wafersage.tracking import stage_run
from wafersage.wafers import taxonomy
from wafersage.wafers.render import check_size

TINY = "tiny"


def build_tiny(
    texts: list[str], p: dict[str, Any], tiny: dict[str, Any] | None, image_size: int
) -> tuple[Any, Any]:
    """The embedded default (model, processor), seeded; the vision tower is random here."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    tokenizer = train_tokenizer(texts, int(p["vocab_size"]), int(p["min_frequency"]))
    processor = WaferQwen3VLProcessor(image_processor(image_size), tokenizer, chat_template=CHAT_TEMPLATE)
    config = qwen3vl_config(
        tiny, vocab_size=len(tokenizer), token_ids=token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = None
    config.tie_word_embeddings = True
    torch.manual_seed(int(p["seed"]))
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model, processor


def load_vision_tower(model: Any, directory: Path, image_size: int) -> None:
    """Copy the pretrained wafer encoder's tower into ``model.model.visual`` (strict: no missing or
    unexpected keys, same shapes, same image size)."""
    state = load_tower_state(directory)
    meta_path = directory / META_FILE
    if meta_path.exists():
        trained = json.loads(meta_path.read_text()).get("image_size")
        if trained is not None and int(trained) != image_size:
            raise WaferSageError(
                directory,
                "vision encoder was trained at another image size",
                f"{trained} != render.size {image_size}",
            )
    try:
        result = model.model.visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WaferSageError(
            directory, "vision encoder does not fit model.tiny's vision tower", str(exc).splitlines()[0]
        ) from None
    assert not result.missing_keys and not result.unexpected_keys, result


def load_local(base: Path, dtype: str) -> tuple[Any, Any]:
    """A local Qwen3-VL checkpoint (model + torchvision-free processor)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if not base.is_dir() or not (base / "config.json").exists():
        raise WaferSageError(base, "model.base is neither 'tiny' nor a local model folder with config.json")
    try:
        processor = as_wafer_processor(
            WaferQwen3VLProcessor.from_pretrained(str(base), local_files_only=True), base
        )
        model = AutoModelForImageTextToText.from_pretrained(
            str(base), dtype=getattr(torch, dtype), local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise WaferSageError(base, "cannot load the base model", str(exc).splitlines()[0]) from None
    return model, processor


def run(
    params: dict[str, Any],
    model_params: dict[str, Any],
    vqa_train: Path,
    vision: Path,
    out: Path,
    image_size: int,
    specialist: Path | None = None,
) -> dict[str, Any]:
    """Build or load the base model and save it (model + processor) into ``out``; with
    ``init_model.specialist: true``, a ``specialist`` folder given and a grounding mode with text,
    the specialist is shipped inside it and its clause takes the rule guess's place in every
    grounding line."""
    p, m = validated("init_model", params), validated("model", model_params)
    check_size(image_size)
    base = str(m["base"])
    vision_init = p["vision_init"]
    use_vision = base == TINY and vision_init not in (None, False, "off", "")
    inputs: dict[str, str | Path] = {"vqa_train": vqa_train}
    if use_vision:
        inputs["vision"] = vision
    advisor = None
    if p["specialist"] and specialist is not None and p["grounding"] != IMAGE:
        inputs["specialist"] = specialist
        advisor = Specialist.load(specialist)
        if advisor.config.size != image_size:
            raise WaferSageError(
                specialist, "specialist image size is not render.size", str(advisor.config.size)
            )
    grounder = Grounder(p["grounding"], advisor, rule_guess=advisor is None)
    if base == TINY:
        # bad input fails before any run or output exists
        texts = corpus(read_split(vqa_train), grounder)
    elif not Path(base).is_dir() or not (Path(base) / "config.json").exists():
        raise WaferSageError(base, "model.base is neither 'tiny' nor a local model folder with config.json")
    with stage_run(
        "init_model", {"init_model": p, "model": m, "image_size": image_size}, inputs=inputs
    ) as mlflow:
        if base == TINY:
            model, processor = build_tiny(texts, p, m["tiny"], image_size)
            if use_vision:
                load_vision_tower(model, Path(vision), image_size)
        else:
            model, processor = load_local(Path(base), str(m["dtype"]))
        n_params = sum(int(t.numel()) for t in model.parameters())
        info = {
            "base": base,
            "image_size": image_size,
            "vision_init": str(vision) if use_vision else None,
            "params": n_params,
            "vocab_size": len(processor.tokenizer),
            "dtype": str(m["dtype"]) if base != TINY else "float32",
            "grounding": p["grounding"],
            "specialist": advisor is not None,
            "rule_guess": grounder.rule_guess,  # absent in older folders: shown
            "taxonomy": taxonomy.active().as_dict(),  # the classes it answers in (serve/ask need no params)
        }
        with atomic_path(out, directory=True) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(tmp))
            processor.save_pretrained(str(tmp))
            (tmp / BASE_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            if advisor is not None:
                advisor.save(tmp / SPECIALIST_FOLDER)
        mlflow.log_metrics({"params": n_params, "vocab_size": info["vocab_size"]})
    return info
