"""The one error the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


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
