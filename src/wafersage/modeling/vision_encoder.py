"""The wafer vision encoder: the VLM's own vision tower (``Qwen3VLVisionModel``) plus a small
classification head on its pooled visual tokens, its losses, and its on-disk form.

``models/vision/`` holds ``vision_tower.safetensors`` (the tower's state dict, loadable into
``Qwen3VLForConditionalGeneration(config).model.visual`` with no missing or unexpected keys),
``vision_config.json``, ``head.safetensors`` and ``encoder.json`` (image size, classes).
Embeddings and class scores are averaged over the eight D4 views of each map, so they do not
change when a map is rotated or flipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wafersage.errors import WaferSageError
from wafersage.modeling.vision_inputs import colorize, d4, patchify, resample_batch
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import decode_map

if TYPE_CHECKING:
    import torch
    from transformers import Qwen3VLVisionConfig

TOWER_FILE, CONFIG_FILE, HEAD_FILE, META_FILE = (
    "vision_tower.safetensors",
    "vision_config.json",
    "head.safetensors",
    "encoder.json",
)
#: The eight symmetries of the square: (quarter turns, mirrored).
D4_VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def _modules() -> Any:
    """The encoder's torch module class, built lazily so importing this file stays light."""
    import torch
    from torch import nn
    from transformers import Qwen3VLVisionModel

    class WaferEncoder(nn.Module):
        """Vision tower -> mean of its merged visual tokens (main merger + deepstack mergers)
        -> embedding; a linear class head and a projection for the contrastive loss on top."""

        def __init__(self, config: Qwen3VLVisionConfig, n_classes: int | None = None, proj_dim: int = 64):
            super().__init__()
            n_classes = len(taxonomy.classes()) if n_classes is None else n_classes
            self.visual = Qwen3VLVisionModel(config)
            d = config.out_hidden_size
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_classes))
            self.proj = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, proj_dim))

        def embed(self, pixel: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            out = self.visual(pixel, grid_thw=grid)
            b = grid.shape[0]
            feats = [out.pooler_output, *(out.deepstack_features or [])]
            return torch.stack([f.view(b, -1, f.shape[-1]).mean(1) for f in feats]).mean(0)

        def forward(self, pixel: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
            z = self.embed(pixel, grid)
            return z, self.head(z), self.proj(z)

    return WaferEncoder


def build_encoder(config: Qwen3VLVisionConfig, seed: int = 0) -> Any:
    """A freshly initialised encoder (seeded)."""
    import torch

    torch.manual_seed(seed)
    return _modules()(config)


# --- inputs ------------------------------------------------------------------------------------


def table_maps(df: pd.DataFrame) -> list[np.ndarray]:
    """The canonical maps of a raw table."""
    return [decode_map(b, r, c) for b, r, c in zip(df["map"], df["rows"], df["cols"], strict=True)]


def batch_inputs(
    grids: np.ndarray, k: np.ndarray | int = 0, flip: np.ndarray | bool = False
) -> tuple[Any, Any]:
    """Resampled grids (after an optional D4 view) -> torch (pixel_values, grid_thw)."""
    import torch

    pixel, grid = patchify(colorize(d4(grids, k, flip)))
    return torch.from_numpy(pixel), torch.from_numpy(grid)


# --- losses ------------------------------------------------------------------------------------


def multi_hot(labels: list[list[str]]) -> np.ndarray:
    """(N, classes) float targets: one for each given class; unlabelled rows are all zero."""
    y = np.zeros((len(labels), len(taxonomy.classes())), dtype=np.float32)
    for i, names in enumerate(labels):
        for n in names:
            y[i, taxonomy.class_index()[n]] = 1.0
    return y


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float) -> torch.Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu 2018), robust to wrong labels: the mean over a
    wafer's given classes of ``(1 - p_c^q) / q`` (a mixed map pulls its mass onto all its
    classes); rows with no label contribute nothing. Returns 0 when no row is labelled."""
    import torch

    has = targets.sum(1) > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    p = torch.softmax(logits[has], dim=1).clamp_min(1e-7)
    t = targets[has]
    per = ((1 - p.pow(q)) / q * t).sum(1) / t.sum(1)
    return per.mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's contrastive loss between two views of each map (the other maps are negatives)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


# --- saving and loading ------------------------------------------------------------------------


def save_encoder(model: Any, directory: Path, image_size: int, extra: dict[str, Any] | None = None) -> None:
    """Write the tower, its config, the head and the metadata into ``directory`` (must exist)."""
    from safetensors.torch import save_file

    tower = {k: v.detach().contiguous() for k, v in model.visual.state_dict().items()}
    save_file(tower, str(directory / TOWER_FILE), metadata={"format": "pt"})
    head = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    head |= {f"proj.{k}": v for k, v in model.proj.state_dict().items()}
    save_file({k: v.detach().contiguous() for k, v in head.items()}, str(directory / HEAD_FILE))
    cfg = model.visual.config.to_dict()
    (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    meta = {
        "image_size": image_size,
        "classes": list(taxonomy.classes()),
        "pooling": "mean merged tokens, D4-averaged",
    }
    (directory / META_FILE).write_text(json.dumps(meta | (extra or {}), indent=2, sort_keys=True) + "\n")
    for f in (directory, *directory.iterdir()):
        f.chmod(0o755 if f.is_dir() else 0o644)  # temp dirs and safetensors files start private


def load_vision_config(directory: str | Path) -> Qwen3VLVisionConfig:
    """The saved tower's ``Qwen3VLVisionConfig``."""
    from transformers import Qwen3VLVisionConfig

    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise WaferSageError(path, "vision encoder not found", "run `wafersage pretrain-vision` first")
    cfg = json.loads(path.read_text())
    for k in ("model_type", "transformers_version", "architectures"):
        cfg.pop(k, None)
    return Qwen3VLVisionConfig(**cfg)


