"""params.yaml access: each stage reads only its own section, typed by :mod:`wafersage.config`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from wafersage.config import PROFILE_KEYS, SECTIONS, validated
from wafersage.errors import WaferSageError

DEFAULT_PARAMS = Path("params.yaml")


def load_section(section: str, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The ``section`` of params.yaml with the preset of the file's ``profile`` merged over it
    (:func:`with_profile`), validated, with every default filled in (all defaults when the file or
    the section is absent). A bad value, an unknown key or an unknown section anywhere in the
    file's top level is a one-line :class:`WaferSageError`."""
    path = Path(path)
    data: Any = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise WaferSageError(path, "params file is not valid YAML", str(exc).splitlines()[0]) from None
    if not isinstance(data, dict):
        raise WaferSageError(path, "params file must be a mapping of sections")
    unknown = sorted(str(k) for k in set(data) - set(SECTIONS) - set(PROFILE_KEYS))
    if unknown:
        raise WaferSageError(path, "invalid params", "; ".join(f"{k}: unknown section" for k in unknown))
    value = data.get(section)
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise WaferSageError(path, f"section '{section}' must be a mapping")
    return validated(section, with_profile(data, section, value, path), path)


def with_profile(
    data: dict[str, Any], section: str, value: dict[str, Any], path: str | Path
) -> dict[str, Any]:
    """``value`` (params ``section``) with ``profiles[profile][section]`` merged over it: mappings key
    by key, anything else (lists included) replaced whole. No ``profile``: ``value`` as it is."""
    name = data.get("profile")
    if name is None:
        return value
    presets = data.get("profiles") or {}
    if not isinstance(presets, dict) or name not in presets:
        raise WaferSageError(
            path, "profile must name a preset of profiles", f"{name!r}; have {sorted(presets)}"
        )
    preset = presets[name] or {}
    if not isinstance(preset, dict) or not isinstance(preset.get(section, {}), dict):
        raise WaferSageError(path, f"profiles.{name} must map sections to mappings", repr(preset)[:80])
    return merged(value, preset.get(section) or {})


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` over a deep copy of ``base``: mappings key by key, any other value (lists included)
    replaced whole."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out
