"""gspo: curriculum Group Sequence Policy Optimization of the SFT model on the aligned rule reward.

TRL's ``GRPOTrainer`` with GSPO settings (``importance_sampling_level="sequence"``,
``loss_type="grpo"``, clip epsilon 3e-4 / 4e-4), starting from ``models/sft/``. The reward is the one
rule score of :mod:`wafersage.score.reward` under ``models/reward/reward_config.json``: the overall
score trains (weight 1); each component is a weight-0 reward function, so TRL logs its mean/std
without training on it. On ``type`` questions an exact-type correctness term (1 when the answer's
parsed label set, by the evaluation's parser, equals the wafer's labels, else 0) adds with weight
``type_reward_weight``, logged as ``rewards/type_exact/mean``. Prompts follow the curriculum of
params ``gspo.curriculum`` (easy -> hard, review = train split seen by SFT, learning = val split it
never trained on; never the test split).
Health per step (dead groups, reward per component, clip ratio, KL, completion length, curriculum
stage) goes to MLflow, with a table of sampled completions every ``table_every`` steps. Before the
first step, every ``val_every`` steps and at the last, the policy answers a fixed seeded sample of
``val_samples`` val-split type questions greedily: ``val_type_macro_f1`` and ``train_reward`` (the
mean training reward since the previous point) go to MLflow at that step and to
``reports/gspo/curve.csv``, so a training reward that climbs while val macro-F1 falls shows
over-optimisation. The val split is also the curriculum's learning pool: the curve tracks what the
reward buys in scored answers, not generalisation to unseen wafers (that is the evaluate stage's).
Checkpoints in ``checkpoints/gspo/<key>``; a rerun after a kill resumes from the last one, at the
same step and curriculum position. Writes ``models/gspo/``, ``reports/gspo/metrics.json`` and
``reports/gspo/curve.csv``.

GPU path (params): ``use_vllm`` with ``vllm_mode: colocate`` (vLLM shares the training GPU) or
``server`` (``trl vllm-serve`` on other GPUs, ``vllm_server_base_url``), LoRA for a real base,
``bf16``, and ``accelerate launch --config_file configs/accelerate/<cfg>.yaml -m wafersage gspo``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.categories import TYPE_CATEGORY
from wafersage.annotation.grounding import Grounding
from wafersage.annotation.rubric import read_records
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.evaluation.stats import macro_f1_metric
from wafersage.modeling.curriculum import LEARNING, REVIEW, Layout, Schedule, flat_stage, parse_stages
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
from wafersage.modeling.vqa_data import grounded_cells, messages, pil_image, read_split
from wafersage.progress import bars_enabled
from wafersage.score.reward import make_reward_funcs, reward_weights
from wafersage.tracking import stage_run

#: reports/gspo/metrics.json, exactly these keys.
METRIC_KEYS = ("dead_group_rate", "reward_mean_first", "reward_mean_last", "train_wall_s", "steps")
SPLITS = ("train", "rl", "val")  # the test split is never read by this stage
#: The validation score of the curve (MLflow metric and reports/gspo/curve.csv column).
VAL_METRIC = "val_type_macro_f1"
#: reports/gspo/curve.csv, these columns (train_reward empty at step 0).
CURVE_COLUMNS = ("step", "train_reward", VAL_METRIC)


def split_rows(vqa_dir: Path, split: str, pool: str, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One VQA split's pairs with the reward's columns (``question``, ``answer``, ``rubric`` JSON,
    ``labels``) plus ``pair_id``, ``difficulty``, ``category``, ``pool`` and ``image``."""
    path = Path(vqa_dir) / f"{split}.parquet"
    df = read_split(path)
    for col in ("difficulty", "pair_id"):
        if col not in df:
            raise WaferSageError(path, "VQA split lacks a column gspo needs", col)
    missing = sorted(set(df["wafer_id"]) - set(records))
    if missing:
        raise WaferSageError(path, "wafer of the VQA split has no rubric record", missing[0])
    labels = df["labels"] if "labels" in df else df["wafer_id"].map(lambda w: records[w]["labels"])
    return pd.DataFrame(
        {
            "pair_id": df["pair_id"].astype(str),
            "question": df["question"].astype(str),
            "answer": df["answer"].astype(str),
            "rubric": [json.dumps(records[w]["rubric"], sort_keys=True) for w in df["wafer_id"]],
            "labels": [[str(x) for x in v] for v in labels],
            "difficulty": df["difficulty"].astype(int),
            "category": df["category"].astype(str),
            "pool": pool,
            "image": df["image"],
        }
    )


