"""The README's main job end to end: `dvc repro` in a fresh copy of the repo, then `dvc status`
clean; a corrupted raw table stops the pipeline at validate_raw.

Every stage of dvc.yaml runs with the project's code, on params.yaml with the small sizes of
``tests/params_fast.yaml`` merged over it (a few minutes instead of 20 or more on 2 cores);
``WAFERSAGE_E2E_FULL=1`` runs the default params.yaml as it is (``make repro`` is that benchmark)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fast_params import fast_params

from wafersage.wafers.rawtable import read_raw

pytestmark = pytest.mark.slow

TRACKED = (
    "dvc.yaml",
    "params.yaml",
    "expectations",
    "calibration",
    "src",
    "data/inputs",
    "data/review",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
    "Makefile",
)


def _sh(cmd, cwd, env):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True, timeout=2700)


def _n_wafers(repo: Path) -> int:
    """The synthetic wafer count the repo's params.yaml asks for."""
    return int(yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["synthetic"]["n_wafers"])


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, repo_root):
    """A fresh git+dvc repo holding the project's pipeline files, its params.yaml shrunk by
    tests/params_fast.yaml (unless WAFERSAGE_E2E_FULL=1)."""
    repo = tmp_path_factory.mktemp("repo")
    for name in TRACKED:
        src = repo_root / name
        dst = repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst)
    if os.environ.get("WAFERSAGE_E2E_FULL") != "1":
        params = fast_params(repo_root / "params.yaml")
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = _sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo, env)
    assert r.returncode == 0, r.stderr
    r = _sh("dvc repro", repo, env)
    assert r.returncode == 0, r.stdout + r.stderr
    return repo, env


