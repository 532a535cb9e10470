"""``aligned-llm serve``: what it starts, with which defaults (uvicorn itself replaced: it would block).

Bad ``serve`` flags are in ``test_hardening_cli.py``."""

from __future__ import annotations

import pytest
import uvicorn
from fastapi.testclient import TestClient

from aligned_llm import InvalidSettingError, create_app
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


BAD_APP_OPTIONS = [
    ({"api_key": ""}, "api_key"),
    ({"api_key": 123}, "api_key"),
    ({"api_key": "k\n"}, "api_key"),
    ({"served_model_name": ""}, "served_model_name"),
    ({"served_model_name": []}, "served_model_name"),
    ({"served_model_name": ["tiny", ""]}, "served_model_name"),
    ({"retry_after": -1}, "retry_after"),
    ({"retry_after": 1.5}, "retry_after"),
    ({"max_queue": 0}, "max_queue"),
    ({"max_queue": True}, "max_queue"),
]


@pytest.mark.parametrize(("options", "parameter"), BAD_APP_OPTIONS, ids=[repr(case[0]) for case in BAD_APP_OPTIONS])
def test_create_app_refuses_an_option_that_would_disable_or_break_something(tiny_llm, options, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        create_app(tiny_llm, **options)
    assert raised.value.parameter == parameter