def prompt_table(vqa_dir: Path, rubrics: Path, curriculum: dict[str, Any]) -> pd.DataFrame:
    """The RL prompts: the review and learning splits' rows (:func:`split_rows`)."""
    records = read_records(Path(rubrics))
    pools = {curriculum["review_split"]: REVIEW, curriculum["learning_split"]: LEARNING}
    return pd.concat([split_rows(vqa_dir, s, pool, records) for s, pool in pools.items()], ignore_index=True)


def to_dataset(table: pd.DataFrame, grounding: Grounding) -> Any:
    """The prompt table as a ``datasets.Dataset`` in TRL's conversational vision format
    (``prompt`` messages from the SFT formatting, ``images``) plus the reward/curriculum columns."""
    from datasets import Dataset, Features, Image, List, Value

    features = Features(
        {
            "prompt": List({"role": Value("string"), "content": Value("string")}),
            "images": List(Image()),
            "question": Value("string"),
            "answer": Value("string"),
            "rubric": Value("string"),
            "labels": List(Value("string")),
            "pair_id": Value("string"),
            "difficulty": Value("int32"),
            "category": Value("string"),
            "pool": Value("string"),
        }
    )
    grounded = grounded_cells(table["image"], table["question"], grounding)
    data = {
        "prompt": [messages(q) for _, q in grounded],
        "images": [[{"bytes": png, "path": None}] for png, _ in grounded],
        **{c: list(table[c]) for c in features if c not in ("prompt", "images")},
    }
    data["difficulty"] = [int(x) for x in data["difficulty"]]
    return Dataset.from_dict(data, features=features)


