"""The specialist: a small CNN over the map as the VLM sees it (the rendered image decoded back to
off/pass/fail pixels) plus the map's geometric features, trained by the pipeline on the training
split's labels. It is shipped inside the model folder (``specialist/``: safetensors weights and a
JSON config, no pickle) and its class probabilities join the prompt's grounding line
(:class:`wafersage.grounding.Grounder`), so the VLM learns when to trust it.

Single-label data trains with softmax cross-entropy, multi-label data (MixedWM38) with one sigmoid
per class; both weight classes by inverse square-root frequency and augment with the eight
rotations/flips of the map. Probabilities can be averaged over those eight views (``tta``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.encoding import FAIL, PASS
from wafersage.errors import WaferSageError
from wafersage.features import geometric_features
from wafersage.grounding import Grounder, check_mode
from wafersage.taxonomy import CLASSES

FOLDER = "specialist"
WEIGHTS, CONFIG = "specialist.safetensors", "specialist.json"
#: Classes named in the grounding clause: the most probable, at most this many ...
TOP_K = 3
#: ... and only those at or above this probability (the first is always named).
MIN_SHOWN = 0.02


@dataclass
class SpecialistConfig:
    """What a saved specialist needs besides its weights."""

    size: int
    classes: list[str]
    multi_label: bool
    width: int
    feature_mean: list[float]
    feature_std: list[float]
    tta: bool = False
    trained: dict[str, Any] = field(default_factory=dict)


def _net(n_features: int, n_classes: int, width: int) -> Any:
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.conv = nn.Sequential(block(2, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w))
            self.feat = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU())
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * w + 64, n_classes))

        def forward(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.conv(x).mean((2, 3)), self.feat(f)], 1))

    return Net()


def _features(maps: np.ndarray) -> np.ndarray:
    n, h, w = maps.shape
    table = pd.DataFrame({"rows": h, "cols": w, "map": [m.tobytes() for m in maps]})
    return np.nan_to_num(geometric_features(table).to_numpy(np.float32))


#: The eight rotations/flips of a map: (quarter turns, then a left-right flip).
VIEWS: tuple[tuple[int, bool], ...] = tuple((k, flip) for k in range(4) for flip in (False, True))


def _view(maps: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(maps, k, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if flip else out)


def _view_planes(x: Any, k: int, flip: bool) -> Any:
    """:func:`_view` of a (n, 2, h, w) tensor."""
    import torch

    out = torch.rot90(x, k, (2, 3))
    return out.flip(3) if flip else out


def _planes(maps: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.stack([maps == PASS, maps == FAIL], 1).astype(np.float32))


def _stack(maps: Sequence[np.ndarray], size: int) -> np.ndarray:
    arr = np.stack([np.asarray(m, dtype=np.uint8) for m in maps]) if len(maps) else np.zeros((0, size, size))
    if arr.shape[1:] != (size, size):
        raise WaferSageError(
            None, "specialist input has the wrong size", f"{arr.shape[1:]} != {(size, size)}"
        )
    return arr.astype(np.uint8)


class Specialist:
    """A trained specialist: ``probabilities(maps)`` and the grounding clause of each map."""

    def __init__(self, config: SpecialistConfig, net: Any) -> None:
        self.config, self.net = config, net
        self.net.eval()

    def probabilities(self, maps: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
        """(n, classes) probabilities of canonical ``size`` x ``size`` maps."""
        import torch

        c = self.config
        arr = _stack(maps, c.size)
        mean, std = np.asarray(c.feature_mean, np.float32), np.asarray(c.feature_std, np.float32)
        views = VIEWS if c.tta else VIEWS[:1]
        out = np.zeros((len(arr), len(c.classes)), dtype=np.float64)
        with torch.inference_mode():
            for s in range(0, len(arr), batch_size):
                for k, flip in views:
                    part = _view(arr[s : s + batch_size], k, flip)
                    f = torch.from_numpy((_features(part) - mean) / std)
                    logits = self.net(_planes(part), f)
                    p = torch.sigmoid(logits) if c.multi_label else torch.softmax(logits, 1)
                    out[s : s + batch_size] += p.double().numpy() / len(views)
        return out

    def clauses(self, maps: Sequence[np.ndarray]) -> list[str]:
        """``Specialist: Center 93%, Loc 5%.`` per map (the grounding clause)."""
        names = self.config.classes
        out = []
        for row in self.probabilities(maps):
            order = [int(i) for i in np.argsort(-row)[:TOP_K]]
            shown = [i for j, i in enumerate(order) if j == 0 or row[i] >= MIN_SHOWN]
            out.append("Specialist: " + ", ".join(f"{names[i]} {round(100 * row[i])}%" for i in shown) + ".")
        return out

    def predict(self, maps: Sequence[np.ndarray]) -> list[set[str]]:
        """Label sets: the top class (single-label), or every class at >= 0.5 (multi-label; the top
        class when none is)."""
        names = self.config.classes
        out = []
        for row in self.probabilities(maps):
            chosen = {names[i] for i in np.flatnonzero(row >= 0.5)} if self.config.multi_label else set()
            out.append(chosen or {names[int(row.argmax())]})
        return out

    def save(self, folder: str | Path) -> None:
        """``folder/specialist.safetensors`` + ``folder/specialist.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Specialist:
        """A saved specialist (weights through safetensors, never pickle)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = SpecialistConfig(**json.loads((folder / CONFIG).read_text()))
            state = load_file(str(folder / WEIGHTS))
        except (OSError, ValueError, TypeError) as exc:
            raise WaferSageError(folder, "cannot load the specialist", str(exc).splitlines()[0]) from None
        net = _net(len(config.feature_mean), len(config.classes), config.width)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise WaferSageError(
                folder, "specialist weights do not match its config", str(exc)[:200]
            ) from None
        return cls(config, net)


def fit(maps: Sequence[np.ndarray], labels: Sequence[Sequence[str]], p: dict[str, Any]) -> Specialist:
    """Train on canonical ``p['size']``-square maps and their label lists (names from the taxonomy).

    ``p``: ``size, width, epochs, batch_size, lr, weight_decay, label_smoothing, seed, threads, tta``.
    """
    import torch
    import torch.nn.functional as F

    size = int(p["size"])
    arr = _stack(maps, size)
    sets = [[c for c in CLASSES if c in set(v)] for v in labels]
    if any(not s for s in sets):
        raise WaferSageError(None, "specialist training maps need at least one known label each")
    used = [c for c in CLASSES if any(c in s for s in sets)]
    if len(used) < 2:
        raise WaferSageError(None, "specialist needs at least two classes", ", ".join(used))
    multi = any(len(s) > 1 for s in sets)
    index = {c: i for i, c in enumerate(used)}
    y = np.zeros((len(sets), len(used)), dtype=np.float32)
    for r, s in enumerate(sets):
        y[r, [index[c] for c in s]] = 1.0
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    torch.manual_seed(int(p["seed"]))
    feats = np.stack([_features(_view(arr, k, flip)) for k, flip in VIEWS])  # (8, n, features)
    mean, std = feats.mean((0, 1)), feats.std((0, 1)) + 1e-6
    x, f = _planes(arr), torch.from_numpy((feats - mean) / std)
    counts = y.sum(0)
    weight = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1) / len(used)), dtype=torch.float32)
    target = torch.from_numpy(y) if multi else torch.from_numpy(y.argmax(1))
    net = _net(feats.shape[2], len(used), int(p["width"]))
    bs = min(int(p["batch_size"]), len(arr))
    steps_per_epoch = max(1, len(arr) // bs)
    total = int(p["epochs"]) * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), float(p["lr"]), weight_decay=float(p["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, float(p["lr"]), total_steps=total)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    smooth = float(p["label_smoothing"])
    net.train()
    t0 = time.perf_counter()
    for _ in range(int(p["epochs"])):
        perm = torch.randperm(len(arr), generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            view = int(torch.randint(len(VIEWS), (1,), generator=gen))
            logits = net(_view_planes(x[idx], *VIEWS[view]), f[view][idx])
            if multi:
                tb = target[idx] * (1 - smooth) + smooth / 2
                loss = F.binary_cross_entropy_with_logits(logits, tb, pos_weight=None, weight=weight)
            else:
                loss = F.cross_entropy(logits, target[idx], weight=weight, label_smoothing=smooth)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    config = SpecialistConfig(
        size=size,
        classes=used,
        multi_label=multi,
        width=int(p["width"]),
        feature_mean=[float(v) for v in mean],
        feature_std=[float(v) for v in std],
        tta=bool(p["tta"]),
        trained={"maps": len(arr), "steps": total, "train_s": round(time.perf_counter() - t0, 2)},
    )
    return Specialist(config, net)


def grounder_of(model_folder: str | Path, info: dict[str, Any]) -> Grounder:
    """The :class:`Grounder` a model folder was trained with (its ``wafersage.json`` is ``info``)."""
    advisor = Specialist.load(Path(model_folder) / FOLDER) if info.get("specialist") else None
    return Grounder(check_mode(info.get("grounding")), advisor)


def ship(src_folder: str | Path, dst_folder: str | Path) -> None:
    """Copy the specialist of model folder ``src_folder`` (if any) into ``dst_folder``."""
    src = Path(src_folder) / FOLDER
    if (src / CONFIG).exists():
        shutil.copytree(src, Path(dst_folder) / FOLDER, dirs_exist_ok=True)
