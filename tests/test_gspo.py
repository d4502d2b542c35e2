"""The gspo stage: curriculum schedule and sampler, dead-group health, a 3-step GSPO run on the tiny
model (weights change, every health metric logged, the val curve written), resume after a kill at
the right step and curriculum stage (keeping the curve), and the reward, with its exact-type term,
inside GRPOTrainer's own call signature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gspo_data import write_inputs

from wafersage.annotation.rubric import read_records
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.modeling.curriculum import (
    LEARNING,
    REVIEW,
    CurriculumSampler,
    Layout,
    Schedule,
    flat_stage,
    parse_stages,
)

SIZE = 64
STAGES = [
    {"name": "easy", "difficulties": [1], "steps": 2, "review_fraction": 0.5},
    {"name": "hard", "difficulties": [2, 3], "steps": 2, "review_fraction": 0.5},
]
FAST = {
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "steps_per_generation": 1,
    "max_completion_length": 12,
    "learning_rate": 1e-3,
    "save_steps": 1,
    "table_every": 2,
    "val_every": 2,
    "val_samples": 4,
    "curriculum": {"stages": STAGES},
}
#: What the stage must log per step (TRL's names plus ours).
HEALTH = (
    "dead_group_rate",
    "frac_reward_zero_std",
    "curriculum_stage",
    "curriculum/review_share",
    "reward",
    "reward_std",
    "rewards/wafersage_reward/mean",
    "rewards/wafersage_reward/std",
    "rewards/reward_rubric/mean",
    "rewards/reward_rouge/mean",
    "kl",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "completions/mean_length",
    "completions/clipped_ratio",
)


# ------------------------------------------------------------------ curriculum (fast)
def _table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(n)],
            "difficulty": rng.integers(1, 4, n),
            "pool": np.where(np.arange(n) % 3 == 0, LEARNING, REVIEW),
        }
    )


def test_schedule_goes_easy_to_hard_mixing_review_and_learning() -> None:
    table = _table()
    stages = parse_stages(STAGES)
    sched = Schedule(table, stages, Layout(prompts_per_chunk=4, micro_per_chunk=1, grad_accum=1), seed=0)
    assert len(sched.chunks) == 4 and sched.chunk_stage == [0, 0, 1, 1]
    assert [sched.stage_at(s) for s in range(6)] == [0, 0, 1, 1, 1, 1]
    for chunk, st in zip(sched.chunks, sched.chunk_stage, strict=True):
        rows = table.iloc[chunk]
        assert set(rows["difficulty"]) <= set(stages[st].difficulties)
        assert (rows["pool"] == REVIEW).sum() == 2 and (rows["pool"] == LEARNING).sum() == 2
    again = Schedule(table, stages, Layout(4, 1, 1), seed=0)
    assert again.chunks == sched.chunks
    assert Schedule(table, stages, Layout(4, 1, 1), seed=1).chunks != sched.chunks
    (flat,) = flat_stage(stages)
    assert flat.difficulties == (1, 2, 3) and flat.steps == 4


def test_type_fraction_sets_the_share_of_type_questions_in_each_pool() -> None:
    rng = np.random.default_rng(1)
    table = _table(240).assign(category=rng.choice(["type", "spatial", "morphology", "root_cause"], 240))
    stages = [{**s, "type_fraction": 0.5} for s in STAGES]
    sched = Schedule(table, parse_stages(stages), Layout(4, 1, 1), seed=0)
    for chunk in sched.chunks:
        rows = table.iloc[chunk]
        for pool in (REVIEW, LEARNING):  # 2 prompts a pool, one of them a type question
            assert (rows[rows["pool"] == pool]["category"] == "type").sum() == 1
    only = parse_stages([{**STAGES[0], "steps": 60, "type_fraction": 1.0}])
    many = Schedule(table, only, Layout(4, 1, 1), 0)
    assert set(table.iloc[[i for c in many.chunks for i in c]]["category"]) == {"type"}
    plain = Schedule(table, parse_stages([{**STAGES[0], "steps": 60}]), Layout(4, 1, 1), 0)
    drawn = table.iloc[[i for c in plain.chunks for i in c]]["category"]
    assert 0.1 < (drawn == "type").mean() < 0.4  # as the pools hold them (a quarter here)
    unset = parse_stages([{**STAGES[0], "steps": 60}])  # unset: the categories play no part at all
    assert Schedule(table.drop(columns="category"), unset, Layout(4, 1, 1), 0).chunks == plain.chunks
    mixed = [{**stages[0], "type_fraction": 0.2}, {**stages[1], "type_fraction": 0.6}]
    (flat,) = flat_stage(parse_stages(mixed))
    assert flat.type_fraction == pytest.approx(0.4)
    with pytest.raises(WaferSageError, match="on every curriculum stage or on none"):
        flat_stage(parse_stages([stages[0], STAGES[1]]))
    with pytest.raises(WaferSageError, match="type_fraction"):
        Schedule(table.assign(category="spatial"), parse_stages(stages), Layout(4, 1, 1), seed=0)
    with pytest.raises(WaferSageError, match="type_fraction needs the prompts' category column"):
        Schedule(table.drop(columns="category"), parse_stages(stages), Layout(4, 1, 1), seed=0)
    with pytest.raises(
        WaferSageError, match=r"stages\.0\.type_fraction: input should be less than or equal to 1"
    ):
        parse_stages([{**STAGES[0], "type_fraction": 1.5}])


def test_sampler_has_trl_repeat_layout_and_layout_maps_steps() -> None:
    sched = Schedule(_table(), parse_stages(STAGES), Layout(4, 2, 2), seed=0)
    # grad_accum 2, steps_per_generation 2: one chunk per optimizer step
    assert sched.stage_at(0) == 0 and sched.stage_at(2) == 1
    out = list(CurriculumSampler(sched, mini_repeat_count=3, repeat_count=2))
    first = sched.chunks[0]
    assert out[:24] == [i for i in first for _ in range(3)] * 2
    assert len(out) == len(CurriculumSampler(sched, 3, 2)) == 4 * 4 * 3 * 2
    with pytest.raises(WaferSageError, match="divide"):
        Schedule(_table(), parse_stages([{"difficulties": [1], "steps": 3}]), Layout(4, 2, 1), seed=0)


def test_bad_params_are_one_line_errors() -> None:

    for selection_or_scoring in ("val", "test"):  # GSPO never learns on the split that selects or scores
        with pytest.raises(
            WaferSageError, match="gspo.curriculum.learning_split: input should be 'train' or 'rl'"
        ):
            validated("gspo", {"curriculum": {"learning_split": selection_or_scoring}})
    with pytest.raises(WaferSageError, match="gspo.max_prompt_length: unknown key"):
        validated("gspo", {"max_prompt_length": 128})
    with pytest.raises(WaferSageError, match=r"stages\.0\.difficulties\[0\]: input should be 1, 2 or 3"):
        parse_stages([{"difficulties": [4], "steps": 1}])
    with pytest.raises(WaferSageError, match=r"stages\.1\.steps: input should be greater than or equal to 1"):
        parse_stages([{"difficulties": [1], "steps": 1}, {"difficulties": [2], "steps": 0}])
    with pytest.raises(WaferSageError, match=r"stages\.0\.rate: unknown key"):
        parse_stages([{"difficulties": [1], "steps": 1, "rate": 2}])
    with pytest.raises(WaferSageError, match="no prompts"):
        t = _table().assign(difficulty=1)
        Schedule(t, parse_stages([{"difficulties": [3], "steps": 1}]), Layout(4, 1, 1), seed=0)
    with pytest.raises(WaferSageError, match="differ"):
        validated("gspo", {"curriculum": {"learning_split": "train"}})
    with pytest.raises(WaferSageError, match="type_reward_weight"):
        validated("gspo", {"type_reward_weight": -1})
    with pytest.raises(WaferSageError, match="val_every"):
        validated("gspo", {"val_every": -1})
    with pytest.raises(WaferSageError, match="must divide by num_generations"):
        validated("gspo", {"per_device_train_batch_size": 6, "num_generations": 4})
    p = validated("gspo", {})
    assert p["importance_sampling_level"] == "sequence" and p["loss_type"] == "grpo"
    assert (p["epsilon"], p["epsilon_high"]) == (3e-4, 4e-4)


def test_missing_input_is_a_one_line_error_and_writes_nothing(tmp_path) -> None:
    from wafersage.stages import gspo

    out, metrics = tmp_path / "gspo", tmp_path / "metrics.json"
    with pytest.raises(WaferSageError, match="input not found"):
        gspo.run({}, tmp_path, tmp_path, tmp_path, tmp_path / "nope.json", out, metrics, tmp_path / "ck")
    assert not out.exists() and not metrics.exists()


def test_grpo_config_weights_the_type_term() -> None:
    from wafersage.score import reward
    from wafersage.stages import gspo

    n = len(reward.reward_weights(1.0))
    args = gspo.grpo_config(validated("gspo", {"type_reward_weight": 2.0}), Path("unused"), n, 3)
    assert args.reward_weights == [1.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="reward weights"):
        gspo.grpo_config(validated("gspo", {}), Path("unused"), n - 1, 3)


def test_type_macro_f1_and_the_fixed_val_sample() -> None:
    from wafersage.stages import gspo

    # Center: tp 1, fp 1 -> 2/3; Loc: fn 1 -> 0; "not Loc" names no Loc
    assert gspo.type_macro_f1([["Center"], ["Loc"]], ["Center.", "Not Loc, a Center."]) == 0.3333
    assert gspo.type_macro_f1([["Center"], ["Loc"]], ["Center.", "Loc."]) == 1.0
    n = 40
    val = pd.DataFrame(
        {
            "pool": "val",
            "category": ["type", "type", "spatial", "spatial"] * (n // 4),
            "labels": [[]] + [["Loc"]] * (n - 1),
        }
    )
    rows = gspo.val_type_rows(val, 5, seed=0)
    assert len(rows) == 5 and (rows["category"] == "type").all() and (rows["labels"].map(len) > 0).all()
    assert rows.index.equals(gspo.val_type_rows(val, 5, seed=0).index)
    assert len(gspo.val_type_rows(val, 100, seed=0)) == n // 2 - 1  # the unlabelled one is left out
    with pytest.raises(WaferSageError, match="val curve"):
        gspo.val_type_rows(val.assign(category="spatial"), 5, seed=0)


def test_gspo_learns_on_rl_and_draws_its_curve_from_val(setup) -> None:
    """The prompts come from train (review) and rl (learning); the val split, which selects, is
    not among them and feeds only the curve."""
    from wafersage.stages import gspo

    p = validated("gspo", FAST)
    table = gspo.prompt_table(setup["vqa"], setup["rubrics"], p["curriculum"])
    wafer = table["pair_id"].str.split("#").str[0]
    split = {
        s: set(pd.read_parquet(setup["vqa"] / f"{s}.parquet")["wafer_id"]) for s in ("train", "rl", "val")
    }
    assert set(wafer[table["pool"] == REVIEW]) == split["train"]
    assert set(wafer[table["pool"] == LEARNING]) == split["rl"]
    assert split["val"].isdisjoint(wafer)
    val = gspo.split_rows(setup["vqa"], "val", "val", read_records(setup["rubrics"]))
    assert set(val["pair_id"].str.split("#").str[0]) == split["val"]


def test_val_curve_from_the_log_history() -> None:
    from wafersage.modeling.gspo_trainer import val_curve

    hist = [
        {"val_type_macro_f1": 0.2, "step": 0},
        {"loss": 0.1, "reward": 0.3, "step": 1},
        {"loss": 0.1, "reward": 0.5, "train_reward": 0.4, "val_type_macro_f1": 0.25, "step": 2},
        {"loss": 0.1, "reward": 0.6, "train_reward": 0.6, "val_type_macro_f1": 0.1, "step": 3},
        {"train_runtime": 1.0, "step": 3},
    ]
    assert val_curve(hist, "val_type_macro_f1") == [
        {"step": 0, "train_reward": None, "val_type_macro_f1": 0.2},
        {"step": 2, "train_reward": 0.4, "val_type_macro_f1": 0.25},
        {"step": 3, "train_reward": 0.6, "val_type_macro_f1": 0.1},
    ]


def test_dead_group_rate_and_summary() -> None:
    import torch

    from wafersage.modeling.gspo_trainer import dead_group_rate
    from wafersage.stages.gspo import summarize

    r = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, float("nan"), 0.2, 0.2, float("nan")])
    assert dead_group_rate(r, 4) == pytest.approx(2 / 3)
    hist = [{"reward": 0.1 * i, "dead_group_rate": 0.0 if i % 2 else 0.5} for i in range(20)] + [{"x": 1}]
    m = summarize(hist, 20, 12.345)
    assert m == {
        "dead_group_rate": 0.25,
        "reward_mean_first": pytest.approx(0.05),
        "reward_mean_last": pytest.approx(1.85),
        "train_wall_s": 12.35,
        "steps": 20,
    }
    with pytest.raises(WaferSageError, match="no rewards"):
        summarize([{"loss": 1.0}], 1, 1.0)


# ------------------------------------------------------------------ the tiny model (slow)
@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    import os

    from wafersage.score.config import HARDENED, save
    from wafersage.stages import init_model

    root = tmp_path_factory.mktemp("gspo")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    vqa, rubrics = write_inputs(root, n_wafers=12, size=SIZE)
    init_model.run(
        {"vision_init": "off", "vocab_size": 400, "grounding": "image"},
        {},
        vqa / "train.parquet",
        Path("x"),
        root / "sft",
        SIZE,
    )
    save(HARDENED, root / "reward_config.json")
    return {"sft": root / "sft", "vqa": vqa, "rubrics": rubrics, "reward": root / "reward_config.json"}


def _trainer(setup, ckpt: Path, params: dict | None = None, callbacks=None):
    from wafersage.stages import gspo

    p = validated("gspo", params or FAST)
    table = gspo.prompt_table(setup["vqa"], setup["rubrics"], p["curriculum"])
    val = gspo.split_rows(setup["vqa"], "val", "val", read_records(setup["rubrics"]))
    return gspo.build_trainer(p, setup["sft"], table, setup["reward"], ckpt, False, callbacks, val=val), table


@pytest.mark.slow
def test_three_step_gspo_changes_weights_and_logs_every_health_metric(setup, tmp_path) -> None:
    import mlflow
    import torch
    from transformers import AutoModelForImageTextToText

    from wafersage.modeling.processor import load_processor
    from wafersage.stages import gspo

    params = {**FAST, "curriculum": {"stages": [{**STAGES[0], "steps": 1}, {**STAGES[1], "steps": 2}]}}
    out, metrics = tmp_path / "gspo", tmp_path / "metrics.json"
    m = gspo.run(
        params, setup["sft"], setup["vqa"], setup["rubrics"], setup["reward"], out, metrics, tmp_path / "ck"
    )
    assert set(m) == {"dead_group_rate", "reward_mean_first", "reward_mean_last", "train_wall_s", "steps"}
    assert json.loads(metrics.read_text()) == m and m["steps"] == 3
    assert 0.0 <= m["dead_group_rate"] <= 1.0
    before = AutoModelForImageTextToText.from_pretrained(str(setup["sft"])).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(str(out)).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    assert type(load_processor(out)).__name__ == "WaferQwen3VLProcessor"
    assert json.loads((out / "wafersage.json").read_text())["stage"] == "gspo"

    client = mlflow.MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`wafersage.stage` = 'gspo'"
    )
    logged = run.data.metrics
    assert not [k for k in HEALTH if k not in logged], [k for k in HEALTH if k not in logged]
    hist = client.get_metric_history(run.info.run_id, "curriculum_stage")
    assert sorted({(h.step, h.value) for h in hist}) == [(1, 0.0), (2, 1.0), (3, 1.0)]
    assert client.get_metric_history(run.info.run_id, "kl")[-1].value >= 0.0
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "gspo/completions")]
    assert arts == ["gspo/completions/step_00002.json"]
    # the val curve: step 0, every val_every=2 steps and the last, in MLflow and curve.csv
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert list(curve.columns) == list(gspo.CURVE_COLUMNS)
    assert curve["step"].tolist() == [0, 2, 3]
    assert curve["train_reward"].isna().tolist() == [True, False, False]
    assert curve["val_type_macro_f1"].between(0, 1).all()
    for key, steps in (("val_type_macro_f1", [0, 2, 3]), ("train_reward", [2, 3])):
        assert sorted(h.step for h in client.get_metric_history(run.info.run_id, key)) == steps
    assert "curve.csv" in [a.path for a in client.list_artifacts(run.info.run_id)]
    table = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=arts[0])).read_text()
    )
    assert {"prompt", "completion", "advantage", "reward/wafersage_reward"} <= set(table["columns"])
    assert len(table["data"]) == FAST["per_device_train_batch_size"]


class _Killed(RuntimeError):
    pass


@pytest.mark.slow
def test_killed_run_resumes_at_the_right_step_and_curriculum_stage(setup, tmp_path) -> None:
    from transformers import TrainerCallback

    from wafersage.modeling.finetune import last_checkpoint

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                raise _Killed("killed after checkpoint-2")

    # the default layout: one rollout (4 prompts x G=4) feeds two optimizer steps
    params = {**FAST, "steps_per_generation": 2}
    ck = tmp_path / "ck"
    trainer, table = _trainer(setup, ck, params, callbacks=[KillAfterSave()])
    with pytest.raises(_Killed):
        trainer.train()
    ids_of = [list(table["pair_id"].iloc[c]) for c in trainer.schedule.chunks]
    assert len(ids_of) == 2 and all(len(ids) == 4 for ids in ids_of)
    assert [(s, st) for s, st, _ in trainer.rollout_log] == [(0, 0)]
    assert [ids for _, _, ids in trainer.rollout_log] == ids_of[:1]

    resume = last_checkpoint(ck)
    assert resume is not None and resume.endswith("checkpoint-2")
    again, _ = _trainer(setup, ck, params)
    result = again.train(resume_from_checkpoint=resume)
    assert result.global_step == 4
    assert [(s, st) for s, st, _ in again.rollout_log] == [(2, 1)]
    assert [ids for _, _, ids in again.rollout_log] == ids_of[1:]
    stages = {h["step"]: h["curriculum_stage"] for h in again.state.log_history if "loss" in h}
    assert stages == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0}
    assert [r["step"] for r in trainer.val_curve()] == [0, 2]
    assert [r["step"] for r in again.val_curve()] == [0, 2, 4]  # the first two from checkpoint-2


@pytest.mark.slow
def test_reward_ranks_a_good_completion_above_a_bad_one_in_the_trainer_signature(setup, tmp_path) -> None:
    import torch
    from trl.data_utils import prepare_multimodal_messages

    from wafersage.score.reward import TYPE_EXACT

    trainer, table = _trainer(setup, tmp_path / "ck", {**FAST, "type_reward_weight": 2.0})
    ds = trainer.train_dataset
    names = trainer.reward_func_names
    assert names[0] == "wafersage_reward" and names[-1] == TYPE_EXACT
    assert trainer.reward_weights.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    bad = "The wafer map shows a defect pattern; further analysis is recommended."
    trainer.model.train()  # as inside trainer.train()

    def rewards_of(row: int, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-function rewards, the training reward TRL aggregates) of one group of G=4."""
        inputs = [ds[row]] * 4  # as the dataloader hands a group to the trainer
        prompts = [prepare_multimodal_messages(x["prompt"], images=x["images"]) for x in inputs]
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        r = trainer._calculate_rewards(inputs, prompts, completions, [[1, 2]] * 4)
        assert len(names) == r.shape[1]
        return r, (r * trainer.reward_weights.unsqueeze(0)).nansum(1)

    row = next(i for i in range(len(ds)) if ds[i]["category"] == "type")
    good, label = ds[row]["answer"], ds[row]["labels"][0]
    rewards, total = rewards_of(row, [good, bad, good, f"Not {label}."])
    overall, exact = rewards[:, 0].tolist(), rewards[:, -1].tolist()
    assert overall[0] == overall[2] and overall[0] > overall[1] + 0.2 and overall[0] > overall[3] + 0.2
    assert exact == [1.0, 0.0, 1.0, 0.0]
    assert total.tolist() == pytest.approx([o + 2.0 * e for o, e in zip(overall, exact, strict=True)])
    assert trainer._metrics["train"]["dead_group_rate"][-1] == 0.0

    other = next(i for i in range(len(ds)) if ds[i]["category"] != "type")
    rewards, total = rewards_of(other, [ds[other]["answer"], bad, label, ""])
    assert torch.isnan(rewards[:, -1]).all()  # no type term off type questions
    assert total.tolist() == pytest.approx(rewards[:, 0].tolist())
