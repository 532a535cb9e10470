"""``aligned-llm serve``: what it starts, with which defaults (uvicorn itself replaced: it would block)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import uvicorn
from fastapi.testclient import TestClient

import aligned_llm.server.run as server_run
from aligned_llm import InvalidSettingError, create_app
from aligned_llm.cli import main
from aligned_llm.spec import ModelSpec


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


BAD_SERVE_FLAGS = [
    (["--api-key", ""], {}, "--api-key", "non-empty key"),
    (["--api-key", "two words"], {}, "--api-key", "printable ASCII without spaces"),
    ([], {"ALIGNED_LLM_API_KEY": ""}, "$ALIGNED_LLM_API_KEY", "non-empty key"),
    (["--api-key", ""], {"ALIGNED_LLM_API_KEY": "s3cret"}, "--api-key", "non-empty key"),
    (["--retry-after", "-1"], {}, "--retry-after", "integer >= 0, got -1"),
    (["--served-model-name", ""], {}, "--served-model-name", "non-empty name"),
    (["--served-model-name", " tiny"], {}, "--served-model-name", "without surrounding spaces"),
    (["--max-queue", "0"], {}, "--max-queue", "integer >= 1, got 0"),
    (["--replicas", "0", "--ray"], {}, "--replicas", "integer >= 1, got 0"),
    (["--replicas", "2"], {}, "--replicas", "only with --ray"),
    (["--num-gpus", "1"], {}, "--num-gpus", "only with --ray"),
    (["--num-cpus", "2"], {}, "--num-cpus", "only with --ray"),
    (["--ray-address", "auto"], {}, "--ray-address", "only with --ray"),
    (["--num-gpus", "-1", "--ray"], {}, "--num-gpus", "finite number >= 0"),
    (["--num-cpus", "nan", "--ray"], {}, "--num-cpus", "finite number >= 0"),
    (["--port", "70000"], {}, "--port", "<= 65535, got 70000"),
    (["--port", "-1"], {}, "--port", ">= 0"),
]


@pytest.mark.parametrize(
    ("flags", "environment", "flag", "says"),
    BAD_SERVE_FLAGS,
    ids=[" ".join(case[0]) or str(case[1]) for case in BAD_SERVE_FLAGS],
)
def test_a_bad_serve_flag_is_one_line_and_exit_2_before_loading(flags, environment, flag, says, monkeypatch, capsys):
    """Nothing is loaded, no Ray starts and no server runs: the flags are checked first."""
    started = []
    monkeypatch.setattr(ModelSpec, "load", lambda self: started.append("load"))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **options: started.append("uvicorn"))
    monkeypatch.setattr(server_run, "run_ray", lambda *args, **options: started.append("ray"))
    monkeypatch.delenv("ALIGNED_LLM_API_KEY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: {flag}: ") and says in error
    assert started == []
    assert "s3cret" not in error, "a key is never echoed"


def test_serve_with_an_empty_api_key_exits_at_once_as_a_command():
    """The installed command, as a user runs it: a non-zero exit and one line, with no model loaded."""
    command = [sys.executable, "-m", "aligned_llm.cli", "serve", "--port", "0", "--api-key", ""]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --api-key: must be a non-empty key; leave it unset to serve without authentication (an empty key "
        "would be satisfied by an empty 'Authorization: Bearer' header)"
    ]


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
