"""The torchvision-free Qwen3-VL processor: the one place for that fix.

transformers 5.x's ``Qwen3VLProcessor`` insists on a video processor, and Qwen-VL's video
processor needs torchvision, which does not load beside the pinned torch. ``WaferQwen3VLProcessor``
takes only an image processor (``Qwen2VLImageProcessorPil``) and a tokenizer. It is registered with
``AutoProcessor`` for ``Qwen3VLConfig`` when this module is imported (``import wafersage.modeling``
does it): unregistered, ``AutoProcessor.from_pretrained`` on a saved folder silently returns a bare
tokenizer. :func:`load_processor` asserts that it did not.

It also marks the assistant tokens of a chat batch (``return_assistant_tokens_mask``, what TRL's
SFT collator asks for) with whole-row comparisons instead of a Python loop over every token: the
same mask, with the collator about 2.5x faster (`benchmarks/sft_collator.py`).
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoProcessor, Qwen3VLConfig
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from wafersage.errors import WaferSageError


class WaferQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` with no video processor (images and text only)."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def _adjust_assistant_masks_indices(
        self, processed_dict: dict[str, Any], generation_indices: list[list[Any]]
    ) -> dict[str, Any]:
        """``processed_dict`` with ``assistant_masks``: 1 on each token that overlaps an assistant
        span (shifted past the image placeholders expanded before it), as the stock method sets it."""
        offsets = processed_dict.pop("offset_mapping")
        input_ids = processed_dict["input_ids"]
        replaced = processed_dict.pop("text_replacement_offsets", None) or [[]] * len(input_ids)
        masks = []
        for i in range(len(input_ids)):
            tokens = np.asarray(offsets[i]).reshape(-1, 2)
            ends = [r["span"][1] for r in replaced[i]]
            gained = [0] + [r["new_span"][1] - r["span"][1] for r in replaced[i]]
            mask = np.zeros(len(input_ids[i]), dtype=bool)
            for span in generation_indices[i]:
                start, end = (c + gained[bisect.bisect_right(ends, c)] for c in span)
                mask |= (tokens[:, 0] < end) & (tokens[:, 1] > start)
            masks.append(mask.astype(int).tolist())
        processed_dict["assistant_masks"] = masks
        return processed_dict


def register() -> None:
    """Make ``AutoProcessor`` build :class:`WaferQwen3VLProcessor` for Qwen3-VL folders."""
    AutoProcessor.register(Qwen3VLConfig, WaferQwen3VLProcessor, exist_ok=True)


register()


def as_wafer_processor(processor: Any, source: str | Path) -> WaferQwen3VLProcessor:
    """``processor`` as a :class:`WaferQwen3VLProcessor` (rebuilt from its parts if it is the stock
    Qwen3-VL one); a bare tokenizer or anything else is a :class:`WaferSageError`."""
    if isinstance(processor, WaferQwen3VLProcessor):
        return processor
    if isinstance(processor, Qwen3VLProcessor):
        return WaferQwen3VLProcessor(processor.image_processor, processor.tokenizer, processor.chat_template)
    raise WaferSageError(
        source,
        "not a Qwen3-VL processor",
        f"AutoProcessor gave {type(processor).__name__}; import wafersage.modeling to register the processor",
    )


def load_processor(path: str | Path) -> WaferQwen3VLProcessor:
    """The processor saved in ``path`` (never a bare tokenizer)."""
    path = Path(path)
    if not path.is_dir():
        raise WaferSageError(path, "model folder does not exist")
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise WaferSageError(path, "cannot load the processor", str(exc).splitlines()[0]) from None
    return as_wafer_processor(processor, path)
