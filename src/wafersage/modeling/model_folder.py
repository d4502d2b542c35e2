"""A model folder: ``save_pretrained`` model + processor and ``wafersage.json``, the record of what
was built (written by init_model, carried forward by SFT and GSPO, read by every stage and the
server that loads the model); the allowlist a folder from elsewhere (the registry) must pass before
anything in it is read, and its content hash."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from wafersage.errors import WaferSageError

#: Written beside the model: the base's kind and image size (read by later stages).
BASE_INFO = "wafersage.json"
#: File kinds a checked model folder may hold, all read as data: configs and tokenizers (JSON,
#: text, sentencepiece ``.model``), the chat template, safetensors weights and a model card.
ALLOWED_SUFFIXES = (".json", ".safetensors", ".txt", ".jinja", ".model", ".md")
#: Files allowed by their path: the specialist's trees (skops, loaded with a fixed trusted-type list).
ALLOWED_FILES = ("specialist/trees.skops",)
NOT_ALLOWED = "file kind not allowed in a model folder"


def base_info(model_dir: str | Path) -> dict[str, Any]:
    """``wafersage.json`` of a model folder written by init_model (or a stage after it)."""
    path = Path(model_dir) / BASE_INFO
    if not path.exists():
        raise WaferSageError(path, "not a wafersage model folder", "run `wafersage init-model` first")
    return json.loads(path.read_text())


def plain_files(folder: str | Path, label: str | None = None) -> list[str]:
    """The relative POSIX paths of the files under ``folder``, sorted; a symlink, or anything else
    that is neither a plain file nor a folder, is refused (nothing can point outside ``folder``).
    Errors name a file as ``<label>/<relative path>`` (``label``: the folder by default)."""
    folder = Path(folder)
    out = []
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            rel = (Path(top) / name).relative_to(folder).as_posix()
            mode = (folder / rel).lstat().st_mode
            if stat.S_ISLNK(mode):
                raise WaferSageError(f"{label or folder}/{rel}", "symlink in a model folder")
            if stat.S_ISREG(mode):
                out.append(rel)
            elif not stat.S_ISDIR(mode):
                raise WaferSageError(f"{label or folder}/{rel}", "not a plain file in a model folder")
    return sorted(out)


def checked_files(folder: str | Path, label: str | None = None) -> list[str]:
    """:func:`plain_files` of ``folder``, each of an allowed kind (:data:`ALLOWED_SUFFIXES`,
    :data:`ALLOWED_FILES`); anything else (a pickle, ``.bin``, ``.pt``, ``.py``, ...) is refused."""
    files = plain_files(folder, label)
    for rel in files:
        if not rel.endswith(ALLOWED_SUFFIXES) and rel not in ALLOWED_FILES:
            raise WaferSageError(
                f"{label or folder}/{rel}",
                NOT_ALLOWED,
                "allowed: " + " ".join(ALLOWED_SUFFIXES + ALLOWED_FILES),
            )
    return files


def folder_sha256(folder: str | Path) -> str:
    """SHA-256 of a folder's content: of one ``<sha256 of the file> <relative path>`` line a file,
    sorted by path (symlinks followed: the registry stores their targets' bytes)."""
    folder = Path(folder)
    lines = []
    for rel in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(folder / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        lines.append(f"{h.hexdigest()} {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
