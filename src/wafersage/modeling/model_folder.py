"""A model folder: ``save_pretrained`` model + processor and ``wafersage.json``, the record of what
was built (written by init_model, carried forward by SFT and GSPO, read by every stage and the
server that loads the model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wafersage.errors import WaferSageError

#: Written beside the model: the base's kind and image size (read by later stages).
BASE_INFO = "wafersage.json"


def base_info(model_dir: str | Path) -> dict[str, Any]:
    """``wafersage.json`` of a model folder written by init_model (or a stage after it)."""
    path = Path(model_dir) / BASE_INFO
    if not path.exists():
        raise WaferSageError(path, "not a wafersage model folder", "run `wafersage init-model` first")
    return json.loads(path.read_text())
