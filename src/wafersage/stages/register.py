"""register: log the trained model to MLflow as a pyfunc: the checkpoint + processor folder with
its model card (``README.md``, :mod:`wafersage.registry.model_card`) as the artifact, the wafersage source as
its ``code_paths``, pinned requirements, a signature and an input example. The version is linked to
its training runs (their run ids, found by the ``wafersage.stage`` tag) and tagged with its lineage
(``git.commit`` / ``git.dirty``, the ``dvc.lock`` hashes of the data, models and pipeline inputs,
the model folder's MD5) and its evaluation; the run keeps the params.yaml sections the model was
built with (``params.yaml``) and its per-item evaluation scores, the evidence for ``wafersage
promote``. Registered under ``register.model_name`` with alias ``challenger``, the card as the
version's description and the logged folder's SHA-256 tagged on it (``ask`` and ``serve`` refuse a
registered folder that no longer matches it). Writes ``reports/register/registered.json``."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import wafersage
from wafersage.atomic import atomic_path
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.params import load_section
from wafersage.registry.loading import (
    CHALLENGER,
    ITEMS_ARTIFACT,
    MODEL_ARTIFACT,
    SELECTION_ARTIFACT,
    SHA256_TAG,
    dvc_lock_hashes,
)
from wafersage.registry.model_card import CARD_FILE, COMMIT_TAG, DIRTY_TAG, model_card
from wafersage.tracking import EXPERIMENT, file_md5, git_commit, git_dirty, stage_run
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map
from wafersage.wafers.synthetic import SyntheticConfig, generate

#: Training-graph stages whose latest run ids are tagged on the model version.
LINKED_STAGES = ("pretrain_vision", "init_model", "sft", "gspo", "align", "evaluate")
#: Distributions the served model imports as it loads (the import closure of
#: ``serving/pyfunc_model.py``: predictor, processor, specialist), pinned at the installed versions.
#: wafersage is no requirement line: it is not published on a package index (``pip install`` would
#: fail, or take whatever else holds the name); its source is logged as the model's ``code_paths``.
REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "skops",
    "pillow",
    "pyyaml",
    "tqdm",
)
#: params.yaml sections the model depends on, logged as the register run's ``params.yaml``
#: artifact rather than as run params: that is the file a DVC user edits, diffs and pastes back,
#: with nesting, lists (the GSPO curriculum) and types intact, where flattened run params turn them
#: into strings cut at 500 characters. Each training stage's own run (``wafersage.run.<stage>``)
#: already carries its section as run params.
MODEL_SECTIONS = ("ingest", "model", "init_model", "specialist", "sft", "gspo", "evaluate")
PARAMS_ARTIFACT = "params.yaml"
#: What ``dvc repro`` writes besides the lock and the stage outputs: no change for ``git.dirty``.
DVC_WRITES = (".gitignore", "*/.gitignore")
#: The longest model version description MLflow's SQL stores hold.
DESCRIPTION_MAX = 5000


def latest_runs(mlflow: Any, stages: tuple[str, ...] = LINKED_STAGES) -> dict[str, str]:
    """``{stage: run_id}`` of the latest finished run of each stage (by the ``wafersage.stage`` tag)."""
    out = {}
    for stage in stages:
        runs = mlflow.search_runs(
            experiment_names=[EXPERIMENT],
            filter_string=f"tags.`wafersage.stage` = '{stage}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if runs:
            out[stage] = runs[0].info.run_id
    return out


def input_example(image_size: int, seed: int) -> pd.DataFrame:
    """One synthetic wafer rendered at the model's size, as base64 PNG, with a type question."""
    row = generate(SyntheticConfig.from_dict({"n_wafers": 1, "seed": seed})).iloc[0]
    buf = io.BytesIO()
    render_map(decode_map(row["map"], row["rows"], row["cols"]), image_size).save(buf, format="PNG")
    return pd.DataFrame(
        {
            "image": [base64.b64encode(buf.getvalue()).decode()],
            "question": ["What defect pattern is on this wafer?"],
        }
    )


def requirements() -> list[str]:
    """Pinned requirements of the serving environment (no inference run)."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def lineage(lock: Path) -> dict[str, str]:
    """The version's lineage tags: ``dvc.<path>.md5`` of the outputs and inputs in ``lock``, and
    ``git.commit`` with ``git.dirty`` (uncommitted changes besides what ``dvc repro`` writes: the
    lock, ``.gitignore`` files and the stage outputs, whose hashes are tagged), absent outside a git
    repository."""
    tags = {f"dvc.{path}.md5": md5 for path, md5 in dvc_lock_hashes(lock).items()}
    commit = git_commit()
    if commit:
        outs = [str(Path(lock).parent / path) for path in dvc_lock_hashes(lock, inputs=False)]
        dirty = git_dirty([str(lock), *DVC_WRITES, *outs])
        tags[COMMIT_TAG] = commit
        if dirty is not None:
            tags[DIRTY_TAG] = str(dirty).lower()
    return tags


def model_params(params_file: Path) -> dict[str, Any]:
    """The :data:`MODEL_SECTIONS` of ``params_file`` that it has."""
    return {s: section for s in MODEL_SECTIONS if (section := load_section(s, params_file))}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON report's content (empty when absent)."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def description(card: str) -> str:
    """The card as a version description: cut to :data:`DESCRIPTION_MAX` characters if longer."""
    if len(card) <= DESCRIPTION_MAX:
        return card
    note = f"\n\n(cut: the whole card is {CARD_FILE} in the model folder)\n"
    return card[: DESCRIPTION_MAX - len(note)] + note


def carded_folder(model_dir: Path, card: str, dst: Path) -> Path:
    """A copy of ``model_dir`` as ``dst/<its name>`` with ``card`` as its ``README.md``."""
    folder = Path(shutil.copytree(model_dir, Path(dst) / model_dir.name))
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return folder


def package_source(dst: Path) -> Path:
    """A copy of the wafersage package's source (no bytecode) as ``dst/wafersage``."""
    src = Path(wafersage.__file__).parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    return Path(shutil.copytree(src, Path(dst) / "wafersage", ignore=ignore))


