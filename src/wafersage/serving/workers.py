"""Answering many maps in worker processes forked from a loaded :class:`Predictor`: each worker
holds the model as the parent loaded it (copy-on-write: nothing reloaded, nothing pickled but the
answers), runs its own torch threads and answers whole batches of a contiguous share of the maps,
so the batches, and the answers, are the ones one process would give."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from wafersage.errors import WaferSageError
from wafersage.progress import progress

#: Shares a worker gets on average (smaller shares even out a core that another job slows, and
#: move the progress bar).
SHARES_PER_WORKER = 8

_job: tuple[Any, list[Any], list[str]] | None = None  # set before the fork, read by the workers


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shares(n: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """About ``parts`` contiguous ``(start, stop)`` slices covering ``range(n)``, each a whole number
    of ``batch_size`` batches (the last one may end short)."""
    batches = -(-n // batch_size)
    per = max(1, -(-batches // max(1, parts)))
    return [(s * batch_size, min(n, (s + per) * batch_size)) for s in range(0, batches, per)]


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _answer(bounds: tuple[int, int]) -> list[str]:
    assert _job is not None, "a worker runs only inside answer_in_workers"
    predictor, images, questions = _job
    return predictor.answer(images[bounds[0] : bounds[1]], questions[bounds[0] : bounds[1]])


def answer_in_workers(
    predictor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    workers: int = 1,
    threads: int = 0,
    label: str = "answering",
) -> list[str]:
    """``predictor.answer(images, questions)`` in whole batches, shared among ``workers`` forked
    processes with ``threads`` torch threads each (0: ``cores() // workers``; one worker: answered
    here, on this process's threads), with a progress bar named ``label``."""
    global _job
    if workers < 1:
        raise WaferSageError(None, "workers must be at least 1", str(workers))
    parts = shares(len(images), predictor.batch_size, workers * SHARES_PER_WORKER)
    if workers == 1 or len(parts) < 2:
        return [
            a
            for s, e in progress(parts, label, unit="share")
            for a in predictor.answer(images[s:e], questions[s:e])
        ]
    if "fork" not in multiprocessing.get_all_start_methods():
        raise WaferSageError(None, "answering in several workers needs fork (Linux)", "use one worker")
    _job = (predictor, list(images), [str(q) for q in questions])
    try:
        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_threads,
            initargs=(threads or max(1, cores() // workers),),
        ) as pool:
            answered = progress(pool.map(_answer, parts), label, total=len(parts), unit="share")
            return [a for part in answered for a in part]
    finally:
        _job = None
