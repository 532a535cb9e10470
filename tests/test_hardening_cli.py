"""Issue 23 on the command line: a bad flag is one line and exit 2, before any model loads or any forward.

``BAD_SERVE_FLAGS``: ``aligned-llm serve`` flags that would disable or break something silently
(an empty API key, a port past 65535, Ray options without ``--ray`` …); nothing is loaded, no Ray
starts and no server runs. ``BAD_GENERATE_FLAGS``: ``aligned-llm generate`` strengths that can only
overflow fp32, refused before the first forward. Broken model files (a garbage
``pytorch_model.bin`` …) on the ``--model`` flag are rows of ``test_bad_inputs.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import uvicorn
from transformers import LlamaForCausalLM

import aligned_llm.server.run as server_run
from aligned_llm.cli import main
from aligned_llm.spec import ModelSpec

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


BAD_GENERATE_FLAGS = [
    (["--method", "opad", "--principle", "Be brief.", "--beta", "1e-40"], "beta"),
    (["--method", "pad", "--profile", "A sailor.", "--beta", "1e38"], "beta"),
    (["--method", "linear", "--principle", "Be brief.", "--rho", "1e39"], "rho"),
    (["--method", "opad", "--principle", ""], "principle"),
]


@pytest.mark.parametrize(("flags", "parameter"), BAD_GENERATE_FLAGS, ids=[" ".join(f) for f, _ in BAD_GENERATE_FLAGS])
def test_a_bad_generate_flag_is_one_line_and_exit_2_before_any_forward(flags, parameter, tiny_dir, monkeypatch, capsys):
    forwards = []
    monkeypatch.setattr(LlamaForCausalLM, "forward", lambda *args, **kwargs: forwards.append(1))
    assert main(["generate", "Hi", "--model", str(tiny_dir), "--max-new-tokens", "4", *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and parameter in error and "Traceback" not in error
    assert forwards == []
