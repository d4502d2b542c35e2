"""Loading from the registry runs no code from it: ``load_predictor`` / ``from_registry`` read the
registered model folder as data (an allowlist of file kinds, then the version's ``model.sha256``
pin), while MLflow's own pyfunc loader, the control, runs the logged code."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from factories import with_center
from test_registry import _register, items
from tiny_model import SIZE, build_tiny_model

from wafersage.errors import WaferSageError
from wafersage.modeling.model_folder import NOT_ALLOWED, checked_files, folder_sha256, plain_files
from wafersage.registry.loading import SHA256_TAG, load_pyfunc
from wafersage.serving.predictor import Predictor, from_registry, load_predictor
from wafersage.wafers.render import render_map

NAME = "trust-test"
QUESTION = "What type of defect pattern is visible on this wafer map?"
TINY_FILES = [
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "wafersage.json",
]


class WritesMarker:
    """Unpickling it writes ``path``: a pickle that shows whether anything loaded it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A sqlite registry in a fresh folder and the tiny model folder that gets registered."""
    root = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root, build_tiny_model(root / "models" / "sft", stage="sft")


def fresh_version(registry) -> tuple[str, Path]:
    """``models:/<NAME>/<n>`` of a newly registered version, and its logged model in the store."""
    from mlflow import MlflowClient

    root, model = registry
    version = str(_register(root, model, items(), name=NAME)["version"])
    store = urlparse(MlflowClient().get_model_version_download_uri(NAME, version)).path
    return f"models:/{NAME}/{version}", Path(store)


def test_tampered_logged_code_is_never_run_by_serve_and_ask(registry, tmp_path):
    from mlflow import MlflowClient

    uri, store = fresh_version(registry)
    MlflowClient().set_registered_model_alias(NAME, "champion", uri.rsplit("/", 1)[1])
    marker = tmp_path / "ran"
    code = store / "pyfunc_model.py"
    code.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n" + code.read_text())

    pred = load_predictor(None, NAME)  # what `serve` and `ask` load by default
    image = render_map(with_center(40), SIZE)
    local = Predictor(registry[1], max_new_tokens=4)
    assert pred.answer([image], [QUESTION]) == local.answer([image], [QUESTION])
    assert (pred.batch_size, pred.max_new_tokens, pred.name) == (16, 4, "sft")  # the pyfunc's config
    assert load_predictor(uri, None, batch_size=2).batch_size == 2
    assert not marker.exists()

    load_pyfunc(f"models:/{NAME}@champion")  # the control: MLflow's loader runs the tampered code
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    "name", ["evil.pkl", "pytorch_model.bin", "optimizer.pt", "modeling_wafer.py", "specialist/x.pkl"]
)
def test_a_file_outside_the_allowlist_is_refused_before_loading(registry, tmp_path, name):
    uri, store = fresh_version(registry)
    marker = tmp_path / "unpickled"
    dropped = store / "artifacts" / "sft" / name
    dropped.parent.mkdir(exist_ok=True)
    dropped.write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(WaferSageError) as err:
        from_registry(uri)
    assert err.value.file == f"{uri}/artifacts/sft/{name}" and err.value.rule == NOT_ALLOWED
    assert str(err.value).startswith(f"{uri}/artifacts/sft/{name}: {NOT_ALLOWED} (allowed: .json ")
    assert "\n" not in str(err.value) and not marker.exists()


def test_changed_weights_and_a_missing_pin_are_refused(registry):
    import torch
    from mlflow import MlflowClient
    from safetensors.torch import load_file, save_file

    uri, store = fresh_version(registry)
    logged = store / "artifacts" / "sft"  # the model folder with its card, README.md
    assert MlflowClient().get_model_version(NAME, uri.rsplit("/", 1)[1]).tags[SHA256_TAG] == folder_sha256(
        logged
    )
    assert plain_files(logged) == sorted([*TINY_FILES, "README.md"])
    weights = logged / "model.safetensors"
    state = load_file(str(weights))
    first = sorted(state)[0]
    state[first] = state[first] + torch.ones_like(state[first])  # still a valid safetensors file
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(
        WaferSageError, match=r"model files differ from the registered model\.sha256 \("
    ) as err:
        from_registry(uri)
    assert err.value.file == f"{uri}/artifacts/sft"

    uri, _ = fresh_version(registry)
    MlflowClient().delete_model_version_tag(NAME, uri.rsplit("/", 1)[1], SHA256_TAG)
    with pytest.raises(WaferSageError, match=r"registered version has no model\.sha256 tag"):
        from_registry(uri)


def test_an_artifact_path_leaving_the_logged_model_is_refused(registry):
    uri, store = fresh_version(registry)
    mlmodel = store / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("path: artifacts/sft", "path: artifacts/../../../sft"))
    with pytest.raises(WaferSageError) as err:
        from_registry(uri)
    assert str(err.value) == (
        f"{uri}: model artifact path leaves the logged model's artifacts/ folder (artifacts/../../../sft)"
    )
    with pytest.raises(WaferSageError, match="not a registered model version"):
        from_registry(f"models:/{NAME}")


def test_the_allowlist_passes_a_real_model_folder_and_refuses_links(registry, tmp_path):
    folder = shutil.copytree(registry[1], tmp_path / "m")
    assert checked_files(folder) == TINY_FILES
    for f in ("specialist.json", "specialist.safetensors", "trees.skops"):
        (folder / "specialist").mkdir(exist_ok=True)
        (folder / "specialist" / f).write_text("{}")
    specialist = ["specialist/specialist.json", "specialist/specialist.safetensors", "specialist/trees.skops"]
    assert checked_files(folder) == sorted(TINY_FILES + specialist)
    (folder / "trees.skops").write_text("{}")  # skops only as the specialist's trees
    with pytest.raises(WaferSageError, match=f"trees.skops: {NOT_ALLOWED}"):
        checked_files(folder)
    (folder / "trees.skops").unlink()
    (folder / "vocab.json").symlink_to("/etc/hostname")
    with pytest.raises(WaferSageError, match="vocab.json: symlink in a model folder$"):
        plain_files(folder, "models:/x/1/artifacts/m")
    (folder / "vocab.json").unlink()
    os.mkfifo(folder / "merges.txt")
    with pytest.raises(WaferSageError, match="merges.txt: not a plain file in a model folder$"):
        checked_files(folder)


def test_weights_load_through_safetensors_only(registry, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = shutil.copytree(registry[1], tmp_path / "m")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(WaferSageError, match="cannot load the model .*model.safetensors"):
        Predictor(folder)
