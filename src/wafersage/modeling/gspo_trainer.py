"""TRL's ``GRPOTrainer`` with three additions for the gspo stage:

* the curriculum sampler (:mod:`wafersage.modeling.curriculum`) in place of TRL's shuffled
  ``RepeatSampler``, so prompts come stage by stage, deterministically and resumably;
* health metrics per step: ``dead_group_rate`` (share of prompt groups whose weighted rewards are
  all equal, i.e. zero advantage, whatever ``scale_rewards`` is; TRL's ``frac_reward_zero_std``
  measures it only for ``group``/``none`` scaling), ``curriculum_stage`` and
  ``curriculum/review_share``; TRL itself logs reward mean/std per reward function, clip ratios,
  KL (beta > 0), entropy and completion lengths;
* every ``table_every`` steps the last rollout's prompts, completions, rewards and advantages go to
  the active MLflow run as a table (TRL's own completion tables only reach wandb/trackio);
* a validation curve: before the first step, every ``val_every`` steps and at the last step,
  ``validate(model)`` (a score of the policy on held-fixed prompts) is logged as ``val_metric``
  next to ``train_reward``, the mean logged training reward since the previous point, so the two
  curves show over-optimisation. Both go through :meth:`log`, hence to MLflow at that step and to
  ``state.log_history`` (saved with each checkpoint, so a resumed run keeps the earlier points).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from wafersage.modeling.curriculum import REVIEW, CurriculumSampler, Schedule


def _text_of(messages: Any) -> str:
    """The text parts of a prompt or completion (string, or chat messages with typed content)."""
    if isinstance(messages, str):
        return messages
    parts = []
    for m in messages or []:
        content = m.get("content", "") if isinstance(m, dict) else m
        if isinstance(content, list):
            parts.extend(
                c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"
            )
        else:
            parts.append(str(content))
    return " ".join(p for p in parts if p)


def dead_group_rate(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> float:
    """Share of groups (consecutive ``group_size`` rows) whose rewards are all equal (or all NaN)."""
    grouped = rewards.detach().float().view(-1, group_size)
    nan = torch.isnan(grouped)
    lo = torch.where(nan, torch.full_like(grouped, float("inf")), grouped).amin(1)
    hi = torch.where(nan, torch.full_like(grouped, -float("inf")), grouped).amax(1)
    spread = torch.where(torch.isfinite(hi - lo), hi - lo, torch.zeros_like(hi))
    return float((spread <= tol).float().mean())


#: The training-reward key of a validation point (the validation score's key is ``val_metric``).
TRAIN_REWARD = "train_reward"


def val_curve(log_history: list[dict[str, Any]], val_metric: str) -> list[dict[str, Any]]:
    """The validation points of a trainer's log history: ``step``, :data:`TRAIN_REWARD` (``None``
    before the first step) and ``val_metric``, in step order."""
    rows = {
        int(h["step"]): {
            "step": int(h["step"]),
            TRAIN_REWARD: h.get(TRAIN_REWARD),
            val_metric: h[val_metric],
        }
        for h in log_history
        if h.get(val_metric) is not None
    }
    return [rows[k] for k in sorted(rows)]


class _ValidationSteps(TrainerCallback):
    """Validates before the first step of a fresh run and makes the trainer log at every step that
    is due for validation (:meth:`CurriculumGRPOTrainer.log` adds the point)."""

    def __init__(self, trainer: CurriculumGRPOTrainer):
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            self.trainer.log({self.trainer.val_metric: self.trainer.validate(self.trainer.model)})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.val_due(state.global_step):
            control.should_log = True


class CurriculumGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` fed by a curriculum :class:`Schedule`, with health logging and an optional
    validation curve (module docstring)."""

    def __init__(
        self,
        *args: Any,
        schedule: Schedule,
        table_every: int = 0,
        validate: Callable[[Any], float] | None = None,
        val_every: int = 0,
        val_metric: str = "val_score",
        **kwargs: Any,
    ):
        self.schedule, self.table_every = schedule, int(table_every)
        self.validate, self.val_every, self.val_metric = validate, int(val_every), str(val_metric)
        #: (global step, curriculum stage, pair ids of the rollout) per generation, for tests/audits.
        self.rollout_log: list[tuple[int, int, list[str]]] = []
        super().__init__(*args, **kwargs)
        per_chunk = self.args.generation_batch_size // self.num_generations
        if per_chunk != schedule.layout.prompts_per_chunk:
            raise ValueError(
                f"schedule chunks of {schedule.layout.prompts_per_chunk} prompts, trainer uses {per_chunk}"
            )
        if self.validate is not None and self.val_every > 0:
            self.add_callback(_ValidationSteps(self))

    def val_due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) gets a validation point."""
        if self.validate is None or self.val_every <= 0 or step <= 0:
            return False
        return step % self.val_every == 0 or step >= self.state.max_steps

    def val_curve(self) -> list[dict[str, Any]]:
        """:func:`val_curve` of this run (including points restored from a checkpoint)."""
        return val_curve(self.state.log_history, self.val_metric)

    def _train_reward_since_last_point(self) -> float:
        """Mean logged training reward over the steps since the previous validation point (the
        logged windows so far plus the one about to be logged)."""
        hist = self.state.log_history
        prev = max((int(h["step"]) for h in hist if self.val_metric in h), default=0)
        values = [h["reward"] for h in hist if h.get("reward") is not None and int(h["step"]) > prev]
        pending = [v for v in self._metrics["train"].get("reward", []) if not math.isnan(v)]
        if pending:
            values.append(sum(pending) / len(pending))
        return sum(values) / len(values) if values else math.nan

    def _get_train_sampler(self, dataset: Any = None) -> CurriculumSampler:
        return CurriculumSampler(
            self.schedule, self.num_generations, self.num_iterations * self.args.steps_per_generation
        )

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> Any:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        weighted = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(1)
        weighted[torch.isnan(rewards_per_func).all(1)] = torch.nan
        group = self.num_generations if mode == "train" else self.num_generations_eval
        self._metrics[mode]["dead_group_rate"].append(dead_group_rate(weighted, group))
        if mode == "train":
            pools = [x.get("pool") for x in inputs]
            self._metrics[mode]["curriculum/review_share"].append(
                sum(p == REVIEW for p in pools) / len(pools)
            )
            step = self.state.global_step
            ids = list(dict.fromkeys(str(x.get("pair_id")) for x in inputs))
            self.rollout_log.append((step, self.schedule.stage_at(step), ids))
        return rewards_per_func

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        step = self.state.global_step
        if self.model.training and step > 0:
            logs["curriculum_stage"] = float(self.schedule.stage_at(step - 1))
            if "loss" in logs and self.val_due(step):
                logs[TRAIN_REWARD] = self._train_reward_since_last_point()
                logs[self.val_metric] = self.validate(self.model)
        super().log(logs, start_time)
        step = self.state.global_step
        if self.table_every and step % self.table_every == 0 and self.model.training and "loss" in logs:
            self._log_completion_table(step)

    def _log_completion_table(self, step: int) -> None:
        """The buffered rollout (prompt text, completion, rewards, advantage) as an MLflow table."""
        import mlflow

        if not self.accelerator.is_main_process or mlflow.active_run() is None or not self._logs["prompt"]:
            return
        n = len(self._logs["completion"])
        table: dict[str, list] = {
            "step": [step] * n,
            "prompt": [_text_of(p) for p in self._logs["prompt"]],
            "completion": [_text_of(c) for c in self._logs["completion"]],
            **{f"reward/{k}": list(v)[-n:] for k, v in self._logs["rewards"].items()},
            "advantage": list(self._logs["advantages"])[-n:],
        }
        mlflow.log_table(table, artifact_file=f"gspo/completions/step_{step:05d}.json")
