"""Batched greedy answers from a Qwen3-VL model and its processor (one code path for the tiny
default and a real checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def generate_answers(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    grounding: str,
) -> list[str]:
    """Greedy answers to ``questions`` about ``images`` (PIL), left-padded batches, no grad; the
    prompt grounded as the model was trained (``grounding``: the model folder's mode; prefer the
    serving ``Predictor``, which reads it)."""
    import torch

    from wafersage.grounding import ground_all

    images, questions = ground_all(grounding, images, questions)
    tok = processor.tokenizer
    was_training = model.training
    model.eval()
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, len(questions), batch_size):
            convs = [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": str(q)}]}]
                for q in questions[s : s + batch_size]
            ]
            texts = [
                processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
            ]
            inputs = processor(
                text=texts,
                images=list(images[s : s + batch_size]),
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(model.device)
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
