"""A corrupt judge-cache entry is a cache miss: judged again and rewritten, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeChatServer

from wafersage.score.judges import JudgeItem, OpenAIJudge


@pytest.fixture()
def server():
    s = FakeChatServer(lambda server, body: '{"score": 6, "rationale": "fresh"}')
    yield s
    s.close()


ITEM = JudgeItem(
    "Which pattern?", "Center.", "Center: a blob.", {"defect_types": {"must_hit": ["Center"]}}, ["Center"]
)


@pytest.mark.parametrize(
    "entry",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"score": "seven", "rationale": "x"}',
        b'{"score": 99, "rationale": "x"}',
        b'{"rationale": "no score"}',
        b"[1, 2]",
        b'{"score": 5, "rationale": ["not", "text"]}',
    ],
    ids=["bad-json", "empty", "bad-encoding", "score-text", "score-range", "no-score", "list", "rationale"],
)
def test_corrupt_cache_entry_is_recomputed(server, tmp_path: Path, entry: bytes) -> None:
    judge = OpenAIJudge(server.url, "m", tmp_path / "cache", timeout_s=5, retries=0)
    path = tmp_path / "cache" / judge._key(ITEM)[:2] / f"{judge._key(ITEM)}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(entry)
    verdict = judge.judge_one(ITEM)
    assert verdict.score == 6 and verdict.rationale == "fresh"
    assert judge.stats["cache_corrupt"] == 1 and len(server.requests) == 1
    assert json.loads(path.read_text()) == {"score": 6.0, "rationale": "fresh"}


def test_good_cache_entry_is_a_hit(server, tmp_path: Path) -> None:
    judge = OpenAIJudge(server.url, "m", tmp_path, timeout_s=5, retries=0)
    path = tmp_path / judge._key(ITEM)[:2] / f"{judge._key(ITEM)}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"score": 3, "rationale": "cached"}')
    assert judge.judge_one(ITEM).rationale == "cached" and not server.requests
