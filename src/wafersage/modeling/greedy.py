"""Greedy decoding for Qwen3-VL that gives ``model.generate(do_sample=False)``'s tokens, token for
token, with less work around the model's own forward.

:func:`greedy_ids` runs one forward over the left-padded prompt (vision tower included, logits of
the last position only), then steps on the returned key/value cache. Each step feeds every
unfinished row its last token, plus a continuation drafted from earlier answers
(:class:`AnswerDrafts`) that the same forward verifies. A finished row leaves the batch and the
cache, and the loop stops once every row has emitted ``eos`` or ``max_new_tokens`` tokens. The
positions are the ones ``generate`` builds. The text row comes from the attention mask and the three
multimodal rope rows from ``get_rope_index``, computed once per distinct prompt row. Each fed
token adds one to all four rows.

:class:`PromptEncoder` returns the processor's batch without the processor's per-call overhead. The
chat template and the tokenizer run once per distinct question, and the image processor's pixel
arithmetic is vectorised over the batch. It uses the processor itself for any batch whose images
are not all RGB images of one size that the image processor keeps as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Generation-config fields that add logits processors, another decoding mode or other stopping
#: rules to ``generate``. Any of them away from its default makes :func:`is_plain_greedy` false.
_NEUTRAL_FIELDS = (
    "num_beams",
    "num_return_sequences",
    "penalty_alpha",
    "dola_layers",
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "sequence_bias",
    "min_length",
    "min_new_tokens",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "guidance_scale",
    "watermarking_config",
    "remove_invalid_values",
    "renormalize_logits",
    "stop_strings",
    "max_time",
    "prefill_chunk_size",
    "cache_implementation",
    "prompt_lookup_num_tokens",
)


def is_plain_greedy(generation_config: Any) -> bool:
    """Whether ``generate(do_sample=False)`` under ``generation_config`` is plain argmax decoding
    with a dynamic cache, i.e. what :func:`greedy_ids` reproduces."""
    from transformers import GenerationConfig

    default = GenerationConfig()
    return all(getattr(generation_config, f, None) == getattr(default, f, None) for f in _NEUTRAL_FIELDS)


class PromptEncoder:
    """The processor's inputs for (image, question) pairs, as ``processor(text=..., images=...,
    padding=True, padding_side="left", return_tensors="pt")`` gives them, with the tokenized prompts
    cached across calls."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self._texts: dict[str, str] = {}
        self._ids: dict[tuple[str, int], list[int]] = {}

    def text(self, question: str) -> str:
        """The chat-templated prompt of ``question`` (cached)."""
        text = self._texts.get(question)
        if text is None:
            turn = [{"type": "image"}, {"type": "text", "text": str(question)}]
            text = self._texts[question] = self.processor.apply_chat_template(
                [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
            )
        return text

    def __call__(self, images: Sequence[Any], questions: Sequence[str]) -> dict[str, Any]:
        """The left-padded batch (``input_ids``, ``attention_mask``, ``mm_token_type_ids``,
        ``pixel_values``, ``image_grid_thw``) as torch tensors."""
        import torch

        texts = [self.text(q) for q in questions]
        pixels = self._pixels(images)
        if pixels is None:
            batch = self.processor(
                text=texts, images=list(images), padding=True, padding_side="left", return_tensors="pt"
            )
            return dict(batch)
        pixel_values, grid = pixels
        merge = self.processor.image_processor.merge_size
        n_image = int(grid[0].prod()) // merge**2
        rows = self._token_rows(texts, n_image)
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.processor.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :] = row
            mask[i, length - len(row) :] = 1
        types = np.zeros_like(ids)
        types[np.isin(ids, self.processor.image_token_ids)] = 1
        types[np.isin(ids, self.processor.video_token_ids)] = 2
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "mm_token_type_ids": torch.from_numpy(types),
            "pixel_values": torch.from_numpy(pixel_values),
            "image_grid_thw": torch.from_numpy(grid),
        }

    def _token_rows(self, texts: list[str], n_image: int) -> list[list[int]]:
        """Token ids of each prompt with its image token expanded to ``n_image`` tokens (one
        tokenizer call for the prompts not seen before)."""
        new = list(dict.fromkeys(t for t in texts if (t, n_image) not in self._ids))
        if new:
            token = self.processor.image_token
            expanded = [t.replace(token, token * n_image) for t in new]
            for t, row in zip(new, self.processor.tokenizer(expanded)["input_ids"], strict=True):
                self._ids[(t, n_image)] = list(row)
        return [self._ids[(t, n_image)] for t in texts]

    def _pixels(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(pixel_values, image_grid_thw)`` as ``Qwen2VLImageProcessorPil`` computes them (rescale
        in float64, normalise in float32, the same patch layout), or None for a batch it would
        resize or convert, or for another image processor."""
        from transformers import Qwen2VLImageProcessorPil

        ip = self.processor.image_processor
        if not isinstance(ip, Qwen2VLImageProcessorPil):
            return None
        size = getattr(images[0], "size", None) if images else None
        if size is None or not all(getattr(im, "mode", None) == "RGB" and im.size == size for im in images):
            return None
        w, h = size
        p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        bounds = ip.size.get("shortest_edge"), ip.size.get("longest_edge")
        if not (ip.do_rescale and ip.do_normalize) or h % (p * m) or w % (p * m):
            return None
        if None in bounds or not bounds[0] <= h * w <= bounds[1]:
            return None
        x = np.stack([np.asarray(im) for im in images])
        x = (x.astype(np.float64) * ip.rescale_factor).astype(np.float32)
        mean, std = (np.asarray(v, dtype=np.float32) for v in (ip.image_mean, ip.image_std))
        x = (x - mean) / std
        b, c = x.shape[0], x.shape[3]
        gh, gw = h // p, w // p
        x = x.transpose(0, 3, 1, 2).reshape(b, c, gh // m, m, p, gw // m, m, p)
        x = x.transpose(0, 2, 5, 3, 6, 1, 4, 7)[:, :, :, :, :, :, None]
        x = np.broadcast_to(x, (*x.shape[:6], t, p, p)).reshape(b * gh * gw, c * t * p * p)
        grid = np.tile(np.array([[1, gh, gw]], dtype=np.int64), (b, 1))
        return np.ascontiguousarray(x), grid


def _rope_positions(model: Any, inputs: dict[str, Any]) -> Any:
    """``generate``'s prefill position ids (4, B, L): the text positions from the attention mask,
    then ``get_rope_index``'s three rows, computed once per distinct (prompt, mask, grid) row."""
    import torch

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    grid, types = inputs["image_grid_thw"], inputs["mm_token_type_ids"]
    # the Qwen3VLModel inside (``model.model``, also under a PEFT wrapper)
    rope = next(m for m in model.modules() if hasattr(m, "get_rope_index")).get_rope_index
    if grid.shape[0] != ids.shape[0]:  # not one image a row: no row-wise dedup
        return torch.cat([text[None], rope(ids, types, grid, attention_mask=mask)[0]])
    key = torch.cat([ids, mask.long(), grid.long()], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), ids.shape[0], dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(ids.shape[0], device=ids.device), "amin")
    vision, _ = rope(ids[first], types[first], grid[first], attention_mask=mask[first])
    return torch.cat([text[None], vision[:, inverse]])


