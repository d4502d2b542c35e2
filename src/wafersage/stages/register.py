"""register: log the trained model to MLflow as a pyfunc (checkpoint + processor folder as the
artifact, a signature and an input example), linked to its training runs (their run ids, found by
the ``wafersage.stage`` tag) and to the DVC data version (``dvc.lock`` hashes, the model folder's
MD5), with its per-item evaluation scores as evidence for ``wafersage promote``; registered under
``register.model_name`` with alias ``challenger``, the model folder's SHA-256 tagged on the version
(``ask`` and ``serve`` refuse a registered folder that no longer matches it). Writes
``reports/register/registered.json``."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from wafersage.atomic import atomic_path
from wafersage.config import validated
from wafersage.errors import WaferSageError, read_parquet
from wafersage.rawtable import decode_map
from wafersage.registry import (
    CHALLENGER,
    ITEMS_ARTIFACT,
    MODEL_ARTIFACT,
    SELECTION_ARTIFACT,
    SHA256_TAG,
    dvc_lock_hashes,
)
from wafersage.render import render_map
from wafersage.synthetic import SyntheticConfig, generate
from wafersage.tracking import EXPERIMENT, file_md5, stage_run

#: Training-graph stages whose latest run ids are tagged on the model version.
LINKED_STAGES = ("pretrain_vision", "init_model", "sft", "gspo", "align", "evaluate")
REQUIREMENTS = ("torch", "transformers", "mlflow", "pandas", "pillow", "numpy")


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
) -> dict[str, Any]:
    """Log, register and alias the model in ``model_dir``; write ``out`` (name, version, URIs)."""
    from mlflow import MlflowClient

    from wafersage.modeling.model_folder import base_info, folder_sha256  # loads transformers
    from wafersage.serving import pyfunc_model
    from wafersage.serving.pyfunc import signature

    p = validated("register", params)
    model_dir = Path(model_dir)
    info = base_info(model_dir)
    key = model_dir.name
    logged_items = {ITEMS_ARTIFACT: model_items(items, key), SELECTION_ARTIFACT: model_items(val_items, key)}
    eval_metrics = json.loads(Path(metrics).read_text()).get(key, {}) if Path(metrics).exists() else {}
    name = str(p["model_name"])
    with stage_run(
        "register",
        {"register": p, "source": key},
        inputs={"model": model_dir, "items": items, "val_items": val_items},
    ) as mlflow:
        linked = latest_runs(mlflow)
        with tempfile.TemporaryDirectory() as tmp:
            for artifact, rows in logged_items.items():
                local = Path(tmp) / Path(artifact).name
                rows.to_parquet(local, index=False)
                mlflow.log_artifact(str(local), artifact_path=str(Path(artifact).parent))
        flat = {k: float(v) for k, v in eval_metrics.items() if isinstance(v, int | float)}
        if flat:
            mlflow.log_metrics({f"eval_{k}": v for k, v in flat.items()})
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(pyfunc_model.__file__)),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            signature=signature(),
            input_example=input_example(int(info.get("image_size", 96)), int(p["example_seed"])),
            pip_requirements=requirements(),
            model_config={"max_new_tokens": int(p["max_new_tokens"]), "batch_size": int(p["batch_size"])},
            registered_model_name=name,
        )
        version = str(logged.registered_model_version)
        run_id = mlflow.active_run().info.run_id
        tags = {f"wafersage.run.{s}": r for s, r in linked.items()}
        tags.update({f"dvc.{path}.md5": md5 for path, md5 in dvc_lock_hashes(lock).items()})
        tags.update(
            {
                "model.md5": file_md5(model_dir),
                SHA256_TAG: folder_sha256(model_dir),
                "model.source": key,
                "model.base": str(info.get("base")),
            }
        )
        tags.update({f"eval.{k}": str(v) for k, v in flat.items()})
        client = MlflowClient()
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
            mlflow.set_tag(k, v)
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
