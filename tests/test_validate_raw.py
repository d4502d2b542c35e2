import json

import numpy as np
import pytest
from factories import raw_table

from wafersage.errors import WaferSageError
from wafersage.stages import validate_raw
from wafersage.wafers.rawtable import write_raw

SUITE = "expectations/raw.json"


@pytest.fixture(autouse=True)
def _tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def _run(tmp_path, df, repo_root):
    raw = tmp_path / "wafers.parquet"
    write_raw(df, raw)
    report = tmp_path / "summary.json"
    docs = tmp_path / "docs"
    return validate_raw.run({}, raw, repo_root / SUITE, report, docs), report, docs


def test_valid_table_passes_and_writes_data_docs(tmp_path, repo_root):
    summary, report, docs = _run(tmp_path, raw_table(), repo_root)
    assert summary["success"] and summary["wafers"] == 18
    assert json.loads(report.read_text())["expectations"] == 12
    assert (docs / "index.html").exists()


def test_out_of_encoding_values_fail_naming_expectation_and_rows(tmp_path, repo_root):
    df = raw_table()
    for i in (1, 4):
        m = bytearray(df.at[i, "map"])
        m[0] = 9
        df.at[i, "map"] = bytes(m)
    with pytest.raises(WaferSageError) as exc:
        _run(tmp_path, df, repo_root)
    msg = str(exc.value)
    assert "raw data gate failed" in msg
    assert "expect_column_values_to_be_between(map_max) failed: 2 of 18 rows unexpected" in msg
    assert "\n" not in msg
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "docs" / "index.html").exists()


def test_missing_class_and_unknown_label_fail(tmp_path, repo_root):
    df = raw_table()
    df = df[df["labels"].map(lambda v: v != ["Donut"])].reset_index(drop=True)
    df.at[0, "labels"] = ["Bogus"]
    with pytest.raises(WaferSageError) as exc:
        _run(tmp_path, df, repo_root)
    msg = str(exc.value)
    assert "expect_column_distinct_values_to_contain_set(single_label)" in msg
    assert "expect_column_values_to_match_regex(label) failed: 1 of" in msg


def test_all_off_wafer_map_fails(tmp_path, repo_root):
    df = raw_table()
    df.at[3, "map"] = np.zeros(df.at[3, "rows"] * df.at[3, "cols"], np.uint8).tobytes()
    with pytest.raises(WaferSageError, match=r"n_on_wafer\) failed: 1 of 18"):
        _run(tmp_path, df, repo_root)
