"""A model folder (``save_pretrained`` model + processor + ``wafersage.json``) ready to answer
questions about wafer images; or the registry's champion, downloaded through MLflow and loaded as
data: its files checked against an allowlist and its registered SHA-256, no logged code run."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wafersage.errors import WaferSageError
from wafersage.modeling.generate import generate_answers
from wafersage.modeling.greedy import AnswerDrafts
from wafersage.modeling.model_folder import base_info, checked_files, folder_sha256
from wafersage.modeling.processor import load_processor
from wafersage.modeling.specialist import grounder_of
from wafersage.registry.loading import SHA256_TAG, download_model_folder
from wafersage.wafers import taxonomy
from wafersage.wafers.render import DEFAULT_SIZE

CHAMPION = "champion"


class Predictor:
    """Greedy, batched answers from one model folder (thread-safe: one generation at a time)."""

    def __init__(self, folder: str | Path, batch_size: int = 16, max_new_tokens: int = 48) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        self.folder = Path(folder)
        if not (self.folder / "config.json").exists():
            raise WaferSageError(self.folder, "not a model folder (no config.json)")
        info = base_info(self.folder)
        self.info = info
        taxonomy.activate(info.get("taxonomy"))  # its classes (none recorded: WM-811K)
        self.image_size = int(info.get("image_size", DEFAULT_SIZE))
        self.grounder = grounder_of(self.folder, info)
        self.grounding = self.grounder.mode
        self.batch_size, self.max_new_tokens = int(batch_size), int(max_new_tokens)
        self.processor = load_processor(self.folder)
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                str(self.folder),
                dtype=getattr(torch, info.get("dtype", "float32")),
                local_files_only=True,
                use_safetensors=True,  # never a pickled .bin
                trust_remote_code=False,
            )
        except (OSError, ValueError) as exc:
            raise WaferSageError(self.folder, "cannot load the model", str(exc).splitlines()[0]) from None
        self.model.eval()
        self.name = str(info.get("stage", self.folder.name))
        self._lock = threading.Lock()
        self._drafts = AnswerDrafts()  # drafts from every answer this model gave

    def answer(
        self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int | None = None
    ) -> list[str]:
        """Answers to ``questions`` about ``images`` (PIL images at :attr:`image_size`)."""
        if len(images) != len(questions):
            raise ValueError("images and questions differ in length")
        if not questions:
            return []
        with self._lock:
            return generate_answers(
                self.model,
                self.processor,
                list(images),
                [str(q) for q in questions],
                self.batch_size,
                int(max_new_tokens or self.max_new_tokens),
                self.grounder,
                self._drafts,
            )

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer (for usage reports)."""
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def registry_uri(model_name: str, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``."""
    return f"models:/{model_name}@{alias}"


def load_predictor(model: str | Path | None, model_name: str | None, **kw: Any) -> Predictor:
    """A local folder when ``model`` is given (a path, or a ``models:/`` URI), else the registry's
    ``models:/<model_name>@champion``."""
    if model is not None and not str(model).startswith("models:/"):
        return Predictor(model, **kw)
    uri = str(model) if model is not None else registry_uri(_require(model_name))
    return from_registry(uri, **kw)


def _require(model_name: str | None) -> str:
    if not model_name:
        raise WaferSageError("params.yaml", "no model given and register.model_name is not set")
    return model_name


def from_registry(uri: str, **kw: Any) -> Predictor:
    """The model folder of the registered version ``uri`` names, loaded as data: only allowlisted
    file kinds (``model_folder.checked_files``) whose content matches the version's ``model.sha256``
    tag; the pyfunc's logged code is never imported. ``kw`` overrides the pyfunc's model config."""
    with tempfile.TemporaryDirectory(prefix="wafersage-registry-") as tmp:
        registered = download_model_folder(uri, Path(tmp))
        checked_files(registered.folder, registered.uri)
        _verify_sha256(registered.folder, registered.sha256, registered.uri)
        config = _generation_config(registered.config, registered.uri)
        return Predictor(registered.folder, **{**config, **kw})


def _generation_config(config: dict[str, Any], source: str) -> dict[str, int]:
    """``batch_size`` and ``max_new_tokens`` of the pyfunc's model config, as integers."""
    try:
        return {k: int(config[k]) for k in ("batch_size", "max_new_tokens") if k in config}
    except (TypeError, ValueError):
        raise WaferSageError(
            source, "batch_size and max_new_tokens must be integers", str(config)[:100]
        ) from None


def _verify_sha256(folder: Path, expected: str | None, source: str) -> None:
    """Refuse ``folder`` unless its :func:`folder_sha256` is ``expected``."""
    if not expected:
        raise WaferSageError(source, f"registered version has no {SHA256_TAG} tag", "register it again")
    actual = folder_sha256(folder)
    if actual != expected:
        raise WaferSageError(
            source,
            f"model files differ from the registered {SHA256_TAG}",
            f"{actual[:12]} != {expected[:12]}",
        )
