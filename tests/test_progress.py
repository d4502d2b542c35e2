"""One level for log records and progress bars: ``wafersage --log-level`` / ``WAFERSAGE_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wafersage import progress
from wafersage.cli import app
from wafersage.errors import WaferSageError
from wafersage.params import load_section
from wafersage.stages.sft import _training_args


@pytest.fixture(autouse=True)
def _restore_level(monkeypatch):
    monkeypatch.setenv(progress.LEVEL_ENV, os.environ.get(progress.LEVEL_ENV, "WARNING"))
    yield
    progress.LOG.setLevel(logging.NOTSET)
    progress.LOG.handlers.clear()
    progress.LOG.propagate = True


def test_bars_and_records_follow_the_level(capsys):
    assert progress.configure("info") == "INFO" and os.environ[progress.LEVEL_ENV] == "INFO"
    list(progress.progress(range(3), "counting maps"))
    progress.LOG.info("stage started")
    err = capsys.readouterr().err
    assert "counting maps" in err and "3/3" in err and "INFO wafersage: stage started" in err
    progress.configure("WARNING")
    assert list(progress.progress(range(3), "counting maps")) == [0, 1, 2]
    progress.LOG.info("stage started")
    assert capsys.readouterr().err == ""


def test_the_environment_sets_the_level_and_a_bad_level_is_one_line(monkeypatch):
    monkeypatch.setenv(progress.LEVEL_ENV, "debug")
    assert progress.configure() == "DEBUG" and progress.bars_enabled()
    with pytest.raises(WaferSageError, match="must be one of DEBUG, INFO, WARNING, ERROR"):
        progress.configure("LOUD")


def test_cli_option_sets_the_level_for_every_command(tmp_path: Path):
    np.save(tmp_path / "m.npy", np.ones((8, 8), dtype=np.uint8))
    args = ["render", str(tmp_path / "m.npy"), str(tmp_path / "m.png"), "--size", "32"]
    r = CliRunner().invoke(app, ["--log-level", "error", *args])
    assert r.exit_code == 0 and os.environ[progress.LEVEL_ENV] == "ERROR" and not progress.bars_enabled()
    r = CliRunner().invoke(app, ["--log-level", "LOUD", *args])
    assert r.exit_code != 0 and isinstance(r.exception, WaferSageError)


@pytest.mark.parametrize(("level", "disabled"), [("INFO", False), ("WARNING", True)])
def test_trl_progress_bars_follow_the_level(tmp_path: Path, level: str, disabled: bool):
    progress.configure(level)
    args = _training_args(load_section("sft", Path("params.yaml")), tmp_path, has_eval=False)
    assert args.disable_tqdm is disabled
