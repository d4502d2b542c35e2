"""The one error the CLI turns into a one-line message and a non-zero exit (and the Parquet and
JSON lines readers that raise it for a missing or unreadable file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class WaferSageError(Exception):
    """Bad input or a failed gate: names the file, the row (where there is one) and the rule."""

    def __init__(self, file: str | Path | None, rule: str, detail: str = "", row: object = None):
        self.file, self.rule, self.detail, self.row = file, rule, detail, row
        parts = [str(file) if file is not None else "<input>"]
        if row is not None:
            parts.append(f"row {row}")
        parts.append(rule)
        msg = ": ".join(parts)
        if detail:
            msg += f" ({detail})"
        super().__init__(msg.replace("\n", " "))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Rebuilt from its parts, so the error crosses a process boundary intact."""
        return type(self), (self.file, self.rule, self.detail, self.row)


def read_parquet(path: str | Path, what: str, hint: str | None = None) -> pd.DataFrame:
    """``path`` as a DataFrame; a missing or unreadable file is a one-line :class:`WaferSageError`
    naming ``what`` it should have been (``hint``: how to make it)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise WaferSageError(path, f"{what} not found", hint or "")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable parquet is the same bad input
        raise WaferSageError(path, f"{what} is not a readable Parquet file", type(exc).__name__) from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """JSON lines; a missing file or a bad line raises one line naming the row."""
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "file not found")
    out = []
    with open(path) as fh:
        for i, line in enumerate(fh):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise WaferSageError(path, "invalid JSON line", str(exc), row=i) from None
    return out
