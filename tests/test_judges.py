"""The OpenAI-compatible judge against a local HTTP server (good reply, garbage, timeout, cache), and
the judge -> align stages on a tiny pool."""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest
from fake_openai import FakeChatServer

from wafersage.score.judges import JudgeItem, OpenAIJudge, parse_reply

RUBRIC = {
    "defect_types": {"must_hit": ["Center"], "must_avoid": ["Loc"]},
    "spatial": {"must_hit": ["central zone"]},
}


def _respond(server: FakeChatServer, body: dict) -> str:
    if server.mode == "slow":
        time.sleep(1.5)
    return {
        "good": '```json\n{"score": 7, "rationale": "names Center, misses the zone"}\n```',
        "garbage": "I think it is pretty good!",
        "slow": '{"score": 1, "rationale": "late"}',
    }[server.mode]


@pytest.fixture()
def server():
    s = FakeChatServer(_respond)
    yield s
    s.close()


def _item(answer: str = "A Center blob.") -> JudgeItem:
    return JudgeItem(
        "Which pattern?", answer, "Center: a blob in the central zone.", RUBRIC, ["Center"], image=b"\x89PNG"
    )


def test_good_reply_is_parsed_and_cached(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    judge = OpenAIJudge(
        server.url, "judge-model", tmp_path / "cache", api_key_env="JUDGE_KEY", timeout_s=5, retries=1
    )
    v = judge.judge([_item()])[0]
    assert v.score == 7 and "Center" in v.rationale
    assert server.auth[0] == "Bearer sk-secret-123"
    text = json.dumps(server.requests[0]["messages"])
    assert "must_hit" in text and "image_url" in text and "sk-secret" not in text
    again = OpenAIJudge(server.url, "judge-model", tmp_path / "cache", api_key_env="JUDGE_KEY", timeout_s=5)
    assert again.judge([_item()])[0].score == 7
    assert again.stats["cache_hits"] == 1 and len(server.requests) == 1
    assert "sk-secret" not in json.dumps(dict(judge.stats))


def test_garbage_reply_is_counted_not_raised(server, tmp_path) -> None:
    server.mode = "garbage"
    judge = OpenAIJudge(server.url, "m", tmp_path, timeout_s=5, retries=2, backoff_s=0.0)
    v = judge.judge([_item()])[0]
    assert math.isnan(v.score)
    assert judge.stats["unparsable"] == 3 and judge.stats["retries"] == 2 and judge.stats["failed"] == 1
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


def test_timeout_is_counted_not_raised(server, tmp_path) -> None:
    server.mode = "slow"
    judge = OpenAIJudge(server.url, "m", tmp_path, timeout_s=0.3, retries=1, backoff_s=0.0)
    v = judge.judge([_item()])[0]
    assert math.isnan(v.score) and judge.stats["timeouts"] == 2


def test_unreachable_endpoint_is_counted(tmp_path) -> None:
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "m", tmp_path, timeout_s=0.5, retries=0)
    assert math.isnan(judge.judge([_item()])[0].score)
    assert judge.stats["errors.APIConnectionError"] == 1


def test_parse_reply_bounds() -> None:
    assert parse_reply('{"score": 11, "rationale": "x"}') is None
    assert parse_reply('{"rationale": "x"}') is None
    assert parse_reply('Sure: {"score": 3.5, "rationale": "ok"}').score == 3.5


