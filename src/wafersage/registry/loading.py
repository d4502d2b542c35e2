"""The MLflow model registry: loading a registered pyfunc (which runs its logged code), downloading
a version's model folder as files (which runs none), the names of the artifacts and tags a version
carries, and the ``dvc.lock`` hashes it is tagged with. The promotion rule is
:mod:`wafersage.registry.promotion`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from wafersage.errors import WaferSageError
from wafersage.tracking import setup

CHALLENGER, CHAMPION = "challenger", "champion"
ITEMS_ARTIFACT = "evaluation/items.parquet"
SELECTION_ARTIFACT = "evaluation/val_items.parquet"
#: The pyfunc's artifact holding the ``save_pretrained`` model folder.
MODEL_ARTIFACT = "model"
#: Model version tag pinning the model folder's content (``model_folder.folder_sha256``).
SHA256_TAG = "model.sha256"


def load_pyfunc(uri: str) -> Any:
    """``mlflow.pyfunc.load_model(uri)`` with a one-line error when it is not there."""
    from mlflow.exceptions import MlflowException

    mlflow = setup()
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise WaferSageError(
            uri, "cannot load the registered model", str(exc).splitlines()[0][:200]
        ) from None


@dataclass(frozen=True)
class RegisteredFolder:
    """A registered version's model folder, downloaded; what its MLmodel and tags say of it."""

    folder: Path
    uri: str  # the folder's artifact URI, models:/<name>/<version>/artifacts/<folder>
    config: dict[str, Any]
    sha256: str | None


def download_model_folder(uri: str, dst: Path) -> RegisteredFolder:
    """The ``model`` artifact folder of the version ``uri`` names (``models:/<name>@<alias>`` or
    ``models:/<name>/<version>``), downloaded into ``dst``. Only files are fetched and the MLmodel
    is read as YAML data: no code logged with the model is imported or run."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    setup()
    try:
        version = _model_version(MlflowClient(), uri)
        base = f"models:/{version.name}/{version.version}"
        mlmodel = mlflow.artifacts.download_artifacts(f"{base}/MLmodel", dst_path=str(dst / "meta"))
        flavor = _pyfunc_flavor(Path(mlmodel), uri)
        rel = _artifact_path(flavor, uri)
        folder = mlflow.artifacts.download_artifacts(f"{base}/{rel}", dst_path=str(dst / "model"))
    except (MlflowException, OSError) as exc:
        raise WaferSageError(
            uri, "cannot load the registered model", str(exc).splitlines()[0][:200]
        ) from None
    config = flavor.get("config") if isinstance(flavor.get("config"), dict) else {}
    return RegisteredFolder(Path(folder), f"{base}/{rel}", config, version.tags.get(SHA256_TAG))


def _model_version(client: Any, uri: str) -> Any:
    """The model version ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` names."""
    name, _, number = uri.removeprefix("models:/").partition("/")
    if uri.startswith("models:/") and "@" in name and not number:
        name, alias = name.rsplit("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if uri.startswith("models:/") and number.isdigit():
        return client.get_model_version(name, number)
    raise WaferSageError(
        uri, "not a registered model version", "use models:/<name>@<alias> or models:/<name>/<n>"
    )


def _pyfunc_flavor(mlmodel: Path, uri: str) -> dict[str, Any]:
    """The ``python_function`` flavour of an MLmodel file, read with ``yaml.safe_load``."""
    import yaml

    try:
        flavor = (yaml.safe_load(mlmodel.read_text()) or {})["flavors"]["python_function"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise WaferSageError(uri, "MLmodel has no python_function flavour", type(exc).__name__) from None
    if not isinstance(flavor, dict):
        raise WaferSageError(uri, "MLmodel has no python_function flavour")
    return flavor


def _artifact_path(flavor: dict[str, Any], uri: str) -> str:
    """The ``model`` artifact's path inside the logged model: under ``artifacts/``, no ``..``."""
    try:
        rel = str(flavor["artifacts"][MODEL_ARTIFACT]["path"])
    except (KeyError, TypeError):
        raise WaferSageError(uri, f"the logged model has no {MODEL_ARTIFACT!r} artifact") from None
    parts = PurePosixPath(rel).parts
    if len(parts) < 2 or parts[0] != "artifacts" or ".." in parts:
        raise WaferSageError(uri, "model artifact path leaves the logged model's artifacts/ folder", rel)
    return rel


def dvc_lock_hashes(lock: Path, inputs: bool = True) -> dict[str, str]:
    """``{path: md5}`` from ``dvc.lock`` (empty when absent): every stage's outputs and, with
    ``inputs``, the dependencies no stage writes (the pipeline's inputs: dvc-added data, expectation
    suites, the calibration folder), bar the package's source under ``src/``, which ``git.commit``
    pins."""
    import yaml

    if not Path(lock).exists():
        return {}
    stages = ((yaml.safe_load(Path(lock).read_text()) or {}).get("stages") or {}).values()
    outs = {str(o["path"]): str(o["md5"]) for s in stages for o in s.get("outs") or [] if "md5" in o}
    if not inputs:
        return outs
    deps = {str(d["path"]): str(d["md5"]) for s in stages for d in s.get("deps") or [] if "md5" in d}
    return {**outs, **{k: v for k, v in deps.items() if k not in outs and not k.startswith("src/")}}
