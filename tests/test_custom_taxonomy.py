"""The README's custom-taxonomy example end to end: its one `dvc exp run` command, on a fresh copy of
the repo with the end-to-end test's small params, runs every stage on the die-table example whose
classes include one outside WM-811K's nine (``Spiral``), which then shows in the VQA tables, in the
rubrics (with the generic root cause), in evaluate's per-class F1 and in the model folder."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fast_params import fast_params
from test_pipeline import TRACKED, _sh

pytestmark = pytest.mark.slow

EXAMPLE = "tests/data/custom_classes.csv"


def readme_command(repo_root: Path) -> str:
    """The README's one command for the example."""
    text = (repo_root / "README.md").read_text()
    found = re.findall(r"^dvc exp run -S ingest\.source=die-table .*$", text, flags=re.M)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def custom_repo(tmp_path_factory, repo_root):
    repo = tmp_path_factory.mktemp("custom")
    for name in (*TRACKED, EXAMPLE):
        src, dst = repo_root / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst)
    params = fast_params(repo_root / "params.yaml")
    params["evaluate"]["max_pairs"] = 400  # every test-split type question, Spiral wafers among them
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    import os
    import sys

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = _sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo, env)
    assert r.returncode == 0, r.stderr
    cmd = readme_command(repo_root)
    assert shlex.split(cmd)[:3] == ["dvc", "exp", "run"]
    r = _sh(cmd, repo, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return repo, env


def test_the_new_class_runs_through_every_stage(custom_repo):
    repo, env = custom_repo
    p = yaml.safe_load((repo / "params.yaml").read_text())
    assert p["taxonomy"]["classes"] == ["none", "Center", "Edge-Ring", "Scratch", "Spiral"]
    ingest = json.loads((repo / "reports/ingest/metrics.json").read_text())
    assert "Spiral" in json.dumps(ingest)
    clean = json.loads((repo / "reports/clean/metrics.json").read_text())
    assert set(clean["per_class"]) == {"none", "Center", "Edge-Ring", "Scratch", "Spiral"}

    vqa = pd.concat(pd.read_parquet(f) for f in sorted((repo / "data/vqa").glob("*.parquet")))
    spiral = vqa[vqa["labels"].map(lambda v: "Spiral" in list(v))]
    assert len(spiral) and spiral["answer"].str.contains("Spiral").any()

    rubrics = [json.loads(x) for x in (repo / "data/rubrics/rubrics.jsonl").read_text().splitlines()]
    root = [r["rubric"]["root_cause"] for r in rubrics if r["labels"] == ["Spiral"]]
    assert root and all(rc["process_step"] == "unattributed process step (Spiral)" for rc in root)
    assert (
        json.loads((repo / "reports/rubrics/metrics.json").read_text())["knowledge_base.generic_classes"] == 1
    )
    assert (
        json.loads((repo / "reports/describe/metrics.json").read_text())["knowledge_base.generic_classes"]
        == 1
    )

    f1 = pd.read_csv(repo / "reports/evaluate/per_class_f1.csv")
    assert (f1["label"] == "Spiral").any(), f1
    info = json.loads((repo / "models/gspo/wafersage.json").read_text())
    assert info["taxonomy"]["classes"][-1] == "Spiral"

    status = _sh("dvc status", repo, env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
