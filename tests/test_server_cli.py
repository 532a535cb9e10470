"""``aligned-llm serve``: what it starts, with which defaults (uvicorn itself replaced: it would block)."""

from __future__ import annotations

import uvicorn
from fastapi.testclient import TestClient

from aligned_llm.cli import main


def test_serve_binds_localhost_by_default_and_serves_the_model(tiny_dir, monkeypatch):
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.delenv("ALIGNED_LLM_API_KEY", raising=False)
    assert main(["serve", "--model", str(tiny_dir), "--served-model-name", "tiny", "--max-queue", "3"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8000)
    client = TestClient(started["app"])
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert "aligned_llm_queue_limit 3.0" in client.get("/metrics").text
    answer = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
                                                        "max_tokens": 3})  # fmt: skip
    assert answer.json()["usage"]["completion_tokens"] == 3


def test_serve_takes_the_api_key_from_the_environment(tiny_dir, monkeypatch):
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.setenv("ALIGNED_LLM_API_KEY", "s3cret")
    assert main(["serve", "--model", str(tiny_dir), "--host", "0.0.0.0", "--port", "9001"]) == 0
    assert (started["host"], started["port"]) == ("0.0.0.0", 9001)
    client = TestClient(started["app"])
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