class AnswerDrafts:
    """Draft continuations for :func:`greedy_ids`, looked up in the answers already decoded.

    Each decoded row is kept as n-grams (up to ``order`` tokens, the row's start included) and the
    ``length`` tokens that followed each. A row in progress gets the continuation of the longest of
    its last n-grams seen before (the latest one seen). Templated answers repeat, so a draft often
    covers the rest of an answer. Drafts are only proposals: the model verifies every token."""

    _START = -1

    def __init__(self, order: int = 3, length: int = 12, max_keys: int = 200_000) -> None:
        self.order, self.length, self.max_keys = order, length, max_keys
        self._next: dict[tuple[int, ...], list[int]] = {}

    def add(self, rows: Sequence[Sequence[int]]) -> None:
        """Learn the continuations in ``rows`` (token ids, eos included where a row ended)."""
        if len(self._next) > self.max_keys:
            self._next.clear()
        for row in rows:
            seq = [self._START, *row]
            for i in range(1, len(seq)):
                follow = seq[i : i + self.length]
                for n in range(1, min(self.order, i) + 1):
                    self._next[tuple(seq[i - n : i])] = follow

    def draft(self, row: Sequence[int], room: int) -> list[int]:
        """At most ``room`` tokens that may follow ``row`` (empty when none is known)."""
        if room < 1:
            return []
        seq = [self._START, *row[-self.order :]] if len(row) < self.order else list(row[-self.order :])
        for n in range(min(self.order, len(seq)), 0, -1):
            follow = self._next.get(tuple(seq[-n:]))
            if follow is not None:
                return follow[:room]
        return []