def val_type_rows(val: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The curve's questions: a fixed seeded sample of ``n`` labelled type questions of the val
    split (rows of :func:`split_rows`), which GSPO never learns on."""
    rows = val[(val["category"] == TYPE_CATEGORY) & (val["labels"].map(len) > 0)]
    if rows.empty:
        raise WaferSageError("data/vqa/val.parquet", "no labelled type questions for the gspo val curve")
    return rows if len(rows) <= n else rows.sample(n=n, random_state=seed).sort_index()


def type_macro_f1(labels: list[list[str]], answers: list[str]) -> float:
    """Macro-F1 of the answers' parsed label sets against ``labels``, as the evaluate stage scores
    type questions (:func:`~wafersage.evaluation.stats.macro_f1_metric`)."""
    truth = [{str(c) for c in lb} for lb in labels]
    pred = [parse_labels(a) for a in answers]
    return round(float(macro_f1_metric(truth, pred)(np.ones((1, len(truth))))[0]), 4)


def type_validator(
    rows: pd.DataFrame, processor: Any, grounding: Grounding, batch_size: int, max_new_tokens: int
) -> Callable[[Any], float]:
    """``validate(model) -> float``: :func:`type_macro_f1` of the model's greedy answers to ``rows``
    (grounded as in training)."""
    images = [pil_image(v) for v in rows["image"]]
    questions = list(rows["question"].astype(str))
    labels = [list(v) for v in rows["labels"]]

    def validate(model: Any) -> float:
        answers = generate_answers(model, processor, images, questions, batch_size, max_new_tokens, grounding)
        return type_macro_f1(labels, answers)

    return validate


def grpo_config(p: dict[str, Any], out: Path, n_rewards: int, max_steps: int) -> Any:
    """The ``GRPOConfig`` (GSPO when ``importance_sampling_level`` is ``sequence``); ``n_rewards``
    must match :func:`~wafersage.score.reward.make_reward_funcs`."""
    from trl import GRPOConfig

    weights = reward_weights(float(p["type_reward_weight"]))
    if n_rewards != len(weights):
        raise ValueError(f"{n_rewards} reward functions, {len(weights)} reward weights")

    vllm = {
        "use_vllm": bool(p["use_vllm"]),
        "vllm_mode": str(p["vllm_mode"]),
        "vllm_gpu_memory_utilization": float(p["vllm_gpu_memory_utilization"]),
    }
    if p["vllm_server_base_url"]:
        vllm["vllm_server_base_url"] = str(p["vllm_server_base_url"])
    return GRPOConfig(
        output_dir=str(out),
        run_name="gspo",
        seed=int(p["seed"]),
        data_seed=int(p["seed"]),
        max_steps=max_steps,
        per_device_train_batch_size=int(p["per_device_train_batch_size"]),
        gradient_accumulation_steps=int(p["gradient_accumulation_steps"]),
        steps_per_generation=int(p["steps_per_generation"]),
        num_iterations=int(p["num_iterations"]),
        num_generations=int(p["num_generations"]),
        importance_sampling_level=str(p["importance_sampling_level"]),
        loss_type=str(p["loss_type"]),
        epsilon=float(p["epsilon"]),
        epsilon_high=float(p["epsilon_high"]),
        beta=float(p["beta"]),
        temperature=float(p["temperature"]),
        top_p=float(p["top_p"]),
        max_completion_length=int(p["max_completion_length"]),
        learning_rate=float(p["learning_rate"]),
        lr_scheduler_type=str(p["lr_scheduler_type"]),
        warmup_steps=int(p["warmup_steps"]),
        weight_decay=float(p["weight_decay"]),
        max_grad_norm=float(p["max_grad_norm"]),
        optim=str(p["optim"]),
        scale_rewards=str(p["scale_rewards"]),
        multi_objective_aggregation=str(p["multi_objective_aggregation"]),
        mask_truncated_completions=bool(p["mask_truncated_completions"]),
        reward_weights=weights,
        shuffle_dataset=False,
        logging_steps=int(p["logging_steps"]),
        save_strategy="steps",
        save_steps=int(p["save_steps"]),
        save_total_limit=int(p["save_total_limit"]),
        bf16=bool(p["bf16"]),
        gradient_checkpointing=bool(p["gradient_checkpointing"]),
        report_to=["mlflow"],
        log_completions=False,
        dataloader_num_workers=0,
        disable_tqdm=not bars_enabled(),
        **vllm,
    )


def build_trainer(
    p: dict[str, Any],
    model_dir: Path,
    table: pd.DataFrame,
    reward_config: Path,
    ckpt: Path,
    lora: bool,
    callbacks: list | None = None,
    oof: Path | None = None,
    val: pd.DataFrame | None = None,
) -> Any:
    """The configured :class:`~wafersage.modeling.gspo_trainer.CurriculumGRPOTrainer` (``val``: the
    val split's rows, :func:`split_rows`, for the curve when ``val_every`` > 0; ``oof``: the
    specialist's out-of-fold file, which grounds the training maps)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from wafersage.modeling.gspo_trainer import CurriculumGRPOTrainer

    torch.set_num_threads(int(p["threads"]))
    torch.manual_seed(int(p["seed"]))
    info = base_info(model_dir)
    processor = load_processor(model_dir)
    # TRL 1.16 left-pads the prompt ids but builds the multimodal fields (mm_token_type_ids, which
    # place the image in M-RoPE) with the processor's own padding side: they only line up for
    # prompts of different lengths when that side is left too (run() restores it before saving).
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=getattr(torch, info.get("dtype", "float32")), local_files_only=True
    )
    funcs = make_reward_funcs(reward_config)
    stages = parse_stages(p["curriculum"]["stages"])
    if not p["curriculum"]["enabled"]:
        stages = flat_stage(stages)
    max_steps = sum(s.steps for s in stages)
    args = grpo_config(p, ckpt, len(funcs), max_steps)
    layout = Layout(
        prompts_per_chunk=args.generation_batch_size // int(p["num_generations"]),
        micro_per_chunk=args.steps_per_generation * int(p["num_iterations"]),
        grad_accum=int(p["gradient_accumulation_steps"]),
    )
    schedule = Schedule(table, stages, layout, int(p["seed"]))
    grounding = grounder_of(model_dir, info, oof)
    validate = None
    if int(p["val_every"]) > 0:
        if val is None:
            raise WaferSageError("gspo.val_every", "the val curve needs the val split's rows")
        rows = val_type_rows(val, int(p["val_samples"]), int(p["seed"]))
        validate = type_validator(
            rows, processor, grounding, int(p["per_device_train_batch_size"]), int(p["max_completion_length"])
        )
    return CurriculumGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=to_dataset(table, grounding),
        processing_class=processor,
        peft_config=peft_config_for(p) if lora else None,
        callbacks=callbacks,
        schedule=schedule,
        table_every=int(p["table_every"]),
        validate=validate,
        val_every=int(p["val_every"]),
        val_metric=VAL_METRIC,
    )


