"""The openai describe backend against a local OpenAI-compatible HTTP server on 127.0.0.1: good
replies, cache hits on rerun, garbage bodies, malformed structured JSON and timeouts, each counted."""

from __future__ import annotations

import json
import time

import pytest
from fake_openai import FakeChatServer

from wafersage.annotation.vlm_client import parse_structured
from wafersage.stages import describe
from wafersage.wafers.rawtable import write_raw
from wafersage.wafers.synthetic import SyntheticConfig, generate

GOOD_JSON = json.dumps(
    {
        "defect_type": ["Center"],
        "zone": "center",
        "clock_position": [],
        "distribution": "clustered",
        "morphology": "blob",
        "root_cause": "CMP",
    }
)


def _respond(server: FakeChatServer, body: dict) -> str | tuple[int, bytes]:
    if server.mode == "timeout":
        time.sleep(1.5)
    if server.mode == "garbage":
        return 200, b"<html>upstream exploded</html>"
    if server.mode == "http500":
        return 500, b'{"error": {"message": "boom"}}'
    if server.mode == "bad_json":
        return "I think it is a Center pattern."
    text = body["messages"][0]["content"][1]["text"]
    return GOOD_JSON if "one JSON object" in text else "A dense central blob of fails."


@pytest.fixture
def server():
    s = FakeChatServer(_respond)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _tracking(tmp_path_factory, monkeypatch):
    # one store for the module: creating a fresh sqlite store costs seconds
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.getbasetemp()}/mlflow_describe.db"
    )


@pytest.fixture
def raw(tmp_path):
    df = generate(SyntheticConfig(n_wafers=3, seed=5, noise_rate=0.0, mixed_fraction=0.0))
    path = tmp_path / "raw.parquet"
    write_raw(df, path)
    return path


def _params(server, tmp_path, **kw):
    cfg = {"base_url": server.url, "model": "test-vlm", "timeout_s": 0.5, "max_retries": 1}
    cfg["cache_dir"] = str(tmp_path / "cache")
    cfg.update(kw)
    return {"backend": "openai", "labels_from": "raw", "openai": cfg}


def _run(params, raw, tmp_path):
    out, metrics = tmp_path / "d.jsonl", tmp_path / "m.json"
    summary = describe.run(params, raw, None, out, metrics)
    return summary, [json.loads(x) for x in out.read_text().splitlines()]


def test_good_endpoint_describes_and_second_run_is_cached(server, raw, tmp_path):
    summary, recs = _run(_params(server, tmp_path), raw, tmp_path)
    assert summary["openai.requests"] == 12 and summary["openai.failed"] == 0
    assert all(r["description_source"]["full"] == "openai" for r in recs)
    assert recs[0]["descriptions"]["spatial"] == "A dense central blob of fails."
    assert parse_structured(recs[0]["descriptions"]["structured"])["zone"] == "center"
    content = server.requests[0]["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    n = len(server.requests)
    summary2, recs2 = _run(_params(server, tmp_path), raw, tmp_path)
    assert len(server.requests) == n  # nothing sent: every reply came from the disk cache
    assert summary2["openai.cache_hits"] == 12 and summary2["openai.requests"] == 0
    assert recs2 == recs


def test_garbage_replies_are_counted_and_fall_back(server, raw, tmp_path):
    server.mode = "garbage"
    summary, recs = _run(_params(server, tmp_path), raw, tmp_path)
    assert summary["openai.malformed"] == 24  # 12 descriptions x (1 try + 1 retry)
    assert summary["openai.failed"] == 12 and summary["fallback_to_analytic"] == 12
    assert all(r["descriptions"]["full"] and r["description_source"]["full"] == "analytic" for r in recs)


def test_malformed_structured_json_is_retried_and_counted(server, raw, tmp_path):
    server.mode = "bad_json"
    summary, recs = _run(_params(server, tmp_path, variants=["structured"]), raw, tmp_path)
    assert summary["openai.malformed"] == 6 and summary["openai.retries"] == 3
    assert all(json.loads(r["descriptions"]["structured"])["defect_type"] for r in recs)  # analytic JSON


def test_timeouts_and_http_errors_are_counted(server, raw, tmp_path):
    server.mode = "timeout"
    summary, _ = _run(_params(server, tmp_path, variants=["full"], max_retries=0), raw, tmp_path)
    assert summary["openai.timeouts"] == 3 and summary["fallback_to_analytic"] == 3
    server.mode = "http500"
    summary, _ = _run(_params(server, tmp_path, variants=["full"], max_retries=0), raw, tmp_path)
    assert summary["openai.http_errors"] == 3


def test_unknown_openai_param_is_one_line_error(server, raw, tmp_path):
    from wafersage.errors import WaferSageError

    with pytest.raises(WaferSageError, match=r"describe.openai.temprature: unknown key"):
        _run(_params(server, tmp_path, temprature=0.1), raw, tmp_path)
    assert not (tmp_path / "d.jsonl").exists()