def greedy_ids(
    model: Any,
    inputs: dict[str, Any],
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    drafts: AnswerDrafts | None = None,
) -> Any:
    """New token ids (B, <= ``max_new_tokens``) of plain greedy decoding from the processor's
    left-padded ``inputs``, as ``model.generate(**inputs, do_sample=False, ...)`` returns them after
    the prompt: ``pad_token_id`` after a row's ``eos_token_id``, and no columns after the step where
    every row has finished. Call it under ``torch.inference_mode()`` with the model in eval mode.

    With ``drafts``, each step feeds every running row its last token plus a drafted continuation,
    keeps the drafted tokens up to the first one greedy decoding would not have chosen, and adds
    the token the model chose there; the rejected tokens stay in the cache, masked out. The
    decoded rows are then added to ``drafts``. Rows that have finished leave the batch (and the
    cache), so the last steps run on the long answers only."""
    import torch

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    mask = inputs["attention_mask"]
    positions = _rope_positions(model, inputs)
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=mask,
        position_ids=positions,
        pixel_values=inputs["pixel_values"],
        image_grid_thw=inputs["image_grid_thw"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        use_cache=True,
        logits_to_keep=1,
    )
    rows: list[list[int]] = [[t] for t in out.logits[:, -1].float().argmax(dim=-1).tolist()]
    live = list(range(len(rows)))  # the rows in the forward batch: the ones still running
    cache, positions = out.cache, positions[..., -1:] + 1  # where each row's next fed token sits
    while True:
        going = [
            k for k, i in enumerate(live) if rows[i][-1] != eos_token_id and len(rows[i]) < max_new_tokens
        ]
        if not going:
            break
        if len(going) < len(live):  # drop finished rows from the cache, the mask and the positions
            keep = torch.tensor(going, device=mask.device)
            cache.batch_select_indices(keep)
            mask, positions = mask[keep], positions[:, keep]
            live = [live[k] for k in going]
        guess = [
            drafts.draft(rows[i], max_new_tokens - len(rows[i]) - 1) if drafts is not None else []
            for i in live
        ]
        width = 1 + max(len(g) for g in guess)
        fed = [
            [rows[i][-1], *g] + [pad_token_id] * (width - 1 - len(g))
            for i, g in zip(live, guess, strict=True)
        ]
        fresh = [[1] * (1 + len(g)) + [0] * (width - 1 - len(g)) for g in guess]
        mask = torch.cat([mask, torch.tensor(fresh, device=mask.device)], dim=-1)
        out = model(
            input_ids=torch.tensor(fed, device=mask.device),
            attention_mask=mask,
            position_ids=positions + torch.arange(width, device=mask.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=width,
        )
        cache = out.cache
        chosen = out.logits.float().argmax(dim=-1).tolist()
        for k, (i, g) in enumerate(zip(live, guess, strict=True)):
            kept = 0  # drafted tokens greedy decoding would have chosen, up to eos
            while kept < len(g) and chosen[k][kept] == g[kept] and g[kept] != eos_token_id:
                kept += 1
            rows[i] += [*g[:kept], chosen[k][kept]]
            mask[k, mask.shape[1] - width + kept + 1 :] = 0
            positions[:, k] += kept + 1
    if drafts is not None:
        drafts.add(rows)
    length = max(len(r) for r in rows)
    return torch.tensor([r + [pad_token_id] * (length - len(r)) for r in rows], device=mask.device)
