import json
import subprocess
import sys

import pytest

from wafersage.stages import ingest
from wafersage.wafers.rawtable import read_raw


def _cli(*args, cwd, tracking):
    code = "from wafersage.cli import main; main()"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tracking}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture(autouse=True)
def _tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def test_synthetic_ingest_writes_table_metrics_and_a_run(tmp_path):
    out, metrics = tmp_path / "raw.parquet", tmp_path / "metrics.json"
    params = {"source": "synthetic", "synthetic": {"n_wafers": 60, "seed": 3}}
    ingest.run(params, out, metrics)
    df = read_raw(out)
    assert len(df) == 60 and df["wafer_id"].is_unique
    m = json.loads(metrics.read_text())
    assert m["wafers"] == 60 and sum(m["classes"].values()) == 60

    import mlflow

    runs = mlflow.search_runs(experiment_names=["wafersage"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.wafersage.stage"] == "ingest" and run["metrics.wafers"] == 60
    assert run["params.synthetic.n_wafers"] == "60"


def test_unknown_source_and_missing_path_fail_without_output(tmp_path):
    r = _cli("ingest", "--source", "nope", "--out", "o.parquet", cwd=tmp_path, tracking=tmp_path / "m.db")
    assert r.returncode == 2 and "unknown ingest source" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli(
        "ingest",
        "--source",
        "wm811k-processed",
        "--out",
        "o.parquet",
        cwd=tmp_path,
        tracking=tmp_path / "m.db",
    )
    assert r.returncode == 2 and "needs a path" in r.stderr
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.realdata
def test_cli_ingests_real_wm811k_val(tmp_path, shared_data):
    r = _cli(
        "ingest",
        "--source",
        "wm811k-processed",
        "--path",
        str(shared_data / "wm811k" / "val_data.pkl.xz"),
        "--out",
        "OUT.parquet",
        cwd=tmp_path,
        tracking=tmp_path / "m.db",
    )
    assert r.returncode == 0, r.stderr
    df = read_raw(tmp_path / "OUT.parquet")
    assert len(df) == 12450
    counts = json.loads((tmp_path / "reports/ingest/metrics.json").read_text())["classes"]
    assert counts == {
        "none": 7346,
        "Edge-Ring": 1936,
        "Edge-Loc": 1038,
        "Center": 859,
        "Loc": 718,
        "Scratch": 239,
        "Random": 173,
        "Donut": 111,
        "Near-full": 30,
    }


def test_read_raw_columns_reads_the_required_and_asked_columns_only(tmp_path):
    import pyarrow.parquet as pq

    from wafersage.errors import WaferSageError

    out = tmp_path / "raw.parquet"
    ingest.run({"source": "synthetic", "synthetic": {"n_wafers": 12, "seed": 3}}, out, tmp_path / "m.json")
    full = read_raw(out)
    part = read_raw(out, columns=("noise_flipped", "not_a_column"))
    assert list(part.columns) == ["wafer_id", "rows", "cols", "map", "labels", "noise_flipped"]
    assert part["labels"].tolist() == full["labels"].tolist()
    assert "pattern_params" in full.columns
    pq.write_table(pq.read_table(out).drop(["map"]), tmp_path / "nomap.parquet")
    with pytest.raises(WaferSageError, match=r"nomap.parquet: missing columns \(map\)"):
        read_raw(tmp_path / "nomap.parquet", columns=("noise_flipped",))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(WaferSageError, match="not a readable Parquet file"):
        read_raw(tmp_path / "bad.parquet", columns=())
