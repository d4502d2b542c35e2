"""The embedded default VLM's architecture: a tiny Qwen3-VL config from params.yaml ``model.tiny``.

One place builds it, so the vision pretraining stage and the model stage (init_model) agree on
the vision tower's shape; the vocabulary size and special-token ids come from the tokenizer that
init_model trains, so they are arguments here (placeholders until then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wafersage.config import TinyParams, checked

if TYPE_CHECKING:
    from transformers import Qwen3VLConfig, Qwen3VLVisionConfig

#: Placeholders for the ids init_model sets from its tokenizer.
PLACEHOLDER_VOCAB = 256
PLACEHOLDER_TOKEN_IDS = {
    "image_token_id": 251,
    "video_token_id": 252,
    "vision_start_token_id": 253,
    "vision_end_token_id": 254,
}


def _merged(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``model.tiny`` (overrides of :class:`wafersage.config.TinyParams`' defaults), checked."""
    return checked(TinyParams, section, "model.tiny", "params.yaml").model_dump()


def vision_config(tiny: dict[str, Any] | None = None) -> Qwen3VLVisionConfig:
    """The vision tower's config (its merger projects to the text width)."""
    from transformers import Qwen3VLVisionConfig

    cfg = _merged(tiny)
    return Qwen3VLVisionConfig(**cfg["vision"], out_hidden_size=cfg["text"]["hidden_size"])


def qwen3vl_config(
    tiny: dict[str, Any] | None = None,
    vocab_size: int = PLACEHOLDER_VOCAB,
    token_ids: dict[str, int] | None = None,
    pad_token_id: int | None = None,
) -> Qwen3VLConfig:
    """The whole tiny Qwen3-VL config; ``vocab_size``/``token_ids`` come from init_model's tokenizer."""
    from transformers import Qwen3VLConfig

    t = _merged(tiny)["text"]
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