@pytest.mark.slow  # ~10 s of it is MLflow creating its sqlite schema
def test_judge_and_align_stages(tmp_path, monkeypatch) -> None:
    from wafersage.annotation.attributes import wafer_attributes
    from wafersage.annotation.knowledge import load_knowledge_base
    from wafersage.annotation.rubric import build_rubric
    from wafersage.annotation.vqa import qa_pairs
    from wafersage.score.config import load
    from wafersage.stages import align, judge
    from wafersage.wafers.rawtable import decode_map
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    kb = load_knowledge_base()
    recs = []
    for r in generate(SyntheticConfig(n_wafers=16, seed=1, noise_rate=0.0)).itertuples():
        attrs = wafer_attributes(decode_map(r.map, r.rows, r.cols), list(r.labels))
        rub = build_rubric(r.wafer_id, list(r.labels), attrs, kb, "summary of it")
        recs.append(
            {
                "wafer_id": r.wafer_id,
                "labels": list(r.labels),
                "attributes": attrs,
                "rubric": rub.model_dump(mode="json"),
                "rubric_id": rub.rubric_id(),
            }
        )
    (tmp_path / "rubrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    (tmp_path / "vqa").mkdir()
    pd.DataFrame([p for r in recs for p in qa_pairs(r)]).to_parquet(tmp_path / "vqa" / "val.parquet")
    m = judge.run(
        {"n_pairs": 20, "seed": 0},
        tmp_path / "vqa",
        tmp_path / "rubrics.jsonl",
        tmp_path / "pool.parquet",
        tmp_path / "scores.parquet",
        tmp_path / "judge.json",
    )
    assert m["items"] > 150 and m["unscored"] == 0
    # a rerun that fails while writing its second output commits none of the three
    before = {n: (tmp_path / n).read_bytes() for n in ("pool.parquet", "scores.parquet", "judge.json")}
    real_to_parquet, calls = pd.DataFrame.to_parquet, []

    def fail_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_to_parquet(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_parquet", fail_second)
        with pytest.raises(OSError, match="disk full"):
            judge.run(
                {"n_pairs": 20, "seed": 1},
                tmp_path / "vqa",
                tmp_path / "rubrics.jsonl",
                tmp_path / "pool.parquet",
                tmp_path / "scores.parquet",
                tmp_path / "judge.json",
            )
    assert len(calls) == 2
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert not list(tmp_path.glob(".*.tmp-*"))
    res = align.run(
        {"n_trials": 4, "n_startup_trials": 2, "dead_groups": 50, "throughput_batch": 64},
        tmp_path / "pool.parquet",
        tmp_path / "scores.parquet",
        tmp_path / "rubrics.jsonl",
        tmp_path / "rc.json",
        tmp_path / "align.json",
        tmp_path / "scatter.csv",
    )
    metrics = json.loads((tmp_path / "align.json").read_text())
    assert set(metrics) == {
        "spearman_heldout",
        "kendall_heldout",
        "spearman_paper_default",
        "spearman_bleu_rouge",
        "dead_group_rate",
        "rule_scores_per_s",
        "reference_judge_note",
    }
    # the aligned weights rank the held-out answers better than the paper's weights and BLEU/ROUGE
    assert res["spearman_heldout"] > metrics["spearman_paper_default"] + 0.05
    assert res["spearman_heldout"] > metrics["spearman_bleu_rouge"] + 0.05
    assert metrics["rule_scores_per_s"] > 0
    load(tmp_path / "rc.json")
    scatter = pd.read_csv(tmp_path / "scatter.csv")
    assert {"rule_score", "judge_score"} <= set(scatter.columns) and len(scatter) == m["items"]


def test_the_reference_judges_rationale_does_not_depend_on_the_hash_seed(tmp_path) -> None:
    """Claims are sets of strings; their notes come out in one order whatever PYTHONHASHSEED is."""
    import os
    import subprocess
    import sys

    script = tmp_path / "judge_once.py"
    script.write_text(
        "from wafersage.score.judges import JudgeItem, ReferenceJudge\n"
        "item = JudgeItem('Which pattern and why?', 'Center, scattered and clustered, in the edge and middle"
        " zones; caused by etching, film deposition, lithography and local contamination.',"
        " 'Center: a blob in the central zone.', {}, ['Center'])\n"
        "print(ReferenceJudge().judge_one(item).rationale)\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(6)
    }
    assert len(outs) == 1, outs
    assert outs.pop().count("wrongly blamed") >= 3
