"""Atomic outputs: write to temporary siblings, commit them together on success, remove them on
failure.

A stage's outputs are all written before any is committed, so an error leaves every old output in
place. A directory output is swapped in by renames: the old one is moved aside, the new one renamed
in, and only then is the old one deleted (if the rename fails, the old one is put back). Temporary
siblings left by a killed run (``.<name>.tmp-*``) are removed the next time the output is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: One output: its path and whether it is a directory.
Output = tuple[str | Path, bool]


def _prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _clear_stale(path: Path) -> None:
    """Remove the temporary siblings an earlier, killed run left beside ``path``."""
    for stale in path.parent.glob(_prefix(path) + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _commit(target: Path, path: Path, directory: bool) -> None:
    """Move ``target`` to ``path``; an old directory at ``path`` is deleted only once it is replaced."""
    if directory:  # mkdtemp makes a private folder; give the output the usual mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(target, 0o777 & ~umask)
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(target, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=_prefix(path), dir=path.parent)) / "old"
    os.replace(path, aside)
    try:
        os.replace(target, path)
    except OSError:
        os.replace(aside, path)
        raise
    shutil.rmtree(aside.parent, ignore_errors=True)


@contextmanager
def atomic_outputs(*outputs: Output) -> Iterator[list[Path]]:
    """Yield a temporary path for each ``(path, is_directory)``; when the block succeeds they
    replace their outputs one after another, when it fails they are deleted and every old output
    stays as it was."""
    paths = [Path(p) for p, _ in outputs]
    temps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale(path)
            temps.append(Path(tempfile.mkdtemp(prefix=_prefix(path), dir=path.parent)))
        targets = [
            tmp if directory else tmp / path.name
            for tmp, path, (_, directory) in zip(temps, paths, outputs, strict=True)
        ]
        yield targets
        for target, path, (_, directory) in zip(targets, paths, outputs, strict=True):
            _commit(target, path, directory)
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """:func:`atomic_outputs` of one output: a temporary path that replaces ``path`` on success."""
    with atomic_outputs((path, directory)) as (target,):
        yield target