def summarize(log_history: list[dict[str, Any]], steps: int, train_wall: float) -> dict[str, Any]:
    """``reports/gspo/metrics.json`` from the trainer's log history: the dead-group rate over all
    logged steps, and the mean reward of the first and of the last tenth of the logged steps."""
    rows = [h for h in log_history if "reward" in h and h.get("reward") is not None]
    if not rows:
        raise WaferSageError("gspo", "training logged no rewards")
    k = max(1, len(rows) // 10)
    dead = [h["dead_group_rate"] for h in rows if h.get("dead_group_rate") is not None]
    return {
        "dead_group_rate": round(sum(dead) / max(len(dead), 1), 4),
        "reward_mean_first": round(sum(h["reward"] for h in rows[:k]) / k, 4),
        "reward_mean_last": round(sum(h["reward"] for h in rows[-k:]) / k, 4),
        "train_wall_s": round(train_wall, 2),
        "steps": int(steps),
    }


def run(
    params: dict[str, Any],
    sft_dir: Path,
    vqa_dir: Path,
    rubrics: Path,
    reward_config: Path,
    out: Path,
    metrics: Path,
    checkpoints: Path = Path("checkpoints/gspo"),
    curve: Path | None = None,
    oof: Path | None = None,
) -> dict[str, Any]:
    """Train, then save model + processor, the metrics and the val curve (``curve``, by default
    ``curve.csv`` beside ``metrics``; see the module docstring)."""
    from accelerate import PartialState

    p = validated("gspo", params)
    for path in (Path(sft_dir), Path(reward_config), Path(rubrics)):
        if not path.exists():
            raise WaferSageError(path, "gspo input not found", "run `dvc repro sft align` first")
    info = base_info(sft_dir)
    padding_side = load_processor(sft_dir).tokenizer.padding_side
    table = prompt_table(Path(vqa_dir), Path(rubrics), p["curriculum"])
    val = split_rows(Path(vqa_dir), "val", "val", read_records(Path(rubrics)))
    lora = lora_enabled(p, str(info.get("base")))
    inputs = {
        "sft": Path(sft_dir),
        "reward_config": Path(reward_config),
        "rubrics": Path(rubrics),
        **{f"vqa_{s}": Path(vqa_dir) / f"{s}.parquet" for s in SPLITS},
    }
    if oof is not None:
        inputs["specialist_oof"] = Path(oof)
    key = run_key(p, inputs)
    ckpt = Path(checkpoints) / key
    main = PartialState().is_main_process
    tracking = (
        stage_run("gspo", {"gspo": p, "lora_on": lora, "run_key": key}, inputs=inputs)
        if main
        else nullcontext()
    )
    with tracking as mlflow:
        trainer = build_trainer(p, Path(sft_dir), table, Path(reward_config), ckpt, lora, oof=oof, val=val)
        resume = last_checkpoint(ckpt)
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        train_wall = time.perf_counter() - t0
        out_metrics = summarize(trainer.state.log_history, result.global_step, train_wall)
        model = final_model(trainer, lora, bool(p["lora"]["merge"]))
        trainer.processing_class.tokenizer.padding_side = padding_side
        if trainer.is_world_process_zero():
            resumed = int(Path(resume).name.split("-")[-1]) if resume else 0
            mlflow.log_metrics(
                {"final_" + k: float(v) for k, v in out_metrics.items()} | {"resumed_from_step": resumed}
            )
            curve = Path(curve) if curve is not None else Path(metrics).with_name("curve.csv")
            points = pd.DataFrame(trainer.val_curve(), columns=list(CURVE_COLUMNS)).round(4)
            outputs = ((out, True), (metrics, False), (curve, False))
            with atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_curve):
                tmp.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(str(tmp))
                trainer.processing_class.save_pretrained(str(tmp))
                ship_specialist(sft_dir, tmp)
                gspo_info = {
                    **info,
                    "stage": "gspo",
                    "lora": lora,
                    "run_key": key,
                    "resumed_from_step": resumed,
                }
                (tmp / BASE_INFO).write_text(json.dumps(gspo_info, indent=2, sort_keys=True) + "\n")
                tmp_metrics.write_text(json.dumps(out_metrics, indent=2, sort_keys=True) + "\n")
                points.to_csv(tmp_curve, index=False)
            mlflow.log_artifact(str(metrics))
            mlflow.log_artifact(str(curve))
    return out_metrics
