"""params.yaml access: each stage reads only its own section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wafersage.errors import WaferSageError

DEFAULT_PARAMS = Path("params.yaml")


def load_section(section: str, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The ``section`` mapping of params.yaml (empty when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise WaferSageError(path, "params file is not valid YAML", str(exc).splitlines()[0]) from None
    value = data.get(section, {})
    if not isinstance(value, dict):
        raise WaferSageError(path, f"section '{section}' must be a mapping")
    return value


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
