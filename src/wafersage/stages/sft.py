"""sft: supervised fine-tuning of the base VLM on the VQA train split with TRL's ``SFTTrainer``.

Conversational messages + the rendered map, loss on the assistant turns only, eval on (a seeded
sample of) the val split every ``eval_steps`` with early stopping on the val loss, checkpoints in
``checkpoints/sft/<key>`` (key = params + input hashes) that a rerun resumes after a kill, LoRA
via PEFT when ``lora.enabled`` (``auto``: on for a real base, off for the tiny default). One
MLflow run holds our params, TRL's losses and learning-rate curve, sample generations and the
data hashes. Writes ``models/sft/`` (merged model + processor) and ``reports/sft/metrics.json``.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.annotation.rubric import read_records
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.evaluation.type_scoring import type_scores
from wafersage.modeling.finetune import (
    final_model,
    last_checkpoint,
    lora_enabled,
    peft_config_for,
    run_key,
)
from wafersage.modeling.generate import generate_answers
from wafersage.modeling.model_folder import BASE_INFO, base_info
from wafersage.modeling.processor import load_processor
from wafersage.modeling.specialist import grounder_of
from wafersage.modeling.specialist import ship as ship_specialist
from wafersage.modeling.vqa_data import (
    ANSWER,
    CATEGORY,
    IMAGE,
    LABELS,
    QUESTION,
    WAFER,
    pil_image,
    read_split,
    to_dataset,
)
from wafersage.progress import bars_enabled
from wafersage.score.config import load as load_reward
from wafersage.score.rules import Item, score_items
from wafersage.tracking import stage_run

#: reports/sft/metrics.json (``rule_score`` when the rubrics and the aligned reward config are given).
METRIC_KEYS = ("type_macro_f1", "type_accuracy", "rule_score", "val_loss", "train_wall_s", "steps")


def oversample_type(df: pd.DataFrame, times: int, balance: float = 0.0) -> pd.DataFrame:
    """The train split with the type-category pairs repeated ``times`` times on average (the
    defect type is the answer the metrics score; it is one pair in ~8 per wafer).

    ``balance`` shares those repeats out by label set: a pair whose label set has ``n`` type pairs
    is repeated in proportion to ``n ** -balance`` (0: every pair ``times`` times; 0.5: classes
    drawn in proportion to the square root of their size; 1: every class equally often), at least
    once. Rare classes (Near-full: ~0.2% of real WM-811K maps) then reach the model often enough to
    be named."""
    if not 0.0 <= balance <= 1.0:
        raise WaferSageError("params.yaml", "sft.type_balance must be in [0, 1]", str(balance))
    if times <= 1 and balance == 0.0:
        return df
    extra = df[df[CATEGORY] == TYPE_CATEGORY]
    repeats = np.full(len(extra), max(1, times))
    if balance > 0.0 and len(extra):
        by_labels = LABELS in extra
        group = extra[LABELS].map(lambda v: "+".join(sorted(v)) or "none") if by_labels else extra[ANSWER]
        weight = group.map(group.value_counts()).to_numpy(dtype=float) ** -balance
        repeats = np.maximum(1, np.rint(times * len(extra) * weight / weight.sum())).astype(int)
    more = [extra[repeats > k] for k in range(1, int(repeats.max(initial=1)))]
    return pd.concat([df, *more], ignore_index=True)


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed).sort_index()


def _training_args(p: dict[str, Any], out: Path, has_eval: bool) -> Any:
    from trl import SFTConfig

    steps = int(p["eval_steps"])
    return SFTConfig(
        output_dir=str(out),
        run_name="sft",
        seed=int(p["seed"]),
        data_seed=int(p["seed"]),
        max_steps=int(p["max_steps"]),
        per_device_train_batch_size=int(p["per_device_train_batch_size"]),
        per_device_eval_batch_size=int(p["per_device_eval_batch_size"]),
        gradient_accumulation_steps=int(p["gradient_accumulation_steps"]),
        learning_rate=float(p["learning_rate"]),
        lr_scheduler_type=str(p["lr_scheduler_type"]),
        warmup_steps=int(p["warmup_steps"]),
        weight_decay=float(p["weight_decay"]),
        optim=str(p["optim"]),
        max_length=int(p["max_length"]),
        assistant_only_loss=True,
        gradient_checkpointing=bool(p["gradient_checkpointing"]),
        bf16=bool(p["bf16"]),
        logging_steps=int(p["logging_steps"]),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=steps,
        save_strategy="steps",
        save_steps=steps,
        save_total_limit=int(p["save_total_limit"]),
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to=["mlflow"],
        dataloader_num_workers=0,
        disable_tqdm=not bars_enabled(),
    )


def build_trainer(
    p: dict[str, Any],
    base: Path,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    ckpt: Path,
    lora: bool,
    oof: Path | None = None,
) -> Any:
    """The configured ``SFTTrainer`` (model from ``base``, LoRA when asked; ``oof``: the
    specialist's out-of-fold file, which grounds the training maps)."""
    import torch
    from transformers import AutoModelForImageTextToText, EarlyStoppingCallback
    from trl import SFTTrainer

    info = base_info(base)
    processor = load_processor(base)
    if int(p["threads"]) > 0:
        torch.set_num_threads(int(p["threads"]))
    torch.manual_seed(int(p["seed"]))
    model = AutoModelForImageTextToText.from_pretrained(
        str(base), dtype=getattr(torch, info.get("dtype", "float32")), local_files_only=True
    )
    val = _sample(val_df, int(p["eval_max_samples"]), int(p["seed"]))
    has_eval = len(val) > 0
    callbacks = (
        [EarlyStoppingCallback(early_stopping_patience=int(p["early_stopping_patience"]))] if has_eval else []
    )
    grounding = grounder_of(base, info, oof)
    return SFTTrainer(
        model=model,
        args=_training_args(p, ckpt, has_eval),
        train_dataset=to_dataset(
            oversample_type(train_df, int(p["type_oversample"]), float(p["type_balance"])), grounding
        ),
        eval_dataset=to_dataset(val, grounding) if has_eval else None,
        processing_class=processor,
        peft_config=peft_config_for(p) if lora else None,
        callbacks=callbacks,
    )


def type_metrics(model: Any, processor: Any, test_df: pd.DataFrame, p: dict[str, Any]) -> dict[str, Any]:
    """Greedy answers to the test split's type questions, parsed and scored."""
    rows = _sample(test_df[test_df[CATEGORY] == TYPE_CATEGORY], int(p["type_eval_max"]), int(p["seed"]))
    if rows.empty:
        raise WaferSageError("data/vqa/test.parquet", "no type-category questions in the test split")
    answers = _greedy_answers(model, processor, rows, p)
    if LABELS in rows:  # the VQA stage's label column is the truth; else the reference answer parsed
        return type_scores([" and ".join(v) if len(v) else "none" for v in rows[LABELS]], answers)
    return type_scores(list(rows[ANSWER]), answers)


def _greedy_answers(model: Any, processor: Any, rows: pd.DataFrame, p: dict[str, Any]) -> list[str]:
    """Batched greedy answers of ``model`` to the questions (and images) of VQA ``rows``, grounded
    as the model was trained (``p["grounding"]``, from the model folder)."""
    return generate_answers(
        model,
        processor,
        [pil_image(v) for v in rows[IMAGE]],
        list(rows[QUESTION]),
        int(p["generation_batch_size"]),
        int(p["max_new_tokens"]),
        p["grounding"],
    )


def rule_score(
    model: Any, processor: Any, test_df: pd.DataFrame, rubrics: Path, reward: Path, p: dict[str, Any]
) -> float:
    """Mean aligned rule score (``wafersage.score``) of greedy answers to a seeded sample of the test
    split's questions (all categories), against each wafer's rubric."""
    for path in (rubrics, reward):
        if not Path(path).exists():
            raise WaferSageError(path, "rule-score input not found")
    records = read_records(Path(rubrics))
    rows = _sample(test_df, int(p["rule_eval_max"]), int(p["seed"]))
    missing = sorted(set(rows[WAFER]) - set(records))
    if missing:
        raise WaferSageError(rubrics, "test wafer without a rubric", missing[0])
    answers = _greedy_answers(model, processor, rows, p)
    labels = (
        [list(v) for v in rows[LABELS]]
        if LABELS in rows
        else [list(records[w].get("labels") or []) for w in rows[WAFER]]
    )
    items = [
        Item(str(q), a, str(r), records[w]["rubric"], lb)
        for q, a, r, w, lb in zip(rows[QUESTION], answers, rows[ANSWER], rows[WAFER], labels, strict=True)
    ]
    return round(float(score_items(items, load_reward(reward)).mean()), 4)


def sample_table(model: Any, processor: Any, df: pd.DataFrame, p: dict[str, Any]) -> dict[str, list]:
    """A few val questions with reference and generated answers (for ``mlflow.log_table``)."""
    rows = _sample(df, int(p["sample_generations"]), int(p["seed"]))
    gen = _greedy_answers(model, processor, rows, p)
    return {
        "wafer_id": list(rows[WAFER]),
        "category": list(rows[CATEGORY]),
        "question": list(rows[QUESTION]),
        "reference": list(rows[ANSWER]),
        "generated": gen,
    }


def run(
    params: dict[str, Any],
    base: Path,
    vqa_dir: Path,
    out: Path,
    metrics: Path,
    checkpoints: Path = Path("checkpoints/sft"),
    rubrics: Path | None = None,
    reward: Path | None = None,
    oof: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune, score on the test split's type questions, save model + processor and metrics
    (``oof``: the specialist's out-of-fold probabilities for the training prompts)."""
    p = validated("sft", params)
    info = base_info(base)
    splits = {s: Path(vqa_dir) / f"{s}.parquet" for s in ("train", "val", "test")}
    train_df, val_df, test_df = (read_split(splits[s]) for s in ("train", "val", "test"))
    lora = lora_enabled(p, str(info.get("base")))
    inputs = {"base": Path(base), **{f"vqa_{s}": v for s, v in splits.items()}}
    if oof is not None:
        inputs["specialist_oof"] = Path(oof)
    key = run_key(p, inputs)  # what training depends on; the rule-score inputs only score
    scoring = {k: Path(v) for k, v in (("rubrics", rubrics), ("reward", reward)) if v is not None}
    for path in scoring.values():
        if not path.exists():
            raise WaferSageError(path, "rule-score input not found")
    ckpt = Path(checkpoints) / key

    from accelerate import PartialState

    # One MLflow run (on the main process; TRL's MLflowCallback logs into it); every process trains,
    # evaluates and generates (collectives under FSDP/ZeRO-3), only the main process writes.
    main = PartialState().is_main_process
    tracking = (
        stage_run("sft", {"sft": p, "lora_on": lora, "run_key": key}, inputs=inputs | scoring)
        if main
        else nullcontext()
    )
    with tracking as mlflow:
        trainer = build_trainer(p, Path(base), train_df, val_df, ckpt, lora, oof)
        resume = last_checkpoint(ckpt)
        if lora and mlflow is not None:
            trainable = sum(t.numel() for t in trainer.model.parameters() if t.requires_grad)
            mlflow.log_metric("trainable_params", float(trainable))
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        train_wall = time.perf_counter() - t0
        val_loss = trainer.evaluate()["eval_loss"] if trainer.eval_dataset is not None else float("nan")
        model = final_model(trainer, lora, bool(p["lora"]["merge"]))
        processor = trainer.processing_class
        gen_p = {**p, "grounding": grounder_of(base, info)}
        scores = type_metrics(model, processor, test_df, gen_p)
        samples = sample_table(model, processor, val_df, gen_p)
        out_metrics = {
            "type_macro_f1": scores["type_macro_f1"],
            "type_accuracy": scores["type_accuracy"],
            **(
                {"rule_score": rule_score(model, processor, test_df, Path(rubrics), Path(reward), gen_p)}
                if rubrics is not None and reward is not None
                else {}
            ),
            "val_loss": round(float(val_loss), 5),
            "train_wall_s": round(train_wall, 2),
            "steps": int(result.global_step),
        }
        if trainer.is_world_process_zero():
            mlflow.log_metrics(
                {"final_" + k: float(v) for k, v in out_metrics.items()}
                | {"type_n": float(scores["type_n"]), "resumed_from_step": float(_step_of(resume))}
            )
            mlflow.log_table(samples, artifact_file="sft/sample_generations.json")
            with atomic_outputs((out, True), (metrics, False)) as (tmp, tmp_metrics):
                tmp.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(str(tmp))
                processor.save_pretrained(str(tmp))
                ship_specialist(base, tmp)
                sft_info = {
                    **info,
                    "stage": "sft",
                    "lora": lora,
                    "run_key": key,
                    "resumed_from_step": _step_of(resume),
                }
                (tmp / BASE_INFO).write_text(json.dumps(sft_info, indent=2, sort_keys=True) + "\n")
                tmp_metrics.write_text(json.dumps(out_metrics, indent=2, sort_keys=True) + "\n")
            mlflow.log_artifact(str(metrics))
    return out_metrics


def _step_of(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
