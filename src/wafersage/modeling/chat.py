"""The embedded default's text side: a domain tokenizer trained on the VQA corpus and the Qwen3-VL
chat template (with ``{% generation %}`` markers, so TRL can train on assistant turns only)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wafersage.errors import WaferSageError

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Special tokens, ids 0.. in this order (Qwen3-VL's names).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

#: Qwen3-VL's ChatML layout; the assistant's content and its ``<|im_end|>`` are the generation span.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- else -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'text' -%}{{- c['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif c['type'] == 'text' -%}{{- c['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` plus the chat roles, with
    the chat and vision special tokens (so every string stays encodable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256 + 16:
        raise WaferSageError(
            "params.yaml", "init_model.vocab_size too small", f"need > {len(SPECIAL_TOKENS) + 272}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    roles = ["user\n", "assistant\n", "system\n"] * 100
    tok.train_from_iterator(iter([*roles, *texts]), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens={
            "image_token": IMAGE_PAD,
            "video_token": VIDEO_PAD,
            "vision_start_token": VISION_START,
            "vision_end_token": VISION_END,
        },
        model_max_length=2048,
        padding_side="right",
    )


def token_ids(tokenizer: Any) -> dict[str, int]:
    """The Qwen3-VL config's special-token ids, from the tokenizer."""
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        "video_token_id": tokenizer.convert_tokens_to_ids(VIDEO_PAD),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids(VISION_START),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids(VISION_END),
    }
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids.values():
        raise WaferSageError(None, "tokenizer lacks a vision special token", str(ids))
    return ids
