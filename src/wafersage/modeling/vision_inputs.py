"""Wafer map -> the vision tower's inputs (``pixel_values``, ``image_grid_thw``), in one place.

The VLM's processor uses ``Qwen2VLImageProcessorPil`` (:func:`image_processor`) on the image
``render.render_map(m, size)``; :func:`pixel_values` is a vectorised equivalent for training
(the same numbers, checked by the tests), which also takes D4 views (rotations and flips) of
the rendered images for the self-supervised objective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.render import PALETTE, check_size, render_map, resample

if TYPE_CHECKING:
    from transformers import Qwen2VLImageProcessorPil

PATCH_SIZE, MERGE_SIZE, TEMPORAL_PATCH_SIZE = 16, 2, 2
#: The image processor's normalisation (OpenAI CLIP mean/std, the Qwen-VL default).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def image_processor(size: int) -> Qwen2VLImageProcessorPil:
    """The VLM's image processor, pinned so a ``size`` x ``size`` render stays that size."""
    from transformers import Qwen2VLImageProcessorPil

    check_size(size)
    return Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        min_pixels=size * size,
        max_pixels=size * size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )


def visual_tokens(size: int) -> int:
    """Visual tokens per image after the 2x2 merge (96 -> 9)."""
    return (check_size(size) // (PATCH_SIZE * MERGE_SIZE)) ** 2


_LUT = np.array([PALETTE[OFF], PALETTE[PASS], PALETTE[FAIL]], dtype=np.uint8)


def resample_batch(maps: list[np.ndarray], size: int) -> np.ndarray:
    """Canonical maps resampled as the renderer does, uint8 (B, size, size) of 0/1/2."""
    check_size(size)
    out = np.empty((len(maps), size, size), dtype=np.uint8)
    for i, m in enumerate(maps):
        out[i] = resample(np.asarray(m, dtype=np.uint8), size)
    return out


def colorize(grids: np.ndarray) -> np.ndarray:
    """Resampled 0/1/2 grids -> the renderer's RGB images, uint8 (B, H, W, 3)."""
    return _LUT[grids]


def render_batch(maps: list[np.ndarray], size: int) -> np.ndarray:
    """``render.render_map`` for a batch: RGB images, uint8 (B, size, size, 3)."""
    return colorize(resample_batch(maps, size))


def d4(images: np.ndarray, k: np.ndarray | int, flip: np.ndarray | bool) -> np.ndarray:
    """Each image (B, H, W[, C]) rotated by ``k`` quarter turns and then mirrored left-right where ``flip``
    (the eight symmetries of a square, which leave a wafer's defect class unchanged)."""
    n = len(images)
    k = np.broadcast_to(np.asarray(k) % 4, (n,))
    flip = np.broadcast_to(np.asarray(flip, dtype=bool), (n,))
    out = np.empty_like(images)
    for kk in range(4):
        for ff in (False, True):
            sel = (k == kk) & (flip == ff)
            if sel.any():
                v = np.rot90(images[sel], kk, axes=(1, 2))
                out[sel] = v[:, :, ::-1] if ff else v
    return out


def patchify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, H, W, 3) images -> (pixel_values float32 (B*gh*gw, 3*2*16*16), grid_thw (B, 3)),
    laid out exactly as ``Qwen2VLImageProcessorPil`` lays them out."""
    b, h, w, c = images.shape
    x = images.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(IMAGE_MEAN, np.float32)) / np.asarray(IMAGE_STD, np.float32)
    p, m = PATCH_SIZE, MERGE_SIZE
    gh, gw = h // p, w // p
    x = x.transpose(0, 3, 1, 2).reshape(b, c, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 2, 5, 3, 6, 1, 4, 7)  # (B, gh/m, gw/m, m, m, C, p, p)
    x = np.broadcast_to(x[:, :, :, :, :, :, None], (*x.shape[:6], TEMPORAL_PATCH_SIZE, p, p))
    pixel = np.ascontiguousarray(x).reshape(b * gh * gw, c * TEMPORAL_PATCH_SIZE * p * p)
    grid = np.tile(np.array([[1, gh, gw]], dtype=np.int64), (b, 1))
    return pixel, grid


def pixel_values(maps: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The vision tower's inputs for canonical maps (as the VLM's image processor makes them)."""
    return patchify(render_batch(maps, size))


def processor_pixel_values(maps: list[np.ndarray], size: int) -> dict[str, Any]:
    """The same through the transformers image processor (slow; the reference for tests)."""
    proc = image_processor(size)
    return proc(images=[render_map(m, size) for m in maps], return_tensors="np")
