"""``wafersage ask``: answer one question about a map file or every map in a folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError
from wafersage.progress import LOG
from wafersage.serving.images import map_files, model_image
from wafersage.serving.workers import answer_in_workers


def ask(
    path: Path, question: str, predictor: Any, out: Path | None = None, workers: int = 1
) -> list[dict[str, str]]:
    """One ``{"file", "question", "answer"}`` record a map (all maps are read and checked before
    the model runs, so a bad file leaves no output); JSON lines written to ``out`` when given.
    ``workers`` > 1 shares the maps among forked worker processes (:mod:`~wafersage.serving.workers`);
    the reading and answering times are logged."""
    if not question.strip():
        raise WaferSageError(None, "question is empty")
    files = map_files(Path(path))
    t0 = time.perf_counter()
    images = [model_image(f, predictor.image_size) for f in files]
    t1 = time.perf_counter()
    answers = answer_in_workers(predictor, images, [question] * len(files), workers, label="ask")
    t2 = time.perf_counter()
    LOG.info(
        "ask: read %d map(s) in %.1f s, answered in %.1f s (%.1f maps/s, %d worker(s))",
        len(files),
        t1 - t0,
        t2 - t1,
        len(files) / max(t2 - t1, 1e-9),
        workers,
    )
    records = [
        {"file": f.name, "question": question, "answer": a} for f, a in zip(files, answers, strict=True)
    ]
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
