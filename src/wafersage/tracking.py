"""MLflow tracking, wired once for every stage: one run a stage, params, data hashes, counts."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wafersage.environment import apply_defaults

apply_defaults()

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = Path("mlartifacts")
EXPERIMENT = os.environ.get("WAFERSAGE_EXPERIMENT", "wafersage")


def file_md5(path: str | Path) -> str:
    """MD5 of a file, or of a directory's files (sorted relative paths and contents), as DVC
    identifies data."""
    path = Path(path)
    h = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _git(*args: str) -> str | None:
    """Output of ``git <args>`` in the working directory; None without git or outside a repository."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """HEAD's commit of the repository holding the working directory (None outside one)."""
    return (_git("rev-parse", "HEAD") or "").strip() or None


def git_dirty(exclude: Iterable[str] = ()) -> bool | None:
    """Whether the working directory differs from HEAD: changed, staged or untracked files (ignored
    ones aside), but for the paths ``exclude`` names (git pathspecs); None outside a repository."""
    spec = [f":(exclude){p}" for p in exclude]
    out = _git("status", "--porcelain", "--untracked-files=all", "--", ".", *spec)
    return None if out is None else bool(out.strip())


def setup() -> Any:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the repo's sqlite store; return the module."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
            location = DEFAULT_ARTIFACTS.resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


@contextmanager
def stage_run(
    stage: str, params: dict[str, Any], inputs: dict[str, str | Path] | None = None
) -> Iterator[Any]:
    """An MLflow run named after the stage, with its params and the MD5 of each input; yields the
    ``mlflow`` module so the stage can log metrics and artifacts."""
    mlflow = setup()
    with mlflow.start_run(run_name=stage, nested=mlflow.active_run() is not None):
        mlflow.set_tag("wafersage.stage", stage)
        commit = git_commit()
        if commit:
            mlflow.set_tag("git.commit", commit)
        flat = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(params).items()}
        if flat:
            mlflow.log_params(flat)
        for name, p in (inputs or {}).items():
            if Path(p).exists():
                mlflow.set_tag(f"data.{name}.md5", file_md5(p))
        yield mlflow


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys (for MLflow)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
