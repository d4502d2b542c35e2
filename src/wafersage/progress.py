"""What a running stage tells its user: log records through :mod:`logging` and progress bars, both
governed by one level (``wafersage --log-level`` or ``WAFERSAGE_LOG_LEVEL``; default INFO). Bars
show at INFO and below, so ``WARNING`` is the quiet setting CI uses."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from wafersage.errors import WaferSageError

LEVEL_ENV = "WAFERSAGE_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG = logging.getLogger("wafersage")

T = TypeVar("T")


def configure(level: str | None = None) -> str:
    """Send the project's log records to stderr at ``level`` (else ``$WAFERSAGE_LOG_LEVEL``, else
    INFO); the level is exported so child processes (dvc stages, workers) follow it."""
    name = (level or os.environ.get(LEVEL_ENV) or "INFO").strip().upper()
    if name not in LEVELS:
        raise WaferSageError("--log-level", f"must be one of {', '.join(LEVELS)}", name)
    os.environ[LEVEL_ENV] = name
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(name)
    LOG.propagate = False
    return name


def bars_enabled() -> bool:
    """Whether progress bars show: the level is INFO or more verbose."""
    return LOG.getEffectiveLevel() <= logging.INFO


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` with a tqdm bar on stderr (none when :func:`bars_enabled` is false)."""
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=not bars_enabled(), mininterval=1.0)
