"""The specialist: a small CNN over the map as the VLM sees it (the rendered image decoded back to
off/pass/fail pixels) plus the geometric features of the die-level map behind it (the one the
rendered image carries; the picture's own pixels when it carries none), blended with
gradient-boosted trees on the same features, trained by the pipeline on the training split's
labels. With ``picture_features`` both members also learn from the features of the picture itself
(a trailing 0/1 feature says which source a row's features come from), so a picture that carries
no die-level map is read as well as its pixels allow, not with features of the wrong scale.

It is shipped inside the model folder (``specialist/``: safetensors weights, the trees in skops
format loaded with a fixed list of trusted types, and a JSON config; no pickle) and its class
probabilities join the prompt's grounding line (:class:`wafersage.annotation.grounding.Grounder`),
so the VLM learns when to trust it. The two members are mixed either with one trees weight that
the selection split chooses (``blend``) or by a logistic regression on both members' log-probabilities
(``stack``, :func:`fit_stack`), fitted on the out-of-fold probabilities of the training maps.

Single-label data trains with softmax cross-entropy, multi-label data (MixedWM38) with one sigmoid
per class; both weight classes by inverse square-root frequency and augment with the eight
rotations/flips of the map. Probabilities can be averaged over those eight views (``tta``).

The VLM must learn how far to trust the specialist on maps the specialist never saw, so its
training prompts carry out-of-fold probabilities (:func:`fit_out_of_fold`, :class:`OutOfFold`): each
training map's clause comes from a specialist fitted on the other folds.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.grounding import Grounder, check_mode
from wafersage.errors import WaferSageError, read_parquet
from wafersage.evaluation import stats
from wafersage.modeling.baselines import fit_trees
from wafersage.progress import progress
from wafersage.wafers import taxonomy
from wafersage.wafers.encoding import FAIL, PASS
from wafersage.wafers.features import geometric_features

FOLDER = "specialist"
WEIGHTS, CONFIG, TREES = "specialist.safetensors", "specialist.json", "trees.skops"
#: The only types the trees file may hold beyond skops' defaults (anything else is refused).
TRUSTED_TREE_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
#: Weights of the trees in the blend that the val split chooses among (0: the CNN alone).
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The stacker's L2 strengths that cross-validated log-loss chooses among, over this many folds.
STACK_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
STACK_FOLDS = 5
#: Classes named in the grounding clause: the most probable, at most this many ...
TOP_K = 3
#: ... and only those at or above this probability (the first is always named) ...
MIN_SHOWN = 0.02
#: ... and, for a multi-label specialist, every class at or above its decision threshold.
THRESHOLD = 0.5


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
    #: The trees' weight in the blended probabilities (0: no trees member).
    blend: float = 0.0
    #: Features measured on the die-level maps (``False``: on the ``size``-square maps).
    die_features: bool = False
    #: Trained on the picture's features too; the features end with their source (1: die-level).
    picture_features: bool = False
    #: The stacker that replaces the blend (``None``: the blend): ``coef`` (classes x 2 classes),
    #: ``intercept`` (classes) and ``C``, its regularisation (see :func:`fit_stack`).
    stack: dict[str, Any] | None = None
    #: Maps and optimiser steps of the fit (no wall time: equal weights give an equal folder).
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


def _inference(net: Any) -> Any:
    """``net``'s eval-mode forward arranged for the CPU: each batch norm folded into its
    convolution, channels-last planes, max-pool before ReLU (the two commute). The logits are the
    same to float rounding (about 1e-6), at a third of the time."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    convs = [fuse_conv_bn_eval(block[0], block[1]) for block in net.conv]

    def forward(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        h = x.contiguous(memory_format=torch.channels_last)
        for conv in convs:
            h = torch.relu(torch.max_pool2d(conv(h), 2))
        return net.head(torch.cat([h.mean((2, 3)), net.feat(f)], 1))

    return forward


def _features(maps: Sequence[np.ndarray]) -> np.ndarray:
    table = pd.DataFrame(
        {
            "rows": [m.shape[0] for m in maps],
            "cols": [m.shape[1] for m in maps],
            "map": [np.ascontiguousarray(m, dtype=np.uint8).tobytes() for m in maps],
        }
    )
    return np.nan_to_num(geometric_features(table).to_numpy(np.float32))


def _with_source(raw: np.ndarray, die: np.ndarray | float) -> np.ndarray:
    """``raw`` (n, features) with the source feature appended (1: die-level map, 0: picture)."""
    column = np.broadcast_to(np.asarray(die, dtype=np.float32), (len(raw),))[:, None]
    return np.concatenate([raw, column], axis=1)


def _view_features(
    seen: np.ndarray, dies: Sequence[np.ndarray | None] | None, k: int, flip: bool
) -> np.ndarray:
    """The geometric features of view (``k``, ``flip``) of each map: of its die-level map where
    ``dies`` gives one, else of the ``size``-square map the CNN sees."""
    if dies is None:
        return _features(list(_view(seen, k, flip)))
    return _features(
        [_view((s if d is None else d)[None], k, flip)[0] for s, d in zip(seen, dies, strict=True)]
    )


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


def map_key(m: np.ndarray) -> str:
    """A canonical map's content key (what :class:`OutOfFold` looks training maps up by)."""
    return hashlib.md5(np.ascontiguousarray(m, dtype=np.uint8).tobytes() + str(m.shape).encode()).hexdigest()


class Specialist:
    """A trained specialist: ``probabilities(maps)`` and the grounding clause of each map."""

    def __init__(self, config: SpecialistConfig, net: Any, trees: Any = None) -> None:
        self.config, self.net, self.trees = config, net, trees
        self.net.eval()
        self._forward = _inference(net)

    def members(
        self,
        maps: Sequence[np.ndarray],
        dies: Sequence[np.ndarray | None] | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, classes) probabilities of the CNN and of the trees (``None``: no trees) for canonical
        ``size`` x ``size`` maps and, where known, the die-level maps behind them."""
        import torch

        c = self.config
        arr = _stack(maps, c.size)
        dies = list(dies) if c.die_features and dies is not None else None
        mean, std = np.asarray(c.feature_mean, np.float32), np.asarray(c.feature_std, np.float32)
        views = VIEWS if c.tta else VIEWS[:1]
        cnn = np.zeros((len(arr), len(c.classes)), dtype=np.float64)
        trees = None if self.trees is None else np.zeros_like(cnn)
        with torch.inference_mode():
            for s in range(0, len(arr), batch_size):
                for k, flip in views:
                    part = _view(arr[s : s + batch_size], k, flip)
                    given = None if dies is None else dies[s : s + batch_size]
                    raw = _view_features(arr[s : s + batch_size], given, k, flip)
                    if c.picture_features:
                        die = [False] * len(raw) if given is None else [d is not None for d in given]
                        raw = _with_source(raw, np.asarray(die, dtype=np.float32))
                    logits = self._forward(_planes(part), torch.from_numpy((raw - mean) / std))
                    p = torch.sigmoid(logits) if c.multi_label else torch.softmax(logits, 1)
                    cnn[s : s + batch_size] += p.double().numpy() / len(views)
                    if trees is not None and len(part):
                        trees[s : s + batch_size] += _trees_proba(self.trees, raw, len(c.classes)) / len(
                            views
                        )
        return cnn, trees

    def probabilities(
        self, maps: Sequence[np.ndarray], dies: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(n, classes) probabilities of the members combined (see :meth:`members`, :func:`combined`)."""
        cnn, trees = self.members(maps, dies)
        return combined(cnn, trees, self.config)

    def clauses(
        self, maps: Sequence[np.ndarray], dies: Sequence[np.ndarray | None] | None = None
    ) -> list[str]:
        """``Specialist: Center 93%, Loc 5%.`` per map (the grounding clause)."""
        return clauses_of(self.probabilities(maps, dies), self.config.classes, self.config.multi_label)

    def predict(
        self, maps: Sequence[np.ndarray], dies: Sequence[np.ndarray | None] | None = None
    ) -> list[set[str]]:
        """Label sets: the top class (single-label), or every class at >= 0.5 (multi-label; the top
        class when none is)."""
        return decide(self.probabilities(maps, dies), self.config.classes, self.config.multi_label)

    def save(self, folder: str | Path) -> None:
        """``folder/specialist.safetensors`` + ``folder/specialist.json`` (+ ``trees.skops``)."""
        import skops.io as sio
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS))
        if self.trees is not None:
            (folder / TREES).write_bytes(_stable_skops(sio.dumps(self.trees)))
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Specialist:
        """A saved specialist (weights through safetensors, trees through skops with a fixed list of
        trusted types; never pickle)."""
        import skops.io as sio
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = SpecialistConfig(**json.loads((folder / CONFIG).read_text()))
            state = load_file(str(folder / WEIGHTS))
            has_trees = config.blend > 0 or config.stack is not None
            trees = sio.load(folder / TREES, trusted=TRUSTED_TREE_TYPES) if has_trees else None
        except sio.exceptions.UntrustedTypesFoundException as exc:
            raise WaferSageError(
                folder / TREES, "untrusted type in the specialist's trees", str(exc)[:200]
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise WaferSageError(folder, "cannot load the specialist", str(exc).splitlines()[0]) from None
        if trees is not None and not hasattr(trees, "predict_proba"):
            raise WaferSageError(
                folder / TREES, "the specialist's trees are not a classifier", type(trees).__name__
            )
        net = _net(len(config.feature_mean), len(config.classes), config.width)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise WaferSageError(
                folder, "specialist weights do not match its config", str(exc)[:200]
            ) from None
        return cls(config, net, trees)


def _stable_skops(data: bytes) -> bytes:
    """A skops archive with its object ids (the ``__id__`` of each node and the name of each array
    file) renumbered 0, 1, ... in order of appearance and every entry dated 1980-01-01, so equal
    trees save equal bytes."""
    id_or_file = re.compile(rb'("__id__": )(\d+)|"(\d+)\.npy"')
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        schema = src.read("schema.json")
        ids: dict[bytes, bytes] = {}
        for m in id_or_file.finditer(schema):
            ids.setdefault(m[2] or m[3], str(len(ids)).encode())

        def renumber(m: re.Match[bytes]) -> bytes:
            return m[1] + ids[m[2]] if m[2] else b'"%s.npy"' % ids[m[3]]

        for info in src.infolist():
            name, body = info.filename, src.read(info)
            if name == "schema.json":
                body = id_or_file.sub(renumber, body)
            elif name.endswith(".npy"):
                name = ids[name.removesuffix(".npy").encode()].decode() + ".npy"
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = info.compress_type
            dst.writestr(entry, body)
    return out.getvalue()


def blended(cnn: np.ndarray, trees: np.ndarray | None, blend: float) -> np.ndarray:
    """The CNN's and the trees' probabilities mixed with the trees at weight ``blend``."""
    return cnn if trees is None or blend <= 0 else (1 - blend) * cnn + blend * trees


def stack_inputs(cnn: np.ndarray, trees: np.ndarray, multi_label: bool) -> np.ndarray:
    """The stacker's inputs: both members' log-probabilities side by side (log-odds for a
    multi-label specialist, whose classes are independent)."""
    p = np.clip(np.concatenate([cnn, trees], axis=1), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p) if multi_label else np.log(p)


def stacked(stack: dict[str, Any], cnn: np.ndarray, trees: np.ndarray, multi_label: bool) -> np.ndarray:
    """(n, classes) probabilities of the stacker ``stack`` (see :func:`fit_stack`): a softmax over
    the classes, or one sigmoid per class for a multi-label specialist."""
    z = stack_inputs(cnn, trees, multi_label) @ np.asarray(stack["coef"]).T + np.asarray(stack["intercept"])
    return from_logits(z / float(stack.get("temperature", 1.0)), multi_label)


def from_logits(z: np.ndarray, multi_label: bool) -> np.ndarray:
    """(n, classes) probabilities of logits ``z``: a softmax over the classes, or one sigmoid per
    class for a multi-label specialist."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def combined(cnn: np.ndarray, trees: np.ndarray | None, config: SpecialistConfig) -> np.ndarray:
    """The members' probabilities combined as ``config`` says: stacked, blended or the CNN's."""
    if trees is not None and config.stack is not None:
        return stacked(config.stack, cnn, trees, config.multi_label)
    return blended(cnn, trees, config.blend)


def tempered(probs: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    """``probs`` with their logits divided by ``temperature`` (> 1: less certain; the argmax and
    every 50% decision stay)."""
    if temperature == 1.0:
        return probs
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    z = np.log(p) - np.log1p(-p) if multi_label else np.log(p)
    return from_logits(z / temperature, multi_label)


def fit_stack(
    cnn: np.ndarray,
    trees: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    multi_label: bool,
    seed: int,
    temperature: float = 1.0,
) -> tuple[dict[str, Any], np.ndarray]:
    """A logistic regression from both members' out-of-fold probabilities of the training maps to
    their labels ``y`` ((n, classes) 0/1): multinomial, or one per class for multi-label data. Its
    L2 strength is the one of :data:`STACK_CS` with the best cross-validated log-loss on these rows
    (:data:`STACK_FOLDS` folds, fewer where a class has fewer maps). Returns the stacker (JSON-ready)
    and each row's probabilities from a stacker fitted on the other folds (what the training
    prompts read, so no map's clause comes from a stacker that saw its label), both with their
    logits divided by ``temperature``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

    x = stack_inputs(cnn, trees, multi_label)
    targets = [y[:, c].astype(int) for c in range(y.shape[1])] if multi_label else [y.argmax(1)]
    coef, intercept, cs, out = [], [], [], np.zeros(y.shape, dtype=np.float64)
    for c, t in enumerate(targets):
        counts = np.bincount(t, minlength=2)
        folds = int(min(STACK_FOLDS, counts.min()))
        if folds < 2:
            rare = names[c] if multi_label else names[int(counts.argmin())]
            raise WaferSageError(
                None,
                "combine: stack needs two training maps of each class (with and without each label for "
                "multi-label data); use combine: blend",
                f"{rare}: {counts.min()}",
            )
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        search = GridSearchCV(
            LogisticRegression(max_iter=3000), {"C": list(STACK_CS)}, scoring="neg_log_loss", cv=cv
        ).fit(x, t)
        best = search.best_estimator_
        refit = LogisticRegression(C=best.C, max_iter=3000)
        held = cross_val_predict(refit, x, t, cv=cv, method="predict_proba")
        w, b = best.coef_, best.intercept_
        if len(w) == 1:  # two classes: one decision function, the first class's logit fixed at 0
            w, b = np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
        if multi_label:
            coef.append(w[1]), intercept.append(b[1]), cs.append(best.C)
            out[:, c] = held[:, 1]
        else:
            coef, intercept, cs = list(w), list(b), [best.C]
            out[:] = held
    stack = {
        "coef": [[float(v) for v in row] for row in coef],
        "intercept": [float(v) for v in intercept],
        "C": [float(v) for v in cs],
        "temperature": float(temperature),
    }
    return stack, tempered(out, temperature, multi_label)


def clauses_of(probs: np.ndarray, names: Sequence[str], multi_label: bool = False) -> list[str]:
    """The grounding clause of each row of class probabilities: the top classes, in order (with a
    multi-label specialist, every label it decides on even past ``TOP_K``)."""
    out = []
    for row in probs:
        shown_k = max(TOP_K, int((row >= THRESHOLD).sum())) if multi_label else TOP_K
        order = [int(i) for i in np.argsort(-row)[:shown_k]]
        shown = [i for j, i in enumerate(order) if j == 0 or row[i] >= MIN_SHOWN]
        out.append("Specialist: " + ", ".join(f"{names[i]} {round(100 * row[i])}%" for i in shown) + ".")
    return out


def decide(probs: np.ndarray, names: Sequence[str], multi_label: bool) -> list[set[str]]:
    """Label sets from class probabilities (see :meth:`Specialist.predict`)."""
    out = []
    for row in probs:
        chosen = {names[i] for i in np.flatnonzero(row >= THRESHOLD)} if multi_label else set()
        out.append(chosen or {names[int(row.argmax())]})
    return out


def _trees_proba(trees: Any, raw_features: np.ndarray, n_classes: int) -> np.ndarray:
    """The trees' (n, classes) probabilities; a class the trees never saw in training gets 0."""
    proba = np.asarray(trees.predict_proba(raw_features), dtype=np.float64)
    if proba.shape[1] == n_classes:
        return proba
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(trees.classes_, dtype=int)] = proba
    return out


