"""Batched greedy answers from a Qwen3-VL model and its processor (one code path for the tiny
default and a real checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wafersage.annotation.grounding import Grounding, ground_all
from wafersage.modeling.greedy import AnswerDrafts, PromptEncoder, greedy_ids, is_plain_greedy


def generate_answers(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    grounding: Grounding,
    drafts: AnswerDrafts | None = None,
) -> list[str]:
    """Greedy answers to ``questions`` about ``images`` (PIL), left-padded batches, no grad; the
    prompt grounded as the model was trained (``grounding``: the model folder's mode; prefer the
    serving ``Predictor``, which reads it). The tokens are ``model.generate(do_sample=False)``'s;
    a generation config that adds logits processors is decoded by ``generate`` itself. Decoding
    drafts from the answers given before (``drafts``, else a fresh :class:`AnswerDrafts` for this
    call); the model verifies each drafted token, so the answers are the same."""
    import torch

    images, questions = ground_all(grounding, images, questions)
    tok = processor.tokenizer
    encode = PromptEncoder(processor)
    plain = is_plain_greedy(model.generation_config)
    drafts = AnswerDrafts() if drafts is None else drafts
    was_training = model.training
    model.eval()
    out: list[str] = []
    with torch.inference_mode():
        for s in range(0, len(questions), batch_size):
            inputs = {
                k: v.to(model.device)
                for k, v in encode(images[s : s + batch_size], questions[s : s + batch_size]).items()
            }
            if plain:
                new = greedy_ids(model, inputs, max_new_tokens, tok.eos_token_id, tok.pad_token_id, drafts)
            else:
                ids = model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                new = ids[:, inputs["input_ids"].shape[1] :]
            out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    model.train(was_training)
    return out