def test_repro_produces_outputs_and_status_is_clean(pipeline_repo):
    repo, env = pipeline_repo
    df = read_raw(repo / "data/raw/wafers.parquet")
    assert len(df) == _n_wafers(repo)
    assert json.loads((repo / "reports/validate_raw/summary.json").read_text())["success"] is True
    assert (repo / "reports/validate_raw/data_docs/index.html").exists()
    status = _sh("dvc status", repo, env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    metrics = _sh("dvc metrics show --json", repo, env)
    assert json.loads(metrics.stdout)  # the ingest and gate metrics are declared to dvc
    runs = _sh(
        f"{sys.executable} -c \"import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        "print(len(mlflow.search_runs(experiment_names=['wafersage'])))\"",
        repo,
        env,
    )
    assert int(runs.stdout.strip().splitlines()[-1]) >= 2, runs.stderr


def test_repro_evaluates_registers_and_plots(pipeline_repo):
    """The graph's tail: evaluate metrics for dvc, the HTML report, the registered challenger."""
    repo, env = pipeline_repo
    m = json.loads((repo / "reports/evaluate/metrics.json").read_text())
    for model in ("base", "sft", "gspo"):
        assert {"type_macro_f1", "rule_score", "judge_score"} <= set(m[model]), m.keys()
    for metric in ("type_macro_f1", "rule_score", "judge_score"):
        assert set(m["gspo_vs_sft"][metric]) == {"diff", "ci_low", "ci_high"}
    assert (repo / "reports/index.html").stat().st_size > 10_000
    assert json.loads((repo / "reports/register/registered.json").read_text())["alias"] == "challenger"
    shown = _sh("dvc metrics show --json", repo, env)
    assert shown.returncode == 0 and "gspo_vs_sft" in shown.stdout, shown.stderr
    plots = _sh("dvc plots show -o plots_out", repo, env)
    assert plots.returncode == 0 and (repo / "plots_out/index.html").exists(), plots.stderr
    promote = _sh("wafersage promote --dry-run", repo, env)
    assert promote.returncode == 0 and "promoted (dry run)" in promote.stdout, promote.stdout + promote.stderr


def test_repro_is_deterministic(pipeline_repo):
    repo, env = pipeline_repo
    before = (repo / "data/raw/wafers.parquet").read_bytes()
    r = _sh("dvc repro --force ingest", repo, env)
    assert r.returncode == 0, r.stderr
    assert (repo / "data/raw/wafers.parquet").read_bytes() == before


def _changed(repo: Path, env: dict) -> set[str]:
    """The stages ``dvc status`` finds changed."""
    r = _sh("dvc status --json", repo, env)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_a_change_re_runs_exactly_the_stages_that_depend_on_it(pipeline_repo):
    """New data in data/inputs re-runs ingest; an sft param re-runs sft (and, through its outputs,
    its dependants), nothing upstream."""
    repo, env = pipeline_repo
    assert _changed(repo, env) == set()
    new_input = repo / "data/inputs/new.csv"
    new_input.write_text("lot_id,wafer_id,x,y,bin\n")
    assert _changed(repo, env) == {"ingest"}
    new_input.unlink()
    params = repo / "params.yaml"
    before = params.read_text()
    p = yaml.safe_load(before)
    p["sft"]["learning_rate"] = float(p["sft"]["learning_rate"]) * 2
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        assert _changed(repo, env) == {"sft", "register"}  # register logs the params its model rests on
        dry = _sh("dvc repro --dry", repo, env)
        ran = {line.split("'")[1] for line in dry.stdout.splitlines() if line.startswith("Running stage")}
        assert ran == {"sft", "register"}, (
            dry.stdout
        )  # upstream stages are skipped; downstream follow once sft's outs change
    finally:
        params.write_text(before)
    assert _changed(repo, env) == set()


def test_data_check_passes_on_the_pipeline_data_and_fails_on_a_bad_update_naming_the_rule(
    pipeline_repo, repo_root
):
    """`make data-check` (what the data-gates workflow runs): clean on the reproduced data; a bad
    die table dropped into data/inputs fails it with the loader's one-line rule, nothing written."""
    import pandas as pd

    repo, env = pipeline_repo
    ok = _sh("make data-check", repo, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    good = pd.read_csv(repo_root / "tests/data/die_table_example.csv")
    unknown = good.assign(label=good["label"].where(good["wafer_id"] != good["wafer_id"].iloc[0], "Blob"))
    bad_bin = good.astype({"bin": object})
    bad_bin.loc[3, "bin"] = "x"
    duplicate = pd.concat([good, good.iloc[:1]])
    params = repo / "params.yaml"
    before, raw = params.read_text(), (repo / "data/raw/wafers.parquet").read_bytes()
    p = yaml.safe_load(before)
    p["ingest"].update(source="die-table", path=["data/inputs/update.csv"])
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        for table, rule in (
            (unknown, "row 0: unknown label ('Blob')"),
            (bad_bin, "row 3: bin is not an integer ('x')"),
            (duplicate, f"row {len(good)}: duplicate die"),
        ):
            table.to_csv(repo / "data/inputs/update.csv", index=False)
            r = _sh("make data-check", repo, env)
            assert r.returncode != 0 and f"data/inputs/update.csv: {rule}" in r.stdout + r.stderr, r.stderr
            out = repo / "data/raw/wafers.parquet"  # dvc clears a stage's outs before it runs
            assert not out.exists() or out.read_bytes() == raw  # no new or partial table
    finally:
        params.write_text(before)
        (repo / "data/inputs/update.csv").unlink(missing_ok=True)
    # dvc removed ingest's outputs before the failed runs (its metrics are not cached): rebuild them
    assert _sh("dvc repro validate_vqa", repo, env).returncode == 0
    assert (repo / "data/raw/wafers.parquet").read_bytes() == raw and _changed(repo, env) == set()


def test_label_corrections_re_run_the_label_stages_only_and_land_in_the_clean_table(pipeline_repo):
    """The review round trip: a corrections file makes clean (not ingest or what precedes clean)
    out of date; a bad one stops clean with its one-line rule; after `dvc repro clean` the corrected
    labels are in the cleaned table, the metrics count them and the label stages follow."""
    import pandas as pd

    repo, env = pipeline_repo
    assert _changed(repo, env) == set()
    fixes = repo / "data/review/corrections.csv"
    header = fixes.read_text()
    assert header.strip() == "wafer_id,label,note"  # shipped header-only: no corrections
    table = pd.read_parquet(repo / "data/clean/labels.parquet")
    flagged = table[(table["verdict"] != "keep") & (table["suggested_label"] != "mixed")].iloc[0]
    kept = table[(table["verdict"] == "keep") & table["given_labels"].map(lambda v: list(v) == ["none"])]
    kept = kept.iloc[0]
    lines = [
        f"{flagged['wafer_id']},{flagged['suggested_label']},as suggested",
        f"{kept['wafer_id']},Scratch,",
    ]
    good = header + "".join(line + "\n" for line in lines)
    labels = repo / "data/clean/labels.parquet"
    before = labels.read_bytes()
    try:
        fixes.write_text(good)
        assert _changed(repo, env) == {"clean"}  # ingest, validate_raw, pretrain_vision stay
        fixes.write_text(header + "nope-1,Center,\n")
        bad = _sh("dvc repro clean", repo, env)
        assert bad.returncode != 0
        assert "data/review/corrections.csv: row 0: unknown wafer_id" in bad.stdout + bad.stderr
        assert not labels.exists() or labels.read_bytes() == before  # dvc clears outs; nothing partial
        fixes.write_text(good)
        r = _sh("dvc repro clean", repo, env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Running stage 'ingest'" not in r.stdout and "Running stage 'clean'" in r.stdout
        after = pd.read_parquet(repo / "data/clean/labels.parquet").set_index("wafer_id")
        assert after.loc[flagged["wafer_id"], "kept_labels"].tolist() == flagged["suggested_label"].split("+")
        assert after.loc[kept["wafer_id"], "kept_labels"].tolist() == ["Scratch"]
        assert int(after["corrected"].sum()) == 2
        m = json.loads((repo / "reports/clean/metrics.json").read_text())["corrections"]
        assert (m["applied"], m["agreed_with_cleaner"], m["agreement"]) == (2, 1, 0.5)
        assert _changed(repo, env) == {"describe"}  # the new labels reach the next stage, in turn the rest
    finally:
        fixes.write_text(header)
    r = _sh("dvc repro clean", repo, env)
    assert r.returncode == 0 and _changed(repo, env) == set(), r.stdout + r.stderr


def test_corrupted_raw_table_stops_at_validate_raw(pipeline_repo):
    repo, env = pipeline_repo
    raw = repo / "data/raw/wafers.parquet"
    df = read_raw(raw)
    m = bytearray(df.at[0, "map"])
    m[0] = 7
    df.at[0, "map"] = bytes(m)
    df.at[1, "wafer_id"] = "dup"
    df.at[2, "wafer_id"] = "dup"
    # bypass the writer's own checks, as a hand-edited file would
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wafersage.wafers.rawtable import COLUMNS, SCHEMA

    pq.write_table(pa.Table.from_pandas(df[list(COLUMNS)], schema=SCHEMA, preserve_index=False), raw)
    r = _sh("dvc repro --single-item validate_raw", repo, env)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "raw data gate failed" in out
    n = _n_wafers(repo)
    assert f"expect_column_values_to_be_between(map_max) failed: 1 of {n} rows unexpected" in out
    assert f"expect_column_values_to_be_unique(wafer_id) failed: 2 of {n} rows unexpected" in out


#: Stages no trained model feeds: a run on any machine gives the bytes the committed dvc.lock pins.
#: From ``clean`` on, outputs rest on the vision encoder, whose float results may differ by CPU.
DATA_STAGES = ("ingest", "validate_raw")
#: Reports that carry the time they were built (the GX data docs), not data.
TIMESTAMPED = {"reports/validate_raw/data_docs"}


def _outs(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] not in TIMESTAMPED}


def test_data_stages_reproduce_the_committed_dvc_lock(tmp_path, repo_root):
    """The data stages, re-run at the default params in a fresh copy of the repository, write
    outputs whose hashes are those the committed dvc.lock pins."""
    repo = tmp_path / "repo"
    for name in (*TRACKED, "dvc.lock"):
        src, dst = repo_root / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = _sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo, env)
    assert r.returncode == 0, r.stderr
    r = _sh(f"dvc repro --single-item {' '.join(DATA_STAGES)}", repo, env)
    assert r.returncode == 0, r.stdout + r.stderr
    committed = yaml.safe_load((repo_root / "dvc.lock").read_text())
    fresh = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in DATA_STAGES:
        assert _outs(fresh, stage) == _outs(committed, stage), f"{stage}: re-run dvc repro, commit dvc.lock"
    assert _outs(committed, "ingest")  # the comparison saw the raw table and its metrics
