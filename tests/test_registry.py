"""register + promote with the MLflow registry: the promotion rule both ways (a worse challenger is
not promoted), the pyfunc loaded back from ``models:/<name>@champion`` answers, tags and links."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_model import build_tiny_model

from wafersage.errors import WaferSageError
from wafersage.registry.loading import dvc_lock_hashes
from wafersage.registry.promotion import decide

N = 60


def items(
    shift: float = 0.0, seed: int = 0, model: str = "sft", flip: int = 0, reward: str = "cfg-a"
) -> pd.DataFrame:
    """Per-item evaluation rows; ``shift`` moves every rule score, ``flip`` type answers made wrong,
    ``reward`` the md5 of the reward config that scored them."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.7, N)
    truth = ["Center", "Donut", "Scratch"] * (N // 3)
    pred = [("Donut" if i < flip else t) for i, t in enumerate(truth)]
    return pd.DataFrame(
        {
            "model": model,
            "item_id": [f"pair-{i:03d}" for i in range(N)],
            "rule_score": np.clip(base + shift, 0, 1),
            "judge_score": np.clip(10 * (base + shift), 0, 10),
            "is_type": True,
            "truth": truth,
            "pred": pred,
            "reward_md5": reward,
        }
    )


def test_better_challenger_is_promoted_worse_and_tied_are_not():
    champ = items()
    better = decide(items(0.05), champ, {"metric": "rule_score"})
    assert better["promote"] and better["ci_low"] > 0 and better["diff"] == pytest.approx(0.05, abs=1e-3)
    worse = decide(items(-0.05), champ, {"metric": "rule_score"})
    assert not worse["promote"] and worse["ci_high"] < 0
    tied = decide(items(0.0), champ, {"metric": "rule_score"})
    assert not tied["promote"] and tied["diff"] == 0
    margin = decide(items(0.05), champ, {"metric": "rule_score", "margin": 0.1})
    assert not margin["promote"]  # wins, but not by the margin
    f1 = decide(items(flip=0), items(flip=20), {"metric": "type_macro_f1"})
    assert f1["promote"] and f1["challenger_value"] == 1.0 and f1["champion_value"] < 0.8


def test_a_rule_score_gate_needs_one_reward_config():
    better = items(0.05, reward="cfg-b")
    with pytest.raises(WaferSageError, match="different reward configs"):
        decide(better, items(), {"metric": "rule_score"})
    legacy = items().drop(columns="reward_md5")  # scored before the column existed: config unknown
    with pytest.raises(WaferSageError, match="different reward configs"):
        decide(better, legacy, {"metric": "rule_score"})
    assert decide(items(flip=0, reward="cfg-b"), items(flip=20), {})["promote"]  # type F1: no reward


def test_first_model_floor_and_bad_params():
    assert decide(items(), None, {})["promote"]  # no champion, no floor: promote
    assert not decide(items(flip=20), None, {"first_floor": 0.9})["promote"]  # type macro-F1 by default
    assert decide(items(flip=20), None, {"first_floor": 0.2})["promote"]
    assert not decide(items(), None, {"metric": "rule_score", "first_floor": 0.9})["promote"]
    with pytest.raises(WaferSageError, match="promote.metric"):
        decide(items(), None, {"metric": "bleu"})
    with pytest.raises(WaferSageError, match="unknown key"):
        decide(items(), None, {"metrc": "rule_score"})
    other = items()
    other["item_id"] = "other-" + other["item_id"]
    with pytest.raises(WaferSageError, match="share no evaluated items"):
        decide(items(), other, {})


@pytest.fixture
def registry_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = build_tiny_model(tmp_path / "models" / "sft", stage="sft")
    return tmp_path, model


def _register(
    root: Path,
    model: Path,
    val: pd.DataFrame,
    test: pd.DataFrame | None = None,
    name: str = "wafer-test",
    metrics: dict | None = None,
) -> dict:
    """Register ``model`` with ``val`` as its val (selection) items and ``test`` (default: the same
    rows) as its test items; ``metrics`` as the evaluate stage's (default: the mean rule score)."""
    from wafersage.stages import register

    path, val_path = root / "items.parquet", root / "val_items.parquet"
    (val if test is None else test).to_parquet(path, index=False)
    val.to_parquet(val_path, index=False)
    metrics_path = root / "metrics.json"
    metrics_path.write_text(json.dumps(metrics or {"sft": {"rule_score": float(val["rule_score"].mean())}}))
    params = {"model_name": name, "max_new_tokens": 4}
    return register.run(
        params, model, path, val_path, metrics_path, root / "registered.json", lock=root / "dvc.lock"
    )


@pytest.mark.slow
def test_register_promote_and_load_the_champion(registry_env):
    import mlflow
    from mlflow import MlflowClient

    from wafersage.registry.loading import load_pyfunc
    from wafersage.registry.promotion import promote
    from wafersage.stages.register import input_example
    from wafersage.tracking import stage_run

    root, model = registry_env
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  vqa:\n    outs:\n    - path: data/vqa\n      md5: abc123.dir\n"
    )
    with stage_run("sft", {"x": 1}):
        pass
    sft_run = mlflow.search_runs(experiment_names=["wafersage"], output_format="list")[0].info.run_id
    r1 = _register(root, model, items())
    assert r1["version"] == 1 and r1["linked_runs"]["sft"] == sft_run
    client = MlflowClient()
    v1 = client.get_model_version_by_alias("wafer-test", "challenger")
    assert v1.tags["wafersage.run.sft"] == sft_run and v1.tags["dvc.data/vqa.md5"] == "abc123.dir"
    assert v1.tags["model.source"] == "sft" and len(v1.tags["model.md5"]) == 32

    assert promote("wafer-test", {}, dry_run=True)["promote"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # a dry run moves nothing
        client.get_model_version_by_alias("wafer-test", "champion")
    assert promote("wafer-test", {})["promote"]
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 1

    champion = load_pyfunc("models:/wafer-test@champion")
    out = champion.predict(input_example(64, 0))
    assert list(out.columns) == ["answer"] and isinstance(out["answer"].iloc[0], str)
    from wafersage.serving.predictor import load_predictor  # what `ask`/`serve` use by default

    pred = load_predictor(None, "wafer-test", max_new_tokens=4)
    assert pred.image_size == 64 and pred.max_new_tokens == 4
    from PIL import Image

    assert isinstance(pred.answer([Image.new("RGB", (64, 64))], ["What defect?"])[0], str)

    rule = {"metric": "rule_score"}
    _register(root, model, items(-0.05), test=items(0.3))  # worse on val (better on test): stays out
    d = promote("wafer-test", rule)
    assert not d["promote"] and d["champion_version"] == 1 and d["ci_high"] < 0
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 1
    v2 = client.get_model_version("wafer-test", "2")
    assert v2.tags["promotion.decision"] == "rejected" and float(v2.tags["promotion.ci_low"]) < 0

    _register(root, model, items(0.05), test=items(-0.3))  # better on val: replaces the champion
    d = promote("wafer-test", rule)
    assert d["promote"] and d["champion_version"] == 1
    assert int(client.get_model_version_by_alias("wafer-test", "champion").version) == 3
    assert client.get_model_version("wafer-test", "3").tags["promotion.decision"] == "promoted"


def test_promote_without_a_challenger_is_a_one_line_error(tmp_path, monkeypatch):
    from wafersage.registry.loading import load_pyfunc
    from wafersage.registry.promotion import promote

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(WaferSageError, match="challenger"):
        promote("nothing-here", {})
    with pytest.raises(WaferSageError, match="cannot load the registered model"):
        load_pyfunc("models:/nothing-here@champion")


#: A dvc.lock: an input no stage writes (data/inputs), code (src/, pinned by git.commit instead),
#: stage outputs (data, a report kept in git: cache: false).
LOCK = """schema: '2.0'
stages:
  ingest:
    cmd: wafersage ingest
    deps:
    - path: data/inputs
      md5: in123.dir
    - path: src/wafersage/stages/ingest.py
      md5: code456
    outs:
    - path: data/raw/wafers.parquet
      md5: raw789
  vqa:
    cmd: wafersage vqa
    deps:
    - path: data/raw/wafers.parquet
      md5: raw789
    outs:
    - path: data/vqa
      md5: abc123.dir
    - path: reports/vqa/metrics.json
      md5: rep000
"""


def _git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, with no repository above it to find."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


def test_lineage_pins_the_commit_and_counts_uncommitted_code_not_what_dvc_writes(git_repo):
    from wafersage.stages.register import lineage

    root, lock = git_repo, git_repo / "dvc.lock"
    assert dvc_lock_hashes(lock) == {} and lineage(lock) == {}
    lock.write_text(LOCK)
    outs = {
        "data/raw/wafers.parquet": "raw789",
        "data/vqa": "abc123.dir",
        "reports/vqa/metrics.json": "rep000",
    }
    assert dvc_lock_hashes(lock, inputs=False) == outs
    assert dvc_lock_hashes(lock) == {**outs, "data/inputs": "in123.dir"}
    data_tags = {f"dvc.{k}.md5": v for k, v in dvc_lock_hashes(lock).items()}
    assert lineage(lock) == data_tags  # not a git repository: no git tags, no failure

    (root / "reports" / "vqa").mkdir(parents=True)
    (root / "reports" / "vqa" / "metrics.json").write_text("{}")
    (root / "train.py").write_text("steps = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "pipeline")
    head = _git(root, "rev-parse", "HEAD")
    assert lineage(lock) == {**data_tags, "git.commit": head, "git.dirty": "false"}

    lock.write_text(LOCK.replace("abc123", "def456"))  # what `dvc repro` writes is no change
    (root / "reports" / "vqa" / "metrics.json").write_text('{"n": 1}')
    (root / "data" / "vqa").mkdir(parents=True)
    (root / "data" / "vqa" / "train.parquet").write_text("x")
    (root / "data" / ".gitignore").write_text("/raw\n")
    assert lineage(lock)["git.dirty"] == "false"
    (root / "train.py").write_text("steps = 2\n")  # changed code
    assert lineage(lock)["git.dirty"] == "true"
    _git(root, "checkout", "train.py")
    (root / "extra.py").write_text("")  # new, uncommitted code
    assert lineage(lock)["git.dirty"] == "true"


@pytest.mark.slow
def test_a_version_carries_its_card_lineage_params_requirements_and_code(registry_env):
    from importlib import metadata

    import mlflow
    import yaml
    from mlflow import MlflowClient
    from test_model_card import COUNTS, METRICS

    import wafersage
    from wafersage.modeling.model_folder import base_info, folder_sha256, plain_files
    from wafersage.registry.loading import download_model_folder
    from wafersage.registry.model_card import model_card

    root, model = registry_env
    params = {
        "ingest": {"source": "wm811k", "path": "data/inputs/train.pkl.xz"},
        "sft": {"max_steps": 3, "lora": {"r": 8}},
        "gspo": {"curriculum": {"stages": [{"name": "easy", "difficulties": [1], "steps": 2}]}},
        "register": {"model_name": "ignored"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "reports" / "ingest").mkdir(parents=True)
    (root / "reports" / "ingest" / "metrics.json").write_text(json.dumps(COUNTS))
    (root / "dvc.lock").write_text(LOCK)
    (root / ".gitignore").write_text("*\n")  # what the test writes stays untracked
    _git(root, "init", "-q")
    _git(root, "add", "-f", "dvc.lock", ".gitignore")
    _git(root, "commit", "-qm", "pipeline")
    head = _git(root, "rev-parse", "HEAD")

    r = _register(root, model, items(), metrics=METRICS)
    v = MlflowClient().get_model_version("wafer-test", str(r["version"]))
    assert (v.tags["git.commit"], v.tags["git.dirty"]) == (head, "false")
    assert v.tags["dvc.data/inputs.md5"] == "in123.dir" and v.tags["dvc.data/vqa.md5"] == "abc123.dir"
    assert "dvc.src/wafersage/stages/ingest.py.md5" not in v.tags
    assert v.tags["wafersage.version"] == wafersage.__version__ and v.tags["eval.type_macro_f1"] == "0.8291"
    from wafersage.params import load_section
    from wafersage.stages.register import MODEL_SECTIONS

    # the model's sections as the stages read them: validated, defaults filled in, register's left out
    sections = {k: load_section(k, root / "params.yaml") for k in MODEL_SECTIONS}
    assert sections["gspo"]["curriculum"]["stages"][0]["steps"] == 2 and sections["sft"]["lora"]["r"] == 8
    lineage = {k: t for k, t in v.tags.items() if k.startswith(("git.", "dvc."))}
    card = model_card(
        METRICS,
        "sft",
        name="wafer-test",
        info=base_info(model),
        params=sections,
        data_counts=COUNTS,
        lineage=lineage,
    )
    assert v.description == card
    assert "| type macro-F1 | 0.829 [0.803, 0.853] |" in card and f"git commit `{head}`, working" in card

    folder = download_model_folder(r["uri"], root / "download")
    assert (folder.folder / "README.md").read_text() == card
    assert plain_files(folder.folder) == sorted([*plain_files(model), "README.md"])
    assert folder.sha256 == v.tags["model.sha256"] == folder_sha256(folder.folder)

    logged = yaml.safe_load(
        Path(mlflow.artifacts.download_artifacts(run_id=r["run_id"], artifact_path="params.yaml")).read_text()
    )
    assert logged == sections

    info = mlflow.models.get_model_info(r["uri"])
    assert info.flavors["python_function"]["code"] == "code"
    reqs = Path(mlflow.artifacts.download_artifacts(f"{r['uri']}/requirements.txt")).read_text().split()
    for name in ("skops", "scikit-learn", "safetensors", "torch", "transformers"):
        assert f"{name}=={metadata.version(name)}" in reqs
    assert not [line for line in reqs if line.startswith("wafersage")]
    code = Path(mlflow.artifacts.download_artifacts(f"{r['uri']}/code", dst_path=str(root / "code")))
    source = Path(wafersage.__file__).parent
    assert plain_files(code / "wafersage") == [
        f for f in plain_files(source) if "__pycache__" not in f and not f.endswith(".pyc")
    ]
    assert (code / "wafersage" / "serving" / "pyfunc.py").read_text() == (
        source / "serving" / "pyfunc.py"
    ).read_text()


@pytest.mark.slow
def test_a_registered_version_answers_in_a_fresh_virtualenv(registry_env):
    """`mlflow models predict` on ``models:/<name>@challenger`` in a new virtualenv holding only the
    version's logged requirements (no wafersage: its code travels as the model's code_paths)."""
    import os
    import sys

    root, model = registry_env
    r = _register(root, model, items())
    import mlflow

    reqs = Path(mlflow.artifacts.download_artifacts(f"{r['uri']}/requirements.txt", dst_path=str(root / "r")))
    example = Path(mlflow.artifacts.download_artifacts(f"{r['uri']}/serving_input_example.json"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "-r", str(reqs)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if install.returncode != 0:
        pytest.skip(f"the logged requirements could not be installed here: {install.stderr[-300:]}")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(root)),
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
    }
    bare = [str(venv / "bin/python"), "-c", "import wafersage"]
    out = subprocess.run(bare, capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode != 0  # the package is not installed: the model must bring its own code
    predict = [str(venv / "bin/mlflow"), "models", "predict", "-m", "models:/wafer-test@challenger"]
    out = subprocess.run(
        [*predict, "--env-manager", "local", "-i", str(example), "-t", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    answers = json.loads(out.stdout.strip().splitlines()[-1])["predictions"]
    assert len(answers) == 1 and isinstance(answers[0]["answer"], str)
