"""Answering in forked worker processes: the serial answers, in order, from other processes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from factories import disc, with_center
from tiny_model import build_tiny_model

from wafersage.errors import WaferSageError
from wafersage.serving.workers import answer_in_workers, shares

QUESTION = "What type of defect pattern is visible on this wafer map?"


class EchoPredictor:
    """Answers name the question, the answering process, its torch threads and its batch's length."""

    batch_size = 2

    def answer(self, images, questions):
        import torch

        return [f"{q}|{os.getpid()}|{torch.get_num_threads()}|{len(images)}" for q in questions]


class FailingPredictor(EchoPredictor):
    def answer(self, images, questions):
        if "q5" in questions:
            raise WaferSageError("m5.npy", "map is empty", "all dies off", row=5)
        return super().answer(images, questions)


def test_shares_are_whole_batches_covering_every_map_once():
    assert shares(10, 3, 2) == [(0, 6), (6, 10)]
    assert shares(7, 2, 8) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert shares(3, 16, 4) == [(0, 3)]
    for n, b, p in [(100, 7, 3), (64, 16, 8), (1, 1, 1)]:
        got = shares(n, b, p)
        assert [s for s, _ in got[1:]] == [e for _, e in got[:-1]] and got[0][0] == 0 and got[-1][1] == n
        assert all(s % b == 0 for s, _ in got)


def test_workers_answer_in_order_in_other_processes_with_their_share_of_the_cores(monkeypatch):
    from wafersage.serving import workers

    monkeypatch.setattr(workers, "cores", lambda: 4)
    questions = [f"q{i}" for i in range(9)]
    got = [a.split("|") for a in answer_in_workers(EchoPredictor(), [None] * 9, questions, 2)]
    assert [q for q, *_ in got] == questions
    assert {pid for _, pid, _, _ in got}.isdisjoint({str(os.getpid())})
    assert {threads for _, _, threads, _ in got} == {"2"}
    assert [int(n) for *_, n in got] == [2] * 8 + [1]  # the serial path's batches
    pinned = answer_in_workers(EchoPredictor(), [None] * 9, questions, 2, threads=3)
    assert {a.split("|")[2] for a in pinned} == {"3"}
    serial = answer_in_workers(EchoPredictor(), [None] * 9, questions, 1)
    assert {a.split("|")[1] for a in serial} == {str(os.getpid())}


def test_a_workers_error_reaches_the_caller_whole():
    with pytest.raises(WaferSageError) as err:
        answer_in_workers(FailingPredictor(), [None] * 9, [f"q{i}" for i in range(9)], 3)
    assert str(err.value) == "m5.npy: row 5: map is empty (all dies off)"
    assert (err.value.file, err.value.rule, err.value.row) == ("m5.npy", "map is empty", 5)
    with pytest.raises(WaferSageError, match="workers must be at least 1"):
        answer_in_workers(EchoPredictor(), [None], ["q"], 0)


def test_several_workers_without_fork_is_a_one_line_error(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(
        WaferSageError,
        match=r"^<input>: answering in several workers needs fork \(Linux\) \(use one worker\)$",
    ):
        answer_in_workers(EchoPredictor(), [None] * 9, [f"q{i}" for i in range(9)], 2)
    assert len(answer_in_workers(EchoPredictor(), [None] * 9, [f"q{i}" for i in range(9)], 1)) == 9


@pytest.fixture
def logger_kept(monkeypatch):
    """The project's logger and level variable put back after a test that sets ``--log-level``."""
    from wafersage import progress

    monkeypatch.setenv(progress.LEVEL_ENV, os.environ.get(progress.LEVEL_ENV, "WARNING"))
    log = progress.LOG
    kept = log.level, log.handlers[:], log.propagate
    yield
    log.setLevel(kept[0])
    log.handlers[:], log.propagate = kept[1], kept[2]


def _lively_model(folder):
    """A tiny model folder with its weight matrices scaled up, so its answers differ by map."""
    import torch
    from transformers import AutoModelForImageTextToText

    build_tiny_model(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name:
                param.mul_(2.0)
    model.save_pretrained(folder)
    return folder


def test_ask_in_two_workers_writes_the_one_process_answers(tmp_path, monkeypatch, logger_kept):
    import torch
    from typer.testing import CliRunner

    from wafersage.cli import app
    from wafersage.serving import workers

    monkeypatch.setattr(workers, "cores", lambda: 2)  # one torch thread a worker, as here:
    threads = torch.get_num_threads()  # the same arithmetic in both runs
    torch.set_num_threads(1)
    model = _lively_model(tmp_path / "model")
    maps = tmp_path / "maps"
    maps.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        m = with_center(30 + i) if i % 2 else disc(30 + i)
        m[(m > 0) & (rng.random(m.shape) < 0.05)] = 2
        np.save(maps / f"m{i}.npy", m)
    out = {}
    for w in (1, 2):
        out[w] = tmp_path / f"answers{w}.jsonl"
        args = [str(maps), QUESTION, "--model", str(model), "--out", str(out[w]), "--max-new-tokens", "8"]
        r = CliRunner().invoke(
            app, ["--log-level", "INFO", "ask", *args, "--batch-size", "2", "--workers", str(w)]
        )
        assert r.exit_code == 0, r.output
        assert "ask: read 9 map(s) in " in r.output and f"maps/s, {w} worker(s))" in r.output
    torch.set_num_threads(threads)
    one, two = ([json.loads(x) for x in out[w].read_text().splitlines()] for w in (1, 2))
    assert [x["file"] for x in two] == [f"m{i}.npy" for i in range(9)]
    assert len({x["answer"] for x in one}) > 1  # answers that tell the maps apart
    assert two == one