@dataclass
class _Data:
    """Training arrays: maps, per-view features, targets."""

    arr: np.ndarray
    feats: np.ndarray  # (8 views, n, features), raw
    y: np.ndarray  # (n, classes) 0/1
    used: list[str]
    multi: bool
    die: bool  # features from die-level maps
    pictures: np.ndarray | None = None  # (8 views, n, features) of the square maps, when both sources


def _prepare(
    maps: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    size: int,
    dies: Sequence[np.ndarray | None] | None = None,
    picture_features: bool = False,
) -> _Data:
    arr = _stack(maps, size)
    sets = [[c for c in taxonomy.classes() if c in set(v)] for v in labels]
    if any(not s for s in sets):
        raise WaferSageError(None, "specialist training maps need at least one known label each")
    used = [c for c in taxonomy.classes() if any(c in s for s in sets)]
    if len(used) < 2:
        raise WaferSageError(None, "specialist needs at least two classes", ", ".join(used))
    index = {c: i for i, c in enumerate(used)}
    y = np.zeros((len(sets), len(used)), dtype=np.float32)
    for r, s in enumerate(sets):
        y[r, [index[c] for c in s]] = 1.0
    feats = np.stack([_view_features(arr, dies, k, flip) for k, flip in VIEWS])
    pictures = None
    if picture_features and dies is not None:
        pictures = np.stack([_with_source(_view_features(arr, None, k, flip), 0.0) for k, flip in VIEWS])
        feats = np.stack([_with_source(f, 1.0) for f in feats])
    return _Data(arr, feats, y, used, any(len(s) > 1 for s in sets), dies is not None, pictures)


