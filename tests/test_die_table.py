"""Source ``die-table``: die-level tables (one row a die) into the canonical raw table, and a one-line
error naming the file, the row and the rule for each bad input."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import DIE_TABLE_EXAMPLE, DIE_TABLE_EXAMPLE_CONFIG, die_table_example

from wafersage.cli import ERROR_EXIT, main
from wafersage.errors import WaferSageError
from wafersage.stages import ingest
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.loaders import DieTableOptions, Limits, load
from wafersage.wafers.rawtable import decode_map, read_raw
from wafersage.wafers.synthetic import generate

CELL = {".": OFF, "o": PASS, "x": FAIL}
#: wafer -> (lot, first x, first y, label cells (alternating), map: . off, o pass, x fail).
WAFERS: dict[str, tuple[str, int, int, tuple[str, ...], tuple[str, ...]]] = {
    "W1": ("L1", 0, 0, ("Center",), (".ooo.", "oxooo", "ooxxo", ".ooo.")),
    "W2": (
        "L1",
        -3,
        -2,
        ("Loc+Edge-Ring", " edge-ring ; loc"),  # one set, two spellings
        (".oo.", "oooo", "oxxo", "ooox", "oooo", ".oo."),
    ),
    "W3": ("L2", 10, 5, ("",), ("oooo", "o..o", "o..o", "oxxo")),  # unlabelled, a hole inside
    "W4": ("", 0, 0, ("none",), (".oo.", "oooo", "oooo", "oooo", ".oo.")),  # no lot
}
EXPECTED_LABELS = {"W1": ["Center"], "W2": ["Edge-Ring", "Loc"], "W3": [], "W4": ["none"]}
#: The bins of fail dies, in turn (every bin but 1 fails by default).
FAIL_BINS = (2, 0, 9, 255)


def _maps() -> dict[str, np.ndarray]:
    return {
        w: np.array([[CELL[c] for c in line] for line in spec[4]], np.uint8) for w, spec in WAFERS.items()
    }


def _dies(wafers: tuple[str, ...] = tuple(WAFERS)) -> pd.DataFrame:
    """The die table of ``wafers``, their rows interleaved (wafers still first seen in order)."""
    per_wafer = []
    for w in wafers:
        lot, x0, y0, labels, _ = WAFERS[w]
        m = _maps()[w]
        y, x = np.nonzero(m != OFF)
        bins = np.ones(len(y), np.int64)
        fail = m[y, x] == FAIL
        bins[fail] = np.resize(FAIL_BINS, int(fail.sum()))  # the fail dies' bins in turn
        cells = [labels[k % len(labels)] for k in range(len(y))]
        per_wafer.append(list(zip([lot] * len(y), [w] * len(y), x + x0, y + y0, bins, cells, strict=True)))
    longest = max(len(r) for r in per_wafer)
    rows = [r[i] for i in range(longest) for r in per_wafer if i < len(r)]
    return pd.DataFrame(rows, columns=["lot_id", "wafer_id", "x", "y", "bin", "label"])


def _write(path: Path, df: pd.DataFrame) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def _csv(tmp_path: Path, text: str, name: str = "dies.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _assert_expected(df: pd.DataFrame, labels: dict[str, list[str]] = EXPECTED_LABELS) -> None:
    assert df["wafer_id"].tolist() == ["W1", "W2", "W3", "W4"]
    assert df["lot_id"].fillna("<null>").tolist() == ["L1", "L1", "L2", "<null>"]
    assert df["source"].tolist() == ["die-table"] * 4
    assert df["labels"].tolist() == [labels[w] for w in WAFERS]
    assert df["rows"].tolist() == [4, 6, 4, 5] and df["cols"].tolist() == [5, 4, 4, 4]
    for rec in df.itertuples():
        assert decode_map(rec.map, rec.rows, rec.cols).tolist() == _maps()[rec.wafer_id].tolist(), (
            rec.wafer_id
        )


def _error(path: Path, options: DieTableOptions | None = None, limits: Limits | None = None) -> str:
    with pytest.raises(WaferSageError) as err:
        load("die-table", path, limits, options)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- happy paths -----------------------------------------------------------------------------


def test_csv_loads_to_the_expected_maps(tmp_path: Path) -> None:
    table = _dies()
    assert table["x"].min() < 0 and table["y"].min() < 0  # W2's negative coordinates
    _assert_expected(load("die-table", _write(tmp_path / "dies.csv", table)))


def test_parquet_loads_to_the_same_maps(tmp_path: Path) -> None:
    _assert_expected(load("die-table", _write(tmp_path / "dies.parquet", _dies())))


def test_folder_of_two_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", _dies(("W1", "W2")))
    _write(tmp_path / "b.parquet", _dies(("W3", "W4")))
    (tmp_path / "notes.txt").write_text("not a die table")
    _assert_expected(load("die-table", tmp_path))


def test_labels_file(tmp_path: Path) -> None:
    folder = tmp_path / "dies"
    folder.mkdir()
    _write(folder / "dies.csv", _dies().drop(columns="label"))
    labels = _csv(folder, "wafer_id,labels\nW4,none\nW1,center\nW2,Loc+Edge-Ring\n", "labels.csv")
    # W3 is not in the file: unlabelled; the labels file inside the folder is not read as dies
    _assert_expected(load("die-table", folder, die_table=DieTableOptions(labels_file=labels)))


def test_label_column_name_and_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "dies.csv", _dies().rename(columns={"label": "defect"}))
    _assert_expected(load("die-table", path, die_table=DieTableOptions(label_column="defect")))
    unlabelled = {w: [] for w in WAFERS}
    _assert_expected(load("die-table", path), unlabelled)  # no column 'label': unlabelled
    _assert_expected(load("die-table", path, die_table=DieTableOptions(label_column=None)), unlabelled)


def test_pass_bins(tmp_path: Path) -> None:
    path = _csv(tmp_path, "lot_id,wafer_id,x,y,bin\nL,W,0,0,1\nL,W,3,0,3\nL,W,0,3,7\nL,W,3,3,0\n")
    df = load("die-table", path, die_table=DieTableOptions(pass_bins=(1, 3)))
    assert decode_map(df["map"][0], 4, 4).tolist() == [
        [PASS, OFF, OFF, PASS],
        [OFF, OFF, OFF, OFF],
        [OFF, OFF, OFF, OFF],
        [FAIL, OFF, OFF, FAIL],
    ]


def test_example_file_is_the_synthetic_maps() -> None:
    text = die_table_example().to_csv(index=False)
    assert DIE_TABLE_EXAMPLE.read_text() == text, "rewrite it (see factories.DIE_TABLE_EXAMPLE)"
    assert len(text) < 50_000
    raw = generate(DIE_TABLE_EXAMPLE_CONFIG)
    df = load("die-table", DIE_TABLE_EXAMPLE)
    assert df["wafer_id"].tolist() == raw["wafer_id"].tolist()
    assert df["lot_id"].tolist() == raw["lot_id"].tolist()
    assert df["labels"].tolist() == raw["labels"].map(list).tolist()
    assert sum(len(v) > 1 for v in df["labels"]) == 2
    for ours, theirs in zip(df.itertuples(), raw.itertuples(), strict=True):
        m = decode_map(theirs.map, theirs.rows, theirs.cols)
        on_rows, on_cols = np.flatnonzero((m != OFF).any(axis=1)), np.flatnonzero((m != OFF).any(axis=0))
        box = m[on_rows[0] : on_rows[-1] + 1, on_cols[0] : on_cols[-1] + 1]
        assert decode_map(ours.map, ours.rows, ours.cols).tolist() == box.tolist()


# --- bad input: one line naming file, row and rule -------------------------------------------

HEAD = "lot_id,wafer_id,x,y,bin,label\n"
GOOD = "L1,W1,0,0,1,Loc\nL1,W1,3,3,2,Loc\n"


def test_missing_columns(tmp_path: Path) -> None:
    msg = _error(_csv(tmp_path, "lot_id,wafer_id,x,y\nL1,W1,0,0\n"))
    assert msg.endswith("dies.csv: missing columns (bin)")


@pytest.mark.parametrize(
    ("cell", "shown"),
    [("1.5", "'1.5'"), ("a", "'a'"), ("", "''"), ("nan", "'nan'")],
    ids=["fraction", "text", "empty", "nan"],
)
@pytest.mark.parametrize("column", ["x", "y", "bin"])
def test_non_integer_cell(tmp_path: Path, column: str, cell: str, shown: str) -> None:
    row = {"x": "3", "y": "3", "bin": "2"} | {column: cell}
    path = _csv(tmp_path, HEAD + GOOD + f"L1,W1,{row['x']},{row['y']},{row['bin']},Loc\n")
    assert _error(path).endswith(f"dies.csv: row 2: {column} is not an integer ({shown})")


def test_parquet_nan_and_fraction(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"lot_id": "L1", "wafer_id": "W1", "x": [0.0, 3.0, np.nan], "y": [0, 3, 1], "bin": 1}
    )
    assert _error(_write(tmp_path / "d.parquet", table)).endswith(
        "d.parquet: row 2: x is not an integer (nan)"
    )
    table["x"] = [0.0, 3.0, 2.5]
    assert _error(_write(tmp_path / "d.parquet", table)).endswith(
        "d.parquet: row 2: x is not an integer (2.5)"
    )
    table["x"] = [0.0, 3.0, 2.0]  # integral floats are integers
    assert load("die-table", _write(tmp_path / "d.parquet", table))["cols"].tolist() == [4]


def test_grid_over_max_die_side_is_refused_before_allocating(tmp_path: Path) -> None:
    huge = HEAD + GOOD + "L2,W2,0,0,1,\nL2,W2,-1000000000000,1000000000000,1,\n"
    assert _error(_csv(tmp_path, huge)).endswith(
        "dies.csv: row 2: map dimensions out of range "
        "(wafer 'W2': 1000000000001x1000000000001 dies, sides must be 4..512)"
    )
    wide = HEAD + "L1,W1,-4,0,1,\nL1,W1,4,3,1,\n"  # 9 columns
    assert _error(_csv(tmp_path, wide), limits=Limits(max_die_side=8)).endswith(
        "row 0: map dimensions out of range (wafer 'W1': 4x9 dies, sides must be 4..8)"
    )
    assert load("die-table", tmp_path / "dies.csv", Limits(max_die_side=9))["cols"].tolist() == [9]


def test_duplicate_die_names_both_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEAD + GOOD + "L1,W2,0,0,1,\nL1,W2,3,3,1,\nL1,W1,3,3,1,Loc\n")
    assert _error(path).endswith("dies.csv: row 4: duplicate die (wafer 'W1': x=3 y=3 also at row 1)")


def test_duplicate_die_across_files_names_the_other_file(tmp_path: Path) -> None:
    _csv(tmp_path, HEAD + GOOD, "a.csv")
    _csv(tmp_path, HEAD + "L1,W1,1,1,1,Loc\nL1,W1,0,0,1,Loc\n", "b.csv")
    assert _error(tmp_path).endswith("b.csv: row 1: duplicate die (wafer 'W1': x=0 y=0 also at a.csv row 0)")


def test_wafer_under_two_lots(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEAD + GOOD + "L2,W1,1,1,1,Loc\n")
    assert _error(path).endswith(
        "dies.csv: row 2: wafer_id under two lot_ids (wafer 'W1': 'L2' here, 'L1' at row 0)"
    )


def test_wafer_with_different_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEAD + GOOD + "L1,W1,1,1,1,Loc+Center\n")
    assert _error(path).endswith(
        "dies.csv: row 2: wafer has different labels on different dies "
        "(wafer 'W1': 'Loc+Center' here, 'Loc' at row 0)"
    )
    path = _csv(tmp_path, HEAD + GOOD + "L1,W1,1,1,1,\n")  # an empty cell on a labelled wafer
    assert "row 2: wafer has different labels on different dies" in _error(path)


def test_unknown_label(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEAD + GOOD + "L1,W2,0,0,1,Center+Blob\nL1,W2,3,3,1,Center+Blob\n")
    assert _error(path).endswith("dies.csv: row 2: unknown label ('Blob')")
    path = _csv(tmp_path, HEAD + GOOD + "L1,W2,0,0,1,none;Loc\nL1,W2,3,3,1,none;Loc\n")
    assert "row 2: label 'none' combined with a defect" in _error(path)


def test_labels_file_problems(tmp_path: Path) -> None:
    path = _csv(tmp_path, "lot_id,wafer_id,x,y,bin\nL1,W1,0,0,1\nL1,W1,3,3,2\n")
    labels = tmp_path / "labels.csv"
    options = DieTableOptions(labels_file=labels)
    labels.write_text("wafer_id,labels\nW1,Loc\nW9,Center\n")
    assert _error(path, options).endswith("labels.csv: row 1: wafer not in the die table ('W9')")
    labels.write_text("wafer_id,labels\nW1,Loc\nW1,Center\n")
    assert _error(path, options).endswith("labels.csv: row 1: duplicate wafer_id ('W1')")
    labels.write_text("wafer_id,labels\nW1,Loc+Blob\n")
    assert _error(path, options).endswith("labels.csv: row 0: unknown label ('Blob')")
    labels.write_text("wafer,labels\nW1,Loc\n")
    assert _error(path, options).endswith("labels.csv: missing columns (wafer_id)")
    labels.unlink()
    assert _error(path, options).endswith("labels.csv: file not found (ingest.die_table.labels_file)")
    with_column = _csv(tmp_path, HEAD + GOOD, "labelled.csv")
    assert "labelled.csv: labels given twice" in _error(with_column, options)


def test_other_bad_tables(tmp_path: Path) -> None:
    assert _error(_csv(tmp_path, HEAD + GOOD + "L1, ,1,1,1,Loc\n")).endswith(
        "dies.csv: row 2: missing wafer_id"
    )
    assert _error(_csv(tmp_path, HEAD)).endswith("dies.csv: no wafers")
    assert _error(_csv(tmp_path, HEAD + GOOD, "dies.txt")).endswith(
        "dies.txt: a die table must be .csv or .parquet (.txt)"
    )
    assert "dies.parquet: not a readable Parquet file" in _error(_csv(tmp_path, HEAD + GOOD, "dies.parquet"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(empty).endswith("empty: no die tables (*.csv, *.parquet) in folder")
    small = HEAD + "L1,W1,0,0,1,\nL1,W1,2,2,1,\n"  # a 3x3 grid: below the smallest map side
    assert "row 0: map dimensions out of range (wafer 'W1': 3x3 dies" in _error(_csv(tmp_path, small))


def test_options_from_params() -> None:
    assert DieTableOptions.from_params(None) == DieTableOptions((1,), "label", None)
    got = DieTableOptions.from_params({"pass_bins": [1, 4], "label_column": None, "labels_file": "l.csv"})
    assert got == DieTableOptions((1, 4), None, Path("l.csv"))
    bad = [
        ({"pass_bin": [1]}, "unknown key in ingest.die_table (pass_bin)"),
        ({"pass_bins": []}, "pass_bins must be a list of integers"),
        ({"pass_bins": [1, True]}, "pass_bins must be a list of integers"),
        ({"pass_bins": 1}, "pass_bins must be a list of integers"),
        ({"label_column": "bin"}, "label_column must be a new column or null"),
        ({"labels_file": 3}, "labels_file must be a path or null"),
        ([1], "ingest.die_table must be a mapping"),
    ]
    for params, rule in bad:
        with pytest.raises(WaferSageError, match=re.escape(rule)):
            DieTableOptions.from_params(params)


def test_labels_file_with_several_paths_is_refused(tmp_path: Path) -> None:
    paths = [_csv(tmp_path, HEAD + GOOD, "a.csv"), _csv(tmp_path, HEAD + GOOD, "b.csv")]
    with pytest.raises(WaferSageError, match="labels_file needs a single path"):
        ingest.build_table("die-table", paths, {}, die_table=DieTableOptions(labels_file=tmp_path / "l.csv"))


# --- the CLI ---------------------------------------------------------------------------------


def _ingest_cli(
    tmp_path: Path, path: Path, params: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    (tmp_path / "params.yaml").write_text("ingest:\n" + params)
    out = tmp_path / "out"
    args = ["ingest", "--source", "die-table", "--path", str(path), "--out", str(out / "wafers.parquet")]
    args += ["--metrics", str(out / "metrics.json"), "--params", str(tmp_path / "params.yaml")]
    argv, sys.argv = sys.argv, ["wafersage", *args]
    try:
        with pytest.raises(SystemExit) as ended:  # exit status 0 too
            main()
    finally:
        sys.argv = argv
    return ended.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("dies", "params", "rule"),
    [
        (HEAD + GOOD + "L1,W1,0,0,1,Loc\n", "", "dies.csv: row 2: duplicate die"),
        (HEAD + GOOD + "L1,W1,x,0,1,Loc\n", "", "dies.csv: row 2: x is not an integer"),
        (HEAD + GOOD, "  die_table: {pass_bin: [1]}\n", "(ingest.die_table.pass_bin: unknown key)"),
    ],
    ids=["duplicate-die", "bad-coordinate", "unknown-key"],
)
def test_cli_refuses_with_exit_2_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dies: str, params: str, rule: str
) -> None:
    code, err = _ingest_cli(tmp_path, _csv(tmp_path, dies), params or "  source: synthetic\n", capsys)
    assert code == ERROR_EXIT == 2
    assert err.startswith("wafersage: error: ") and rule in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_reads_the_die_table_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "dies.csv", _dies().rename(columns={"label": "defect"}))
    params = "  die_table:\n    pass_bins: [1, 9]\n    label_column: defect\n"
    code, err = _ingest_cli(tmp_path, path, params, capsys)
    assert code == 0, err
    df = read_raw(tmp_path / "out" / "wafers.parquet")
    assert df["labels"].tolist() == [EXPECTED_LABELS[w] for w in WAFERS]
    expected = _maps()
    for m in expected.values():  # the fail dies given bin 9 pass now
        fail = m == FAIL
        m[fail] = np.where(np.resize(FAIL_BINS, int(fail.sum())) == 9, PASS, FAIL)
    assert sum(int((m == FAIL).sum()) for m in expected.values()) == 6  # of 8 fail dies
    for rec in df.itertuples():
        assert decode_map(rec.map, rec.rows, rec.cols).tolist() == expected[rec.wafer_id].tolist()
