"""Tracking-server mode: ``mlflow server`` (sqlite backend, proxied artifact root) started on
loopback; the register stage and ``wafersage promote`` run against it via MLFLOW_TRACKING_URI and
the champion loads back through the server (as the pyfunc and as ``serve`` and ``ask`` load it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from test_registry import _register, items
from tiny_model import build_tiny_model

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(mlflow_bin), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield url, tmp_path
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_register_and_promote_against_a_tracking_server(mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    from wafersage.registry.loading import load_pyfunc
    from wafersage.registry.promotion import promote
    from wafersage.serving.predictor import load_predictor
    from wafersage.stages.register import input_example

    url, root = mlflow_server
    work = root / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    model = build_tiny_model(work / "models" / "sft", stage="sft")
    r = _register(work, model, items(), name="served-model")
    assert r["version"] == 1
    assert promote("served-model", {})["promote"]
    client = MlflowClient(url)
    assert int(client.get_model_version_by_alias("served-model", "champion").version) == 1
    out = load_pyfunc("models:/served-model@champion").predict(input_example(64, 0))
    assert isinstance(out["answer"].iloc[0], str)
    assert load_predictor(None, "served-model").name == "sft"  # `serve`/`ask`: the checked folder
    # everything landed on the server's side: its sqlite store and its artifact root, not the cwd
    stored = list((root / "server-artifacts").rglob("*.safetensors"))
    assert stored and not (work / "mlartifacts").exists() and not (work / "mlflow.db").exists()
