"""Loaders: every source into the canonical raw table, and a one-line error for each bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wafersage.errors import WaferSageError
from wafersage.wafers.loaders import SOURCES, load
from wafersage.wafers.rawtable import COLUMNS, decode_map, write_raw

CANON = np.array(
    [
        [0, 1, 1, 1, 0],
        [1, 2, 1, 1, 1],
        [1, 1, 2, 2, 1],
        [0, 1, 1, 1, 0],
    ],
    dtype=np.uint8,
)
PROCESSED = np.array([0, 128, 255], dtype=np.uint8)[CANON]


def _one_line(err: pytest.ExceptionInfo[WaferSageError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _processed_wm811k(path: Path, maps: list, types: list) -> Path:
    df = pd.DataFrame({"waferMap": pd.Series(maps, dtype=object), "failureType": types})
    df["failureCode"] = 0
    df.to_pickle(path)
    return path


def _processed_mixed(path: Path, maps: list, onehots: list) -> Path:
    df = pd.DataFrame({"waferMap": pd.Series(maps, dtype=object), "label": pd.Series(onehots, dtype=object)})
    df.to_pickle(path)
    return path


def _npz(path: Path, maps: np.ndarray, onehot: np.ndarray) -> Path:
    np.savez_compressed(path, maps, onehot)
    return path


def _png_folder(folder: Path, images: dict[str, np.ndarray], csv: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, arr in images.items():
        Image.fromarray(arr).save(folder / name)
    (folder / "labels.csv").write_text(csv)
    return folder


# --- happy paths -----------------------------------------------------------------------------


def test_wm811k_lswmd(make_lswmd) -> None:
    path = make_lswmd(
        [CANON, CANON.copy(), CANON, CANON],
        ["Center", "none", None, "Edge-Loc"],
        lots=["lot1", "lot1", "lot2", "lot1"],
        index=[1.0, 2.0, 1.0, 1.0],  # lot1-1 twice: made unique
    )
    df = load("wm811k", path)
    assert list(df.columns) == list(COLUMNS)
    assert df["wafer_id"].tolist() == ["lot1-1", "lot1-2", "lot2-1", "lot1-1#2"]
    assert df["lot_id"].tolist() == ["lot1", "lot1", "lot2", "lot1"]
    assert df["labels"].tolist() == [["Center"], ["none"], [], ["Edge-Loc"]]
    assert (df["source"] == "wm811k").all()
    assert np.array_equal(decode_map(df["map"][0], df["rows"][0], df["cols"][0]), CANON)


def test_wm811k_processed_file_and_folder(tmp_path: Path) -> None:
    _processed_wm811k(tmp_path / "a.pkl.xz", [PROCESSED, PROCESSED], ["None", "Near-full"])
    _processed_wm811k(tmp_path / "b.pkl.xz", [PROCESSED], [None])
    one = load("wm811k-processed", tmp_path / "a.pkl.xz")
    assert one["wafer_id"].tolist() == ["a-000000", "a-000001"]
    assert one["labels"].tolist() == [["none"], ["Near-full"]]
    assert one["lot_id"].isna().all()
    assert np.array_equal(decode_map(one["map"][1], 4, 5), CANON)
    both = load("wm811k-processed", tmp_path)
    assert both["wafer_id"].tolist() == ["a-000000", "a-000001", "b-000000"]
    assert both["labels"].tolist()[-1] == []


def test_wm811k_processed_categorical(tmp_path: Path) -> None:
    path = _processed_wm811k(tmp_path / "c.pkl", [PROCESSED] * 2, pd.Categorical(["Loc", "None"]))
    assert load("wm811k-processed", path)["labels"].tolist() == [["Loc"], ["none"]]


def test_mixedwm38_npz(tmp_path: Path) -> None:
    maps = np.stack([CANON, CANON])
    maps[1, 1, 1] = 3  # noise die counts as fail
    onehot = np.zeros((2, 8), np.int64)
    onehot[0, [0, 6]] = 1  # Center + Scratch
    df = load("mixedwm38", _npz(tmp_path / "Wafer_Map_Datasets.npz", maps, onehot))
    assert df["wafer_id"].tolist() == ["Wafer_Map_Datasets-000000", "Wafer_Map_Datasets-000001"]
    assert df["labels"].tolist() == [["Center", "Scratch"], ["none"]]
    assert decode_map(df["map"][1], 4, 5)[1, 1] == 2


def test_mixedwm38_processed(tmp_path: Path) -> None:
    hots = [[0, 0, 0, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0, 0, 0], [0] * 8]
    df = load("mixedwm38-processed", _processed_mixed(tmp_path / "m.pkl.xz", [PROCESSED] * 3, hots))
    assert df["labels"].tolist() == [["Random"], ["Center", "Donut"], ["none"]]
    assert (df["source"] == "mixedwm38-processed").all()


def test_png_folder(tmp_path: Path) -> None:
    gray_rgb = np.repeat(PROCESSED[..., None], 3, axis=2)
    folder = _png_folder(
        tmp_path / "pngs",
        {"w1.png": CANON, "w2.png": PROCESSED, "w3.png": gray_rgb},
        "file,labels,lot_id\nw1.png,Center;Scratch,L7\nw2.png,,\nw3.png,none,L7\n",
    )
    df = load("png-folder", folder)
    assert df["wafer_id"].tolist() == ["w1", "w2", "w3"]
    assert df["labels"].tolist() == [["Center", "Scratch"], [], ["none"]]
    assert df["lot_id"].isna().tolist() == [False, True, False] and df["lot_id"][0] == "L7"
    for i in range(3):
        assert np.array_equal(decode_map(df["map"][i], 4, 5), CANON)
    assert load("png-folder", folder / "labels.csv")["wafer_id"].tolist() == ["w1", "w2", "w3"]


def test_written_parquet_round_trip(tmp_path: Path, make_lswmd) -> None:
    df = load("wm811k", make_lswmd([CANON], ["Donut"]))
    write_raw(df, tmp_path / "raw.parquet")
    assert pd.read_parquet(tmp_path / "raw.parquet")["wafer_id"].tolist() == ["lot1-1"]


# --- bad input: one line naming file, row and rule -------------------------------------------


def test_unknown_and_synthetic_source(tmp_path: Path) -> None:
    assert "synthetic" in SOURCES
    with pytest.raises(WaferSageError, match="unknown source"):
        load("wm811k-raw", tmp_path)
    with pytest.raises(WaferSageError, match="synthetic"):
        load("synthetic", tmp_path)


@pytest.mark.parametrize("source", [s for s in SOURCES if s != "synthetic"])
def test_missing_file(tmp_path: Path, source: str) -> None:
    with pytest.raises(WaferSageError, match="file not found") as err:
        load(source, tmp_path / "missing.pkl")
    assert "missing.pkl" in _one_line(err)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = _processed_wm811k(tmp_path / "t.pkl", [PROCESSED] * 50, ["None"] * 50)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WaferSageError, match="not a readable pickle") as err:
        load("wm811k-processed", path)
    assert "t.pkl" in _one_line(err)


def test_pickle_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(pd.DataFrame({"waferMap": [Evil()], "failureType": ["None"]})))
    with pytest.raises(WaferSageError, match="forbidden global") as err:
        load("wm811k-processed", path)
    assert "system" in _one_line(err)
    assert not marker.exists()


def test_pickle_not_a_dataframe(tmp_path: Path) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(WaferSageError, match="not a pandas DataFrame"):
        load("mixedwm38-processed", path)


def test_pickle_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "cols.pkl"
    pd.DataFrame({"waferMap": pd.Series([PROCESSED], dtype=object)}).to_pickle(path)
    with pytest.raises(WaferSageError, match="missing columns") as err:
        load("wm811k-processed", path)
    assert "failureType" in _one_line(err)


def test_unknown_label_processed(tmp_path: Path) -> None:
    path = _processed_wm811k(tmp_path / "l.pkl", [PROCESSED] * 2, ["None", "Blob"])
    with pytest.raises(WaferSageError, match="row 1: unknown label") as err:
        load("wm811k-processed", path)
    assert "'Blob'" in _one_line(err)


def test_unknown_label_lswmd(make_lswmd) -> None:
    with pytest.raises(WaferSageError, match="row 0: unknown label"):
        load("wm811k", make_lswmd([CANON], ["Smiley"]))


def test_value_outside_encoding(tmp_path: Path) -> None:
    bad = PROCESSED.copy()
    bad[1, 1] = 1  # 0/1/2 value in a 0/128/255 file
    path = _processed_wm811k(tmp_path / "v.pkl", [PROCESSED, bad], ["None", "None"])
    with pytest.raises(WaferSageError, match="row 1: map value outside encoding") as err:
        load("wm811k-processed", path)
    assert "value 1" in _one_line(err)


def test_value_outside_encoding_npz(tmp_path: Path) -> None:
    maps = np.stack([CANON])
    maps[0, 1, 1] = 4
    with pytest.raises(WaferSageError, match="row 0: map value outside encoding"):
        load("mixedwm38", _npz(tmp_path / "v.npz", maps, np.zeros((1, 8), np.int64)))


@pytest.mark.parametrize(
    ("bad_map", "rule"),
    [
        (np.zeros((4, 5), np.uint8), "map is empty"),
        ([[0, 128, 128, 0], [128, 255], [0, 128, 128, 0], [128] * 4], "ragged"),
        (np.where(PROCESSED == 255, np.nan, PROCESSED.astype(float)), "NaN"),
        (np.full((1, 100_000), 128, np.uint8), "dimensions out of range"),
        (np.full(20, 128, np.uint8), "must be 2-D"),
        (None, "not numeric"),
    ],
    ids=["empty", "ragged", "nan", "absurd", "1-d", "none"],
)
def test_bad_maps(tmp_path: Path, bad_map, rule: str) -> None:
    path = _processed_wm811k(tmp_path / "b.pkl", [PROCESSED, bad_map], ["None", "Loc"])
    with pytest.raises(WaferSageError, match=rule) as err:
        load("wm811k-processed", path)
    assert "b.pkl: row 1:" in _one_line(err)


def test_lswmd_all_off_wafer(make_lswmd) -> None:
    with pytest.raises(WaferSageError, match="row 1: map is empty"):
        load("wm811k", make_lswmd([CANON, np.zeros_like(CANON)], ["none", "none"]))


def test_bad_onehot(tmp_path: Path) -> None:
    path = _processed_mixed(tmp_path / "h.pkl", [PROCESSED] * 2, [[0] * 8, [0, 2, 0, 0, 0, 0, 0, 0]])
    with pytest.raises(WaferSageError, match="row 1: label one-hot values must be 0/1"):
        load("mixedwm38-processed", path)
    path = _processed_mixed(tmp_path / "s.pkl", [PROCESSED] * 2, [[0] * 8, [0] * 7])
    with pytest.raises(WaferSageError, match="row 1: label is not an 8-long one-hot"):
        load("mixedwm38-processed", path)


def test_corrupt_and_truncated_npz(tmp_path: Path) -> None:
    path = _npz(tmp_path / "c.npz", np.stack([CANON] * 20), np.zeros((20, 8), np.int64))
    data = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 garbage")
    for name in ("t.npz", "g.npz"):
        with pytest.raises(WaferSageError, match="not a readable .npz") as err:
            load("mixedwm38", tmp_path / name)
        assert name in _one_line(err)


def test_npz_shapes(tmp_path: Path) -> None:
    with pytest.raises(WaferSageError, match="one label row per map"):
        load("mixedwm38", _npz(tmp_path / "n.npz", np.stack([CANON] * 2), np.zeros((3, 8), np.int64)))
    np.savez(tmp_path / "k.npz", maps=np.stack([CANON]))
    with pytest.raises(WaferSageError, match="missing arrays"):
        load("mixedwm38", tmp_path / "k.npz")


def test_png_duplicate_ids(tmp_path: Path) -> None:
    folder = _png_folder(tmp_path / "p", {"a.png": CANON}, "file,labels\na.png,Loc\na.png,Loc\n")
    with pytest.raises(WaferSageError, match="row 1: duplicate wafer_id") as err:
        load("png-folder", folder)
    assert "labels.csv" in _one_line(err)


def test_png_bad_values_names_file(tmp_path: Path) -> None:
    folder = _png_folder(
        tmp_path / "p", {"ok.png": CANON, "odd.png": CANON * 50}, "file,labels\nok.png,\nodd.png,\n"
    )
    with pytest.raises(WaferSageError, match="row 1: PNG values match no encoding") as err:
        load("png-folder", folder)
    assert "odd.png" in _one_line(err)


def test_png_problems(tmp_path: Path) -> None:
    folder = _png_folder(tmp_path / "p", {"a.png": CANON}, "file,labels\na.png,Blob\n")
    with pytest.raises(WaferSageError, match="labels.csv: row 0: unknown label"):
        load("png-folder", folder)
    (folder / "labels.csv").write_text("file,labels\nmissing.png,Loc\n")
    with pytest.raises(WaferSageError, match="missing.png: row 0: file not found"):
        load("png-folder", folder)
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "labels.csv").write_text("file,labels\nbad.png,Loc\n")
    with pytest.raises(WaferSageError, match="bad.png: row 0: not a readable PNG"):
        load("png-folder", folder)
    (folder / "labels.csv").write_text("name,labels\na.png,Loc\n")
    with pytest.raises(WaferSageError, match="missing columns"):
        load("png-folder", folder)
    (folder / "labels.csv").write_text("file,labels\n")
    with pytest.raises(WaferSageError, match="no wafers"):
        load("png-folder", folder)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8) + np.uint8([10, 20, 30])).save(folder / "c.png")
    (folder / "labels.csv").write_text("file,labels\nc.png,\n")
    with pytest.raises(WaferSageError, match="PNG must be grayscale"):
        load("png-folder", folder)
    (folder / "labels.csv").unlink()
    with pytest.raises(WaferSageError, match="labels.csv: file not found"):
        load("png-folder", folder)
