"""The sft stage: TRL SFT on a tiny model lowers val loss, resumes from its checkpoint, LoRA
trains only adapters, bad inputs are one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from vqa_tables import write_vqa

from wafersage.config import validated
from wafersage.errors import WaferSageError

SIZE = 64
FAST = {
    "max_steps": 20,
    "eval_steps": 10,
    "logging_steps": 5,
    "per_device_train_batch_size": 8,
    "warmup_steps": 2,
    "learning_rate": 3e-3,
    "eval_max_samples": 24,
    "type_eval_max": 12,
    "sample_generations": 4,
    "max_new_tokens": 8,
}


#: Runs the sft stage and SIGKILLs itself in the middle of saving checkpoint-20.
KILL_MID_SAVE = """
import json, os, signal, sys
from pathlib import Path
from transformers import Trainer
from wafersage.stages import sft

def die_at_20(self, output_dir):
    if self.state.global_step == 20:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, output_dir)

real = Trainer._save_rng_state
Trainer._save_rng_state = die_at_20
p, base, vqa, out, ck = json.loads(sys.argv[1]), *map(Path, sys.argv[2:])
sft.run(p, base, vqa, out, out.parent / "killed.json", ck)
"""


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    import os

    from wafersage.stages import init_model

    root = tmp_path_factory.mktemp("sft")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    vqa = write_vqa(root / "vqa", n_wafers=40, size=SIZE)
    init_model.run(
        {"vision_init": "off", "vocab_size": 400}, {}, vqa / "train.parquet", Path("x"), root / "base", SIZE
    )
    return root / "base", vqa


def _val_loss_of(base: Path, vqa: Path, tmp: Path) -> float:
    from wafersage.stages import sft

    p = validated("sft", FAST)
    val = pd.read_parquet(vqa / "val.parquet")
    trainer = sft.build_trainer(p, base, pd.read_parquet(vqa / "train.parquet"), val, tmp / "ck0", False)
    return float(trainer.evaluate()["eval_loss"])


@pytest.mark.slow
def test_sft_lowers_val_loss_and_resumes_from_its_checkpoint(setup, tmp_path):
    from transformers import AutoModelForImageTextToText

    from wafersage.modeling.processor import load_processor
    from wafersage.stages import sft

    base, vqa = setup
    before = _val_loss_of(base, vqa, tmp_path)
    ck, out, metrics = tmp_path / "ck", tmp_path / "sft", tmp_path / "metrics.json"
    m = sft.run(FAST, base, vqa, out, metrics, ck)
    assert set(m) == {"type_macro_f1", "type_accuracy", "val_loss", "train_wall_s", "steps"}
    assert json.loads(metrics.read_text()) == m
    assert m["steps"] == 20
    assert m["val_loss"] < before - 0.5, (before, m["val_loss"])
    assert 0.0 <= m["type_macro_f1"] <= 1.0 and 0.0 <= m["type_accuracy"] <= 1.0
    assert type(load_processor(out)).__name__ == "WaferQwen3VLProcessor"
    AutoModelForImageTextToText.from_pretrained(str(out))
    # TRL's MLflow callback logged into the stage's own run: losses, LR curve, sample generations
    import mlflow

    runs = mlflow.search_runs(experiment_names=["wafersage"], filter_string="tags.`wafersage.stage` = 'sft'")
    assert len(runs) == 1
    client = mlflow.tracking.MlflowClient()
    run_id = runs.run_id.iloc[0]
    assert len(client.get_metric_history(run_id, "learning_rate")) == 4  # logging_steps 5 of 20
    assert len(client.get_metric_history(run_id, "eval_loss")) >= 2
    assert runs["metrics.final_type_macro_f1"].iloc[0] == m["type_macro_f1"]
    assert any(a.path.endswith("sample_generations.json") for a in client.list_artifacts(run_id, "sft"))
    assert any(c.startswith("tags.data.vqa_train.md5") for c in runs.columns)

    # SIGKILL while checkpoint-20 is being saved (weights and optimizer written, trainer state not
    # yet): the rerun ignores the half-saved folder, resumes from checkpoint-10 and ends where an
    # uninterrupted run ends
    killed_ck, killed_out = tmp_path / "killed_ck", tmp_path / "killed_sft"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_MID_SAVE,
            json.dumps(FAST),
            str(base),
            str(vqa),
            str(killed_out),
            str(killed_ck),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    (killed_run,) = list(killed_ck.iterdir())
    half = killed_run / "checkpoint-20"
    assert (half / "optimizer.pt").exists() and not (half / "trainer_state.json").exists()
    assert not killed_out.exists()  # no partial model folder
    m_resumed = sft.run(FAST, base, vqa, killed_out, tmp_path / "killed.json", killed_ck)
    assert json.loads((killed_out / "wafersage.json").read_text())["resumed_from_step"] == 10
    assert m_resumed["steps"] == 20 and (half / "trainer_state.json").exists()
    assert m_resumed["val_loss"] == pytest.approx(m["val_loss"], rel=0.02, abs=0.02)
    assert m_resumed["type_macro_f1"] == pytest.approx(m["type_macro_f1"], abs=0.1)

    # a kill after step 10: only checkpoint-10 survives; the rerun continues from it
    (run_dir,) = list(ck.iterdir())
    shutil.rmtree(run_dir / "checkpoint-20")
    assert (run_dir / "checkpoint-10").is_dir()
    m2 = sft.run(FAST, base, vqa, out, metrics, ck)
    info = json.loads((out / "wafersage.json").read_text())
    assert info["resumed_from_step"] == 10 and m2["steps"] == 20
    state = json.loads((run_dir / "checkpoint-20" / "trainer_state.json").read_text())
    logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert logged == [5, 10, 15, 20]  # steps 1-10 from the first run, 11-20 after the resume


def test_collator_marks_the_assistant_tokens_as_the_stock_processor_does(setup, tmp_path, monkeypatch):
    """The processor's whole-row assistant mask gives TRL's collator the batches the stock
    (token-by-token) method gives, and the labels it leaves are exactly the answers."""
    import torch
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    from wafersage.modeling.processor import WaferQwen3VLProcessor
    from wafersage.stages import sft

    base, vqa = setup
    train = pd.read_parquet(vqa / "train.parquet")
    trainer = sft.build_trainer(validated("sft", FAST), base, train, train.iloc[:0], tmp_path / "ck", False)
    data, collate = trainer.train_dataset, trainer.data_collator
    batches = [[dict(data[i]) for i in range(s, min(s + 8, len(data)))] for s in range(0, 48, 8)]
    ours = [collate([dict(e) for e in b]) for b in batches]
    stock_mask = Qwen3VLProcessor._adjust_assistant_masks_indices
    monkeypatch.setattr(WaferQwen3VLProcessor, "_adjust_assistant_masks_indices", stock_mask)
    stock = [collate([dict(e) for e in b]) for b in batches]
    tokenizer = trainer.processing_class.tokenizer
    for batch, mine, theirs in zip(batches, ours, stock, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
        for example, labels in zip(batch, mine["labels"], strict=True):
            answer = example["messages"][-1]["content"]
            answer = answer if isinstance(answer, str) else answer[-1]["text"]
            kept = tokenizer.decode(labels[labels != -100]).replace(" ", "")
            assert kept.startswith(answer.replace(" ", "")), (kept, answer)


def test_lora_params_are_the_only_trainable_ones(setup, tmp_path):
    from wafersage.modeling.finetune import final_model
    from wafersage.stages import sft

    base, vqa = setup
    p = validated("sft", {**FAST, "lora": {"enabled": True, "r": 4, "alpha": 8}})
    df = pd.read_parquet(vqa / "train.parquet")
    trainer = sft.build_trainer(p, base, df, df.iloc[:4], tmp_path / "ck", True)
    trainable = [n for n, t in trainer.model.named_parameters() if t.requires_grad]
    frozen = [n for n, t in trainer.model.named_parameters() if not t.requires_grad]
    assert trainable and frozen
    assert all("lora_A" in n or "lora_B" in n for n in trainable)
    assert any("visual" in n for n in frozen) and not any("visual" in n for n in trainable)
    merged = final_model(trainer, lora=True, merge=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_type_oversampling_repeats_only_type_pairs(setup):
    from wafersage.stages import sft

    df = pd.read_parquet(setup[1] / "train.parquet")
    more = sft.oversample_type(df, 3)
    n_type = int((df["category"] == "type").sum())
    assert len(more) == len(df) + 2 * n_type
    assert (more["category"] == "type").sum() == 3 * n_type
    assert sft.oversample_type(df, 1) is df


def test_type_balance_shares_the_repeats_out_by_class():
    from wafersage.errors import WaferSageError
    from wafersage.stages import sft

    labels = [["none"]] * 90 + [["Near-full"]] * 10
    df = pd.DataFrame(
        {
            "category": ["type"] * 100 + ["spatial"] * 100,
            "labels": labels * 2,
            "answer": ["a"] * 200,
        }
    )
    plain = sft.oversample_type(df, 4, 0.0)
    sqrt = sft.oversample_type(df, 4, 0.5)
    flat = sft.oversample_type(df, 4, 1.0)

    def per_class(d: pd.DataFrame) -> dict[str, int]:
        return d[d["category"] == "type"]["labels"].map(lambda v: v[0]).value_counts().to_dict()

    assert per_class(plain) == {"none": 360, "Near-full": 40}
    # sqrt: weights 90**-.5 and 10**-.5 share a budget of 400 -> 3.3 (rounds to 3) and 10 a pair
    assert per_class(sqrt) == {"none": 270, "Near-full": 100}
    assert per_class(flat) == {"none": 180, "Near-full": 200}  # 2.2 rounds to 2, 20
    assert (sqrt["category"] == "spatial").sum() == 100  # other pairs untouched
    # a budget of 100: none 0.56 a pair is raised to once, Near-full 5
    assert per_class(sft.oversample_type(df, 1, 1.0)) == {"none": 90, "Near-full": 50}
    with pytest.raises(WaferSageError, match="type_balance"):
        sft.oversample_type(df, 4, 1.5)


def test_lora_auto_is_on_for_a_real_base_only():
    from wafersage.modeling.finetune import lora_enabled

    p = validated("sft", {})
    assert lora_enabled(p, "tiny") is False
    assert lora_enabled(p, "/models/Qwen3-VL-4B-Instruct") is True
    assert lora_enabled(validated("sft", {"lora": {"enabled": False}}), "/m") is False


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("missing_split", "VQA split not found"),
        ("empty_split", "VQA split is empty"),
        ("missing_base", "not a wafersage model folder"),
        ("bad_param", r"invalid params \(sft.epochs: unknown key\)"),
    ],
)
def test_bad_inputs_are_one_line_errors(case, rule, setup, tmp_path):
    from wafersage.stages import sft

    base, vqa = setup
    params: dict = dict(FAST)
    if case in ("missing_split", "empty_split"):
        vqa2 = tmp_path / "vqa"
        shutil.copytree(vqa, vqa2)
        if case == "missing_split":
            (vqa2 / "val.parquet").unlink()
        else:
            pd.read_parquet(vqa2 / "test.parquet").iloc[:0].to_parquet(vqa2 / "test.parquet")
        vqa = vqa2
    elif case == "missing_base":
        base = tmp_path / "no-base"
    else:
        params["epochs"] = 3
    with pytest.raises(WaferSageError, match=rule) as e:
        sft.run(params, base, vqa, tmp_path / "out", tmp_path / "m.json", tmp_path / "ck")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_rule_score_from_the_real_vqa_chain(tmp_path):
    """synthetic raw -> describe -> rubrics -> vqa (the real stages) -> init_model -> sft with the
    aligned rule score's inputs: metrics carry ``rule_score`` in [0, 1]."""
    from wafersage.score.config import ScoreConfig, save
    from wafersage.stages import describe, init_model, rubrics, sft, vqa
    from wafersage.wafers.rawtable import write_raw
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    raw = tmp_path / "raw.parquet"
    write_raw(generate(SyntheticConfig.from_dict({"n_wafers": 100, "seed": 1})), raw)  # 4 lots: one a split
    describe.run(
        {"backend": "analytic", "labels_from": "raw"},
        raw,
        None,
        tmp_path / "d.jsonl",
        tmp_path / "dm.json",
        SIZE,
    )
    rubrics.run({}, tmp_path / "d.jsonl", tmp_path / "r.jsonl", tmp_path / "rm.json")
    vqa.run({"seed": 0}, tmp_path / "r.jsonl", raw, tmp_path / "vqa", tmp_path / "vm.json", SIZE)
    save(ScoreConfig(), tmp_path / "reward.json")
    init_model.run(
        {"vision_init": "off", "vocab_size": 400},
        {},
        tmp_path / "vqa" / "train.parquet",
        Path("x"),
        tmp_path / "base",
        SIZE,
    )
    params = {**FAST, "max_steps": 4, "eval_steps": 2, "rule_eval_max": 16}
    m = sft.run(
        params,
        tmp_path / "base",
        tmp_path / "vqa",
        tmp_path / "sft",
        tmp_path / "m.json",
        tmp_path / "ck",
        tmp_path / "r.jsonl",
        tmp_path / "reward.json",
    )
    assert set(m) == set(sft.METRIC_KEYS)
    assert 0.0 <= m["rule_score"] <= 1.0
    with pytest.raises(WaferSageError, match="rule-score input not found"):
        sft.run(
            params,
            tmp_path / "base",
            tmp_path / "vqa",
            tmp_path / "sft2",
            tmp_path / "m2.json",
            tmp_path / "ck",
            tmp_path / "nope.jsonl",
            tmp_path / "reward.json",
        )
