"""The embedded default VLM's architecture: a tiny Qwen3-VL config from params.yaml ``model.tiny``.

One place builds it, so the vision pretraining stage and the model stage (init_model) agree on
the vision tower's shape; the vocabulary size and special-token ids come from the tokenizer that
init_model trains, so they are arguments here (placeholders until then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wafersage.errors import WaferSageError

if TYPE_CHECKING:
    from transformers import Qwen3VLConfig, Qwen3VLVisionConfig

#: Defaults of ``model.tiny`` (params.yaml overrides any of them).
TINY_DEFAULTS: dict[str, Any] = {
    "vision": {
        "depth": 4,
        "hidden_size": 96,
        "num_heads": 4,
        "intermediate_size": 192,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 144,
        "deepstack_visual_indexes": [1, 2],
    },
    "text": {
        "num_hidden_layers": 4,
        "hidden_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 384,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "mrope_section": [6, 5, 5],
    },
}
#: Placeholders for the ids init_model sets from its tokenizer.
PLACEHOLDER_VOCAB = 256
PLACEHOLDER_TOKEN_IDS = {
    "image_token_id": 251,
    "video_token_id": 252,
    "vision_start_token_id": 253,
    "vision_end_token_id": 254,
}


def _merged(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    section = section or {}
    unknown = set(section) - set(TINY_DEFAULTS)
    if unknown:
        raise WaferSageError("params.yaml", "unknown key in model.tiny", ", ".join(sorted(unknown)))
    return {k: {**v, **(section.get(k) or {})} for k, v in TINY_DEFAULTS.items()}


def vision_config(tiny: dict[str, Any] | None = None) -> Qwen3VLVisionConfig:
    """The vision tower's config (its merger projects to the text width)."""
    from transformers import Qwen3VLVisionConfig

    cfg = _merged(tiny)
    v, t = cfg["vision"], cfg["text"]
    if v["hidden_size"] % v["num_heads"]:
        raise WaferSageError("params.yaml", "model.tiny.vision.hidden_size must divide by num_heads")
    if any(not 0 <= i < v["depth"] for i in v["deepstack_visual_indexes"]):
        raise WaferSageError("params.yaml", "model.tiny.vision.deepstack_visual_indexes must be < depth")
    if len(v["deepstack_visual_indexes"]) > t["num_hidden_layers"]:
        raise WaferSageError("params.yaml", "more deepstack indexes than text layers")
    return Qwen3VLVisionConfig(
        **{**v, "deepstack_visual_indexes": list(v["deepstack_visual_indexes"])},
        out_hidden_size=t["hidden_size"],
    )


def qwen3vl_config(
    tiny: dict[str, Any] | None = None,
    vocab_size: int = PLACEHOLDER_VOCAB,
    token_ids: dict[str, int] | None = None,
    pad_token_id: int | None = None,
) -> Qwen3VLConfig:
    """The whole tiny Qwen3-VL config; ``vocab_size``/``token_ids`` come from init_model's tokenizer."""
    from transformers import Qwen3VLConfig

    t = _merged(tiny)["text"]
    if t["hidden_size"] != t["num_attention_heads"] * t["head_dim"]:
        raise WaferSageError(
            "params.yaml", "model.tiny.text.hidden_size must be num_attention_heads * head_dim"
        )
    if sum(t["mrope_section"]) * 2 != t["head_dim"]:
        raise WaferSageError(
            "params.yaml", "model.tiny.text.mrope_section must sum to head_dim/2", f"{t['mrope_section']}"
        )
    ids = {**PLACEHOLDER_TOKEN_IDS, **(token_ids or {})}
    text = {k: v for k, v in t.items() if k not in ("rope_theta", "mrope_section")}
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": float(t["rope_theta"]),
        "mrope_section": list(t["mrope_section"]),
        "mrope_interleaved": True,
    }
    return Qwen3VLConfig(
        text_config={**text, "vocab_size": vocab_size, "pad_token_id": pad_token_id},
        vision_config=vision_config(tiny).to_dict(),
        **ids,
    )
