"""Atomic outputs: committed together, old directories kept until replaced, stale temps cleared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wafersage import atomic
from wafersage.atomic import atomic_outputs, atomic_path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _old_outputs(tmp_path: Path) -> tuple[Path, Path]:
    folder, file = tmp_path / "model", tmp_path / "metrics.json"
    folder.mkdir()
    (folder / "weights").write_text("old weights")
    file.write_text("old metrics")
    return folder, file


def test_outputs_replace_the_old_ones_together_and_leave_no_temporary(tmp_path):
    folder, file = _old_outputs(tmp_path)
    with atomic_outputs((folder, True), (file, False)) as (new_folder, new_file):
        (new_folder / "weights").write_text("new weights")
        new_file.write_text("new metrics")
        assert file.read_text() == "old metrics"  # nothing is committed before the block ends
    assert _tree(folder) == {"weights": "new weights"} and file.read_text() == "new metrics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]


def test_an_error_in_the_block_keeps_every_old_output(tmp_path):
    folder, file = _old_outputs(tmp_path)
    with pytest.raises(RuntimeError), atomic_outputs((folder, True), (file, False)) as (new_folder, new_file):
        (new_folder / "weights").write_text("new weights")
        new_file.write_text("new metrics")
        raise RuntimeError("crash after writing both")
    assert _tree(folder) == {"weights": "old weights"} and file.read_text() == "old metrics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]


def test_the_old_directory_is_put_back_when_the_new_one_cannot_be_renamed_in(tmp_path, monkeypatch):
    folder, _ = _old_outputs(tmp_path)
    real_replace, calls = os.replace, []

    def failing_second_rename(src, dst):
        calls.append((Path(src), Path(dst)))
        if len(calls) == 2:  # old moved aside, then the new one fails to land
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk full"), atomic_path(folder, directory=True) as new:
        (new / "weights").write_text("new weights")
    assert _tree(folder) == {"weights": "old weights"}
    assert calls[0][0] == folder and calls[1][1] == folder


def test_temporaries_a_killed_run_left_are_cleared_at_the_next_write(tmp_path):
    file = tmp_path / "metrics.json"
    stale_dir = tmp_path / ".metrics.json.tmp-abc123"
    stale_dir.mkdir()
    (stale_dir / "metrics.json").write_text("half written")
    other = tmp_path / ".other.json.tmp-abc123"  # another output's temporary is not touched
    other.mkdir()
    with atomic_path(file) as tmp:
        tmp.write_text("done")
    assert file.read_text() == "done" and not stale_dir.exists() and other.exists()
