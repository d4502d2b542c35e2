"""The GSPO curriculum: stages from easy to hard VQA difficulty, each mixing "review" prompts (the
train split, which SFT trained on) with "learning" prompts (the val split, which SFT never took a
gradient step on; it only scored a sample of it for early stopping). The test split is never used.

The whole schedule is fixed up front as a list of *chunks* (one chunk = the unique prompts of one
generation batch), drawn with a seeded generator, so the order is deterministic and a resumed run
(TRL skips the dataloader batches already trained on) continues at the same prompt and stage.
:class:`CurriculumSampler` yields the chunks with the repetition layout of TRL's ``RepeatSampler``
(each prompt ``num_generations`` times, each chunk ``steps_per_generation * num_iterations`` times).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.config import CurriculumStage, checked
from wafersage.errors import WaferSageError

#: Which pool a prompt comes from (column ``pool`` of the curriculum table).
REVIEW, LEARNING = "review", "learning"


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: the difficulties it draws, how many optimizer steps it lasts, the
    share of each chunk taken from the review pool and, when set, the share of each pool's draw
    that is defect-type questions (None: as the pool holds them)."""

    name: str
    difficulties: tuple[int, ...]
    steps: int
    review_fraction: float
    type_fraction: float | None = None


def parse_stages(raw: Sequence[dict]) -> list[Stage]:
    """``gspo.curriculum.stages`` from params.yaml as :class:`Stage` objects (checked by
    :class:`~wafersage.config.CurriculumStage`)."""
    if not raw:
        raise WaferSageError("params.yaml", "gspo.curriculum.stages is empty")
    out = []
    for i, s in enumerate(raw):
        c = checked(CurriculumStage, s, f"gspo.curriculum.stages.{i}", "params.yaml")
        out.append(
            Stage(c.name or f"stage{i}", tuple(c.difficulties), c.steps, c.review_fraction, c.type_fraction)
        )
    return out


def flat_stage(stages: Sequence[Stage]) -> list[Stage]:
    """The no-curriculum ablation: one stage over all difficulties, same steps, review share and
    type share (steps-weighted means)."""
    steps = [s.steps for s in stages]
    frac = float(np.average([s.review_fraction for s in stages], weights=steps))
    typed = [s.type_fraction for s in stages]
    if any(t is None for t in typed) and any(t is not None for t in typed):
        raise WaferSageError(
            "params.yaml", "the flat ablation needs type_fraction on every curriculum stage or on none"
        )
    share = None if typed[0] is None else float(np.average(typed, weights=steps))
    return [Stage("all", (1, 2, 3), sum(steps), frac, share)]


@dataclass(frozen=True)
class Layout:
    """How TRL batches rollouts: prompts per chunk and micro-batches per chunk / per optimizer step."""

    prompts_per_chunk: int  # generation_batch_size // num_generations
    micro_per_chunk: int  # steps_per_generation * num_iterations
    grad_accum: int

    def chunks_for(self, steps: int) -> int:
        """Chunks that ``steps`` optimizer steps consume (must be whole)."""
        micro = steps * self.grad_accum
        if micro % self.micro_per_chunk:
            raise WaferSageError(
                "params.yaml",
                "curriculum stage steps * gradient_accumulation_steps must divide by steps_per_generation * "
                "num_iterations",
                str(steps),
            )
        return micro // self.micro_per_chunk

    def chunk_at(self, global_step: int) -> int:
        """Index of the chunk optimizer step ``global_step`` (0-based) trains on."""
        return global_step * self.grad_accum // self.micro_per_chunk


class Schedule:
    """Chunks of row indices into the curriculum table, and the stage of every optimizer step."""

    def __init__(self, table: pd.DataFrame, stages: Sequence[Stage], layout: Layout, seed: int):
        self.stages, self.layout = list(stages), layout
        self.chunks: list[list[int]] = []
        self.chunk_stage: list[int] = []
        diff, pool = table["difficulty"].to_numpy(), table["pool"].to_numpy()
        typed = table["category"].to_numpy() == TYPE_CATEGORY if "category" in table else None
        for si, st in enumerate(self.stages):
            n = layout.chunks_for(st.steps)
            ok = np.isin(diff, st.difficulties)
            review = np.flatnonzero(ok & (pool == REVIEW))
            learning = np.flatnonzero(ok & (pool == LEARNING))
            k = layout.prompts_per_chunk
            n_rev = int(round(k * st.review_fraction)) if len(learning) else k
            n_rev = n_rev if len(review) else 0
            if (n_rev and not len(review)) or (k - n_rev and not len(learning)):
                raise WaferSageError(
                    "data/vqa",
                    "no prompts for a curriculum stage",
                    f"{st.name}: difficulties {st.difficulties}",
                )
            rng = np.random.default_rng([seed, si])
            parts = [_parts(review, n_rev, typed, st, rng), _parts(learning, k - n_rev, typed, st, rng)]
            for _ in range(n):
                chunk = [next(draw) for part in parts for draw, count in part for _ in range(count)]
                self.chunks.append([int(i) for i in rng.permutation(chunk)])
                self.chunk_stage.append(si)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole schedule."""
        return sum(s.steps for s in self.stages)

    def stage_at(self, global_step: int) -> int:
        """Stage index of optimizer step ``global_step`` (0-based; clamped to the last stage)."""
        c = min(self.layout.chunk_at(max(global_step, 0)), len(self.chunks) - 1)
        return self.chunk_stage[c]


def _parts(
    indices: np.ndarray, count: int, typed: np.ndarray | None, stage: Stage, rng: np.random.Generator
) -> list[tuple[Iterator[int], int]]:
    """How a chunk draws ``count`` prompts from one pool's ``indices``: ``(cycler, how many)``
    pairs, the pool's type questions and the rest apart when the stage sets ``type_fraction``."""
    if stage.type_fraction is None or not count:
        return [(_cycler(indices, rng), count)]
    if typed is None:
        raise WaferSageError("data/vqa", "type_fraction needs the prompts' category column", stage.name)
    n_type = int(round(count * stage.type_fraction))
    out = []
    for rows, c in ((indices[typed[indices]], n_type), (indices[~typed[indices]], count - n_type)):
        if c and not len(rows):
            raise WaferSageError(
                "data/vqa",
                "no prompts for a curriculum stage's type_fraction",
                f"{stage.name}: difficulties {stage.difficulties}",
            )
        out.append((_cycler(rows, rng), c))
    return out


def _cycler(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    """Endless passes over ``indices``, each pass in a fresh seeded order (no repeats within a pass)."""
    while len(indices):
        yield from rng.permutation(indices).tolist()


class CurriculumSampler:
    """A ``torch`` sampler over the schedule's chunks in TRL's ``RepeatSampler`` layout."""

    def __init__(self, schedule: Schedule, mini_repeat_count: int, repeat_count: int):
        self.schedule, self.mini, self.repeat = schedule, mini_repeat_count, repeat_count

    def __iter__(self) -> Iterator[int]:
        for chunk in self.schedule.chunks:
            for _ in range(self.repeat):
                for index in chunk:
                    for _ in range(self.mini):
                        yield index

    def __len__(self) -> int:
        return sum(len(c) for c in self.schedule.chunks) * self.mini * self.repeat
