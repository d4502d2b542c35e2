"""The torchvision-free Qwen3-VL processor: the one place for that fix.

transformers 5.x's ``Qwen3VLProcessor`` insists on a video processor, and Qwen-VL's video
processor needs torchvision, which does not load beside the pinned torch. ``WaferQwen3VLProcessor``
takes only an image processor (``Qwen2VLImageProcessorPil``) and a tokenizer. It is registered with
``AutoProcessor`` for ``Qwen3VLConfig`` when this module is imported (``import wafersage.modeling``
does it): unregistered, ``AutoProcessor.from_pretrained`` on a saved folder silently returns a bare
tokenizer. :func:`load_processor` asserts that it did not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
