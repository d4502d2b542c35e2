"""The one split of the wafers, decided once, right after the raw gate, and obeyed by every stage:
the vision encoder pretrains on ``train`` (its probe scores on ``val``), SFT learns on ``train``,
GSPO on ``rl``, every selection uses ``val``; the cleaner fits and flags on all but ``test``, whose
labels stay as given; the VQA tables follow it.

Whole lots go to one split (a wafer without a lot is its own group). The assignment reads wafer
and lot ids and the seed, never a label: stratifying by label would let a change to a test wafer's
label move other wafers between splits, and so reach the trained models. The stage reports the
labels per split instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.config import SplitParams
from wafersage.errors import WaferSageError, read_parquet

#: ``train``: SFT, the encoder, the specialist; ``rl``: what GSPO learns on (SFT never sees it);
#: ``val``: selection (early stopping, the specialist's blend, the judge pool, promotion);
#: ``test``: scored only.
SPLITS: tuple[str, ...] = ("train", "rl", "val", "test")
#: The splits whose labels the cleaner may fit and flag on; ``test`` labels stay as given.
TRAINABLE: tuple[str, ...] = ("train", "rl", "val")


def assign_splits(
    wafer_ids: list[str], lot_ids: list[str | None], ratios: dict[str, float], seed: int
) -> dict[str, str]:
    """wafer id -> split; whole lots go to one split (wafers without a lot are their own group).
    Groups are shuffled with ``seed`` and each goes to the split furthest below its target; the
    first groups seed each non-empty split, so small sets still get val and test."""
    groups: dict[str, list[str]] = {}
    for w, lot in zip(wafer_ids, lot_ids, strict=True):
        groups.setdefault(f"lot:{lot}" if lot else f"wafer:{w}", []).append(w)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    total = sum(ratios.values())
    target = {s: ratios.get(s, 0.0) / total * len(wafer_ids) for s in SPLITS}
    have = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    for i, k in enumerate(keys):
        empty = [s for s in SPLITS if have[s] == 0 and target[s] > 0]
        split = empty[0] if empty and i < len(SPLITS) else max(SPLITS, key=lambda s: target[s] - have[s])
        for w in groups[k]:
            out[w] = split
        have[split] += len(groups[k])
    return out


def split_table(raw: pd.DataFrame, ratios: dict[str, float], seed: int) -> pd.DataFrame:
    """``wafer_id, lot_id, split`` for every wafer of a raw table."""
    lots = [None if pd.isna(v) or v == "" else str(v) for v in raw["lot_id"]] if "lot_id" in raw else None
    ids = raw["wafer_id"].astype(str).tolist()
    lot_ids = lots if lots is not None else [None] * len(ids)
    split_of = assign_splits(ids, lot_ids, ratios, seed)
    return pd.DataFrame({"wafer_id": ids, "lot_id": lot_ids, "split": [split_of[w] for w in ids]})


def read_splits(path: str | Path) -> pd.Series:
    """The split stage's table as a Series wafer id -> split, checked (one-line errors)."""
    df = read_parquet(path, "wafer splits", "run the split stage first (dvc repro split)")
    for col in ("wafer_id", "split"):
        if col not in df:
            raise WaferSageError(path, "missing column", col)
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise WaferSageError(path, "unknown split", repr(df["split"].iloc[i]), row=i)
    dup = df["wafer_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise WaferSageError(path, "wafer in more than one row", str(df["wafer_id"].iloc[i]), row=i)
    return pd.Series(df["split"].astype(str).to_numpy(), index=df["wafer_id"].astype(str), name="split")


def splits_of(splits: pd.Series, wafer_ids: pd.Series | list[str], path: str | Path) -> np.ndarray:
    """The split of each wafer id; a wafer the split table does not know is a one-line error."""
    ids = pd.Index(pd.Series(wafer_ids).astype(str))
    missing = ~ids.isin(splits.index)
    if missing.any():
        raise WaferSageError(path, "wafer has no split (re-run the split stage)", str(ids[missing][0]))
    return splits.reindex(ids).to_numpy()


def wafer_splits(raw: pd.DataFrame, path: str | Path | None) -> np.ndarray:
    """The split of each row of ``raw``: from the split stage's table at ``path``, or (``None``, for
    library use) as that stage decides it at the default params."""
    if path is None:
        d = SplitParams()
        return split_table(raw, {s: getattr(d, s) for s in SPLITS}, d.seed)["split"].to_numpy()
    return splits_of(read_splits(path), raw["wafer_id"], path)
