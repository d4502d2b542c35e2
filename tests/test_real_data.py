"""The real WM-811K / MixedWM38 pickles in ../shared/data load through the restricted loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wafersage.wafers.loaders import load
from wafersage.wafers.safe_pickle import safe_load
from wafersage.wafers.taxonomy import MIXEDWM38_ORDER, primary_label

pytestmark = pytest.mark.realdata


def test_wm811k_processed_val(shared_data: Path) -> None:
    df = load("wm811k-processed", shared_data / "wm811k" / "val_data.pkl.xz")
    assert len(df) == 12_450
    assert df["wafer_id"].is_unique and df["wafer_id"][123] == "val_data-000123"
    counts = df["labels"].map(primary_label).value_counts().to_dict()
    assert counts == {
        "none": 7_346,
        "Edge-Ring": 1_936,
        "Edge-Loc": 1_038,
        "Center": 859,
        "Loc": 718,
        "Scratch": 239,
        "Random": 173,
        "Donut": 111,
        "Near-full": 30,
    }
    assert (df["rows"] >= 4).all() and df["rows"].nunique() > 10  # native die-grid sizes


def test_mixedwm38_processed_train_1(shared_data: Path) -> None:
    path = shared_data / "mixedwm38" / "train_1_split.pkl.xz"
    df = load("mixedwm38-processed", path)
    assert len(df) == 381
    assert (df["rows"] == 52).all() and (df["cols"] == 52).all()
    n_labels = df["labels"].map(len)
    assert n_labels.max() == 4 and (n_labels >= 2).sum() > 200
    assert "Center+Edge-Loc+Scratch" in set(df["labels"].map(primary_label))
    # the one-hot order agrees with the per-class boolean columns of the same file
    raw = safe_load(path)
    flags = raw[list(MIXEDWM38_ORDER)].to_numpy()
    assert np.array_equal(np.stack([np.ravel(v) for v in raw["label"]]).astype(bool), flags)
    assert [sorted(x) for x in df["labels"]] == [
        sorted(np.array(MIXEDWM38_ORDER)[row].tolist() or ["none"]) for row in flags
    ]