def _fit_net(d: _Data, rows: np.ndarray, p: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray, int]:
    """The CNN trained on ``rows`` of ``d``: (net, feature mean, feature std, steps)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(int(p["seed"]))
    feats, y = d.feats[:, rows], d.y[rows]
    both = feats if d.pictures is None else np.concatenate([feats, d.pictures[:, rows]], axis=1)
    mean, std = both.mean((0, 1)), both.std((0, 1)) + 1e-6
    x, f = _planes(d.arr[rows]), torch.from_numpy((feats - mean) / std)
    pictures = None if d.pictures is None else torch.from_numpy((d.pictures[:, rows] - mean) / std)
    counts = y.sum(0)
    weight = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1) / len(d.used)), dtype=torch.float32)
    target = torch.from_numpy(y) if d.multi else torch.from_numpy(y.argmax(1))
    net = _net(feats.shape[2], len(d.used), int(p["width"])).to(memory_format=torch.channels_last)
    bs = min(int(p["batch_size"]), len(rows))
    steps_per_epoch = max(1, len(rows) // bs)
    total = int(p["epochs"]) * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), float(p["lr"]), weight_decay=float(p["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, float(p["lr"]), total_steps=total)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    smooth = float(p["label_smoothing"])
    net.train()
    for _ in progress(range(int(p["epochs"])), f"specialist ({len(rows)} maps)", unit="epoch"):
        perm = torch.randperm(len(rows), generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            view = int(torch.randint(len(VIEWS), (1,), generator=gen))
            fv = f[view][idx]
            if pictures is not None:  # each map's features from either source, half and half
                fv = torch.where(torch.rand(len(idx), 1, generator=gen) < 0.5, pictures[view][idx], fv)
            planes = _view_planes(x[idx], *VIEWS[view]).contiguous(memory_format=torch.channels_last)
            logits = net(planes, fv)  # channels-last: 1.5x faster steps on the CPU
            if d.multi:
                tb = target[idx] * (1 - smooth) + smooth / 2
                loss = F.binary_cross_entropy_with_logits(logits, tb, weight=weight)
            else:
                loss = F.cross_entropy(logits, target[idx], weight=weight, label_smoothing=smooth)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net, mean, std, total


def _fit_rows(d: _Data, rows: np.ndarray, p: dict[str, Any]) -> Specialist:
    net, mean, std, steps = _fit_net(d, rows, p)
    y = d.y[rows] if d.multi else d.y[rows].argmax(1)
    x = d.feats[0, rows]
    if d.pictures is not None:
        x, y = np.concatenate([x, d.pictures[0, rows]]), np.concatenate([y, y])
    trees = fit_trees(x, y, int(p["seed"])) if p["trees"] else None
    config = SpecialistConfig(
        size=int(d.arr.shape[1]),
        classes=d.used,
        multi_label=d.multi,
        width=int(p["width"]),
        feature_mean=[float(v) for v in mean],
        feature_std=[float(v) for v in std],
        tta=bool(p["tta"]),
        blend=0.5 if trees is not None else 0.0,
        die_features=d.die,
        picture_features=d.pictures is not None,
        trained={"maps": len(rows), "steps": steps},
    )
    return Specialist(config, net, trees)


def _threads(p: dict[str, Any]) -> None:
    import torch

    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))


def fit(
    maps: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    p: dict[str, Any],
    dies: Sequence[np.ndarray | None] | None = None,
) -> Specialist:
    """Train on canonical ``p['size']``-square maps, the die-level maps behind them (``dies``: the
    features' source; ``None``: the square maps) and their label lists (names from the taxonomy).

    ``p``: ``size, width, epochs, batch_size, lr, weight_decay, label_smoothing, seed, threads, tta,
    trees`` (fit the trees member too; it starts at weight 0.5, see :func:`choose_blend`) and
    ``picture_features`` (with ``dies``: learn from the square maps' features too).
    """
    _threads(p)
    d = _prepare(maps, labels, int(p["size"]), dies, bool(p["picture_features"]))
    return _fit_rows(d, np.arange(len(d.arr)), p)


def choose_blend(
    model: Specialist,
    maps: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    dies: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Set ``model``'s trees weight to the one of :data:`BLENDS` with the best macro-F1 on these
    (selection-split) maps; the macro-F1 of each weight."""
    cnn, trees = model.members(maps, dies)
    if trees is None:
        return {}
    model.config.blend, scores = pick_blend(
        cnn, trees, labels, model.config.classes, model.config.multi_label
    )
    return scores


def pick_blend(
    cnn: np.ndarray,
    trees: np.ndarray,
    labels: Sequence[Sequence[str]],
    names: Sequence[str],
    multi_label: bool,
) -> tuple[float, dict[str, float]]:
    """The weight of :data:`BLENDS` whose blend of these members' probabilities has the best
    macro-F1 against ``labels`` (ties: the one nearest 0.5), and the macro-F1 of each weight."""
    truth = [set(v) for v in labels]
    ones = np.ones((1, len(truth)))
    scores = {
        w: float(stats.macro_f1_metric(truth, decide(blended(cnn, trees, w), names, multi_label))(ones)[0])
        for w in BLENDS
    }
    best = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
    return best, {str(w): round(v, 4) for w, v in scores.items()}


def fit_out_of_fold(
    maps: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    p: dict[str, Any],
    folds: int,
    dies: Sequence[np.ndarray | None] | None = None,
) -> tuple[Specialist, dict[str, np.ndarray]]:
    """:func:`fit` on every map, and each map's probabilities over the specialist's classes from a
    specialist fitted on the other ``folds`` - 1 folds (stratified by the first label where every
    label has ``folds`` maps, seeded; ``p['fold_epochs']`` epochs, ``None``: ``p['epochs']``), by
    member: ``cnn``, ``trees`` (with ``p['trees']``) and, with ``p['combine'] == 'stack'``, ``stack``
    (the cross-fitted stacker's; the shipped specialist gets the stacker fitted on every map, see
    :func:`fit_stack`). The maps are prepared once."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _threads(p)
    d = _prepare(maps, labels, int(p["size"]), dies, bool(p["picture_features"]))
    model = _fit_rows(d, np.arange(len(d.arr)), p)
    strata = d.y.argmax(1)
    stratified = np.unique(strata, return_counts=True)[1].min() >= folds
    split = (StratifiedKFold if stratified else KFold)(
        n_splits=folds, shuffle=True, random_state=int(p["seed"])
    )
    members = {"cnn": np.zeros(d.y.shape, dtype=np.float64)}
    if p["trees"]:
        members["trees"] = np.zeros_like(members["cnn"])
    fold_p = {**p, "epochs": p.get("fold_epochs") or p["epochs"]}
    for train_rows, held in split.split(np.zeros(len(strata)), strata):
        cnn, trees = _fit_rows(d, train_rows, fold_p).members(
            list(d.arr[held]), None if dies is None else [dies[i] for i in held]
        )
        members["cnn"][held] = cnn
        if trees is not None:
            members["trees"][held] = trees
    if p.get("combine") == "stack" and "trees" in members:
        model.config.stack, members["stack"] = fit_stack(
            members["cnn"],
            members["trees"],
            d.y,
            d.used,
            d.multi,
            int(p["seed"]),
            float(p.get("stack_temperature", 1.0)),
        )
    return model, members


class OutOfFold:
    """An :class:`~wafersage.annotation.grounding.Advisor` that answers training maps from their
    out-of-fold probabilities (looked up by :func:`map_key`; the stacker's where the table has
    them, else the members' combined as ``specialist`` combines them) and any other map from
    ``specialist``."""

    def __init__(self, specialist: Specialist, table: pd.DataFrame) -> None:
        self.specialist = specialist
        names, config = specialist.config.classes, specialist.config

        def member(name: str) -> np.ndarray | None:
            cols = [f"{name}:{c}" for c in names]
            return table[cols].to_numpy(np.float64) if cols[0] in table else None

        stack = member("stack")
        probs = stack if stack is not None else combined(member("cnn"), member("trees"), config)
        clauses = clauses_of(probs, names, config.multi_label)
        self.known = dict(zip(table["map_key"], clauses, strict=True))

    def clauses(
        self, maps: Sequence[np.ndarray], dies: Sequence[np.ndarray | None] | None = None
    ) -> list[str]:
        keys = [map_key(m) for m in maps]
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        dies_todo = None if dies is None else [dies[i] for i in todo]
        fresh = (
            dict(zip(todo, self.specialist.clauses([maps[i] for i in todo], dies_todo), strict=True))
            if todo
            else {}
        )
        return [fresh[i] if i in fresh else self.known[k] for i, k in enumerate(keys)]


def oof_table(
    wafers: Sequence[str], maps: Sequence[np.ndarray], names: Sequence[str], members: dict[str, np.ndarray]
) -> pd.DataFrame:
    """The out-of-fold file's table: ``wafer_id``, ``map_key`` and a ``<member>:<class>``
    probability column a member (``cnn``, ``trees``, ``stack``) and class."""
    cols: dict[str, Any] = {"wafer_id": [str(w) for w in wafers], "map_key": [map_key(m) for m in maps]}
    for member, probs in members.items():
        cols |= {f"{member}:{c}": probs[:, i] for i, c in enumerate(names)}
    return pd.DataFrame(cols)


def grounder_of(model_folder: str | Path, info: dict[str, Any], oof: str | Path | None = None) -> Grounder:
    """The :class:`Grounder` a model folder was trained with (its ``wafersage.json`` is ``info``);
    with ``oof`` (the specialist stage's out-of-fold file), training maps get their out-of-fold
    clauses."""
    mode, rule_guess = check_mode(info.get("grounding")), bool(info.get("rule_guess", True))
    if not info.get("specialist"):
        return Grounder(mode, rule_guess=rule_guess)
    advisor: Any = Specialist.load(Path(model_folder) / FOLDER)
    if oof is not None:
        advisor = OutOfFold(
            advisor, read_parquet(oof, "specialist out-of-fold file", "run `dvc repro specialist`")
        )
    return Grounder(mode, advisor, rule_guess)


def ship(src_folder: str | Path, dst_folder: str | Path) -> None:
    """Copy the specialist of model folder ``src_folder`` (if any) into ``dst_folder``."""
    src = Path(src_folder) / FOLDER
    if (src / CONFIG).exists():
        shutil.copytree(src, Path(dst_folder) / FOLDER, dirs_exist_ok=True)