def model_items(items: Path, key: str) -> pd.DataFrame:
    """The evaluate stage's per-item rows of model ``key``."""
    df = read_parquet(items, "evaluation items", "run `dvc repro evaluate` first")
    rows = df[df["model"] == key].reset_index(drop=True)
    if rows.empty:
        raise WaferSageError(items, "no evaluation rows for the model", key)
    return rows


def run(
    params: dict[str, Any],
    model_dir: Path,
    items: Path,
    val_items: Path,
    metrics: Path,
    out: Path,
    lock: Path = Path("dvc.lock"),
    params_file: Path = Path("params.yaml"),
    ingest_metrics: Path = Path("reports/ingest/metrics.json"),
) -> dict[str, Any]:
    """Log, register and alias the model in ``model_dir``; write ``out`` (name, version, URIs).
    ``params_file`` gives the sections of :data:`MODEL_SECTIONS`, ``ingest_metrics`` the card's
    data counts."""
    from mlflow import MlflowClient

    from wafersage.modeling.model_folder import base_info, folder_sha256  # loads transformers
    from wafersage.serving import pyfunc_model
    from wafersage.serving.pyfunc import signature

    p = validated("register", params)
    model_dir = Path(model_dir)
    info = base_info(model_dir)
    key = model_dir.name
    logged_items = {ITEMS_ARTIFACT: model_items(items, key), SELECTION_ARTIFACT: model_items(val_items, key)}
    all_metrics = read_json(metrics)
    eval_metrics = all_metrics.get(key, {})
    name = str(p["model_name"])
    sections = model_params(params_file)
    lineage_tags = lineage(lock)
    card = model_card(
        all_metrics,
        key,
        name=name,
        info=info,
        params=sections,
        data_counts=read_json(ingest_metrics),
        lineage=lineage_tags,
    )
    with stage_run(
        "register",
        {"register": p, "source": key},
        inputs={"model": model_dir, "items": items, "val_items": val_items},
    ) as mlflow:
        linked = latest_runs(mlflow)
        flat = {k: float(v) for k, v in eval_metrics.items() if isinstance(v, int | float)}
        if flat:
            mlflow.log_metrics({f"eval_{k}": v for k, v in flat.items()})
        if sections:
            mlflow.log_text(yaml.safe_dump(sections, sort_keys=False), PARAMS_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            for artifact, rows in logged_items.items():
                local = Path(tmp) / Path(artifact).name
                rows.to_parquet(local, index=False)
                mlflow.log_artifact(str(local), artifact_path=str(Path(artifact).parent))
            folder = carded_folder(model_dir, card, Path(tmp) / "model")
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(pyfunc_model.__file__)),
                artifacts={MODEL_ARTIFACT: str(folder)},
                code_paths=[str(package_source(Path(tmp) / "code"))],
                signature=signature(),
                input_example=input_example(int(info.get("image_size", 96)), int(p["example_seed"])),
                pip_requirements=requirements(),
                model_config={"max_new_tokens": int(p["max_new_tokens"]), "batch_size": int(p["batch_size"])},
                registered_model_name=name,
            )
            sha256 = folder_sha256(folder)  # the folder as logged, card included
        version = str(logged.registered_model_version)
        run_id = mlflow.active_run().info.run_id
        tags = {f"wafersage.run.{s}": r for s, r in linked.items()}
        tags.update(lineage_tags)
        tags.update(
            {
                "model.md5": file_md5(model_dir),
                SHA256_TAG: sha256,
                "model.source": key,
                "model.base": str(info.get("base")),
                "wafersage.version": wafersage.__version__,
            }
        )
        tags.update({f"eval.{k}": str(v) for k, v in flat.items()})
        client = MlflowClient()
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
            mlflow.set_tag(k, v)
        client.update_model_version(name, version, description=description(card))
        client.set_registered_model_alias(name, CHALLENGER, version)
    record = {
        "model_name": name,
        "version": int(version),
        "alias": CHALLENGER,
        "run_id": run_id,
        "source": key,
        "uri": f"models:/{name}/{version}",
        "linked_runs": linked,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
