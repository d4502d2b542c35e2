"""Offline, quiet defaults for every entry point: no telemetry, no hub downloads."""

from __future__ import annotations

import os

#: Set unless the user already chose otherwise.
DEFAULTS: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_defaults() -> None:
    """Put :data:`DEFAULTS` into ``os.environ`` where a variable is not set yet."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
