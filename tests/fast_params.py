"""The end-to-end test's params: ``tests/params_fast.yaml`` merged over the project's params.yaml.

Mappings merge key by key; any other value (lists included) replaces the default whole. Every
override must name a key params.yaml has, so a renamed or removed param cannot leave an override
that silently does nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wafersage.params import merged

FAST = Path(__file__).with_name("params_fast.yaml")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text()) or {}


def stale_keys(base: Any, overrides: Any, prefix: str = "") -> list[str]:
    """Dotted paths of ``overrides`` that ``base`` lacks (or where a mapping overrides a scalar).
    A list of mappings may only use keys that the default list's mappings use."""
    out: list[str] = []
    if not isinstance(base, dict):
        return [prefix.rstrip(".") or "<root>"]
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in base:
            out.append(path)
        elif isinstance(value, dict):
            out.extend(stale_keys(base[key], value, path + "."))
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            default = base[key] if isinstance(base[key], list) else []
            known = {k for v in default if isinstance(v, dict) for k in v}
            for i, item in enumerate(value):
                keys = item if isinstance(item, dict) else {}
                out.extend(f"{path}[{i}].{k}" for k in keys if k not in known)
    return out


def fast_params(params_yaml: Path) -> dict[str, Any]:
    """params.yaml with the fast overrides applied (refused when an override is stale)."""
    base, overrides = load(params_yaml), load(FAST)
    stale = stale_keys(base, overrides)
    if stale:
        raise KeyError(f"{FAST.name} overrides keys params.yaml does not have: {', '.join(stale)}")
    return merged(base, overrides)