def load_tower_state(directory: str | Path) -> dict[str, Any]:
    """The tower's state dict, for ``vlm.model.visual.load_state_dict(..., strict=True)``."""
    from safetensors.torch import load_file

    path = Path(directory) / TOWER_FILE
    if not path.exists():
        raise WaferSageError(
            path, "vision encoder weights not found", "run `wafersage pretrain-vision` first"
        )
    return load_file(str(path))


def load_encoder(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """The saved encoder (eval mode) and its metadata."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    model = _modules()(load_vision_config(directory), n_classes=len(meta["classes"]))
    model.visual.load_state_dict(load_tower_state(directory), strict=True)
    head = load_file(str(directory / HEAD_FILE))
    model.head.load_state_dict({k[5:]: v for k, v in head.items() if k.startswith("head.")}, strict=True)
    model.proj.load_state_dict({k[5:]: v for k, v in head.items() if k.startswith("proj.")}, strict=True)
    return model.eval(), meta


# --- inference ---------------------------------------------------------------------------------


def encode_grids(
    model: Any, grids: np.ndarray, batch_size: int = 256, views: bool = True
) -> tuple[np.ndarray, ...]:
    """(embeddings (N, D), class probabilities (N, 9)) of resampled grids, no grad; averaged over
    the eight D4 views when ``views``."""
    import torch

    was_training = model.training
    model.eval()
    zs, ps = [], []
    with torch.no_grad():
        for s in range(0, len(grids), batch_size):
            g = grids[s : s + batch_size]
            z_sum, p_sum = 0.0, 0.0
            for k, f in D4_VIEWS if views else ((0, False),):
                z, logits, _ = model(*batch_inputs(g, k, f))
                z_sum = z_sum + z
                p_sum = p_sum + torch.softmax(logits, 1)
            n = len(D4_VIEWS) if views else 1
            zs.append((z_sum / n).numpy())
            ps.append((p_sum / n).numpy())
    model.train(was_training)
    d = model.visual.config.out_hidden_size
    if not zs:
        return np.zeros((0, d), np.float32), np.zeros((0, len(taxonomy.classes())), np.float32)
    return np.concatenate(zs), np.concatenate(ps)


def _maps_of(maps_or_table: pd.DataFrame | list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(maps_or_table, pd.DataFrame):
        return table_maps(maps_or_table)
    return [np.asarray(m, dtype=np.uint8) for m in maps_or_table]


def embed(
    maps_or_table: pd.DataFrame | list[np.ndarray],
    model_dir: str | Path = "models/vision",
    batch_size: int = 256,
    views: bool = True,
) -> np.ndarray:
    """Per-wafer embeddings (N, D) from the pretrained encoder, no grad; averaged over the eight
    rotations/flips (invariant to them) when ``views``, else of the map as it is (8x cheaper)."""
    model, meta = load_encoder(model_dir)
    grids = resample_batch(_maps_of(maps_or_table), int(meta["image_size"]))
    return encode_grids(model, grids, batch_size, views)[0]


def predict_proba(
    maps_or_table: pd.DataFrame | list[np.ndarray],
    model_dir: str | Path = "models/vision",
    batch_size: int = 256,
    views: bool = True,
) -> np.ndarray:
    """Per-wafer class probabilities (N, classes) from the encoder's head, in taxonomy order."""
    model, meta = load_encoder(model_dir)
    grids = resample_batch(_maps_of(maps_or_table), int(meta["image_size"]))
    return encode_grids(model, grids, batch_size, views)[1]
