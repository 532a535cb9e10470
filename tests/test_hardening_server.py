"""Issue 23 on the server: every hostile request is a 400 naming its field before any forward; the loop stays free.

``HOSTILE_REQUESTS`` is the table: a request body's fields, the endpoint, and the field the 400
must name (OpenAI's ``param``), with the model's forwards counted (none may run). Beside it:
``metadata``/``user`` are ignored, a 500 leaves the keep-alive connection usable, and a request
whose grammar is compiling does not hold up ``/health``. The ``serve`` flags are in
``test_hardening_cli.py``; ``create_app``'s options in ``test_server_cli.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from aligned_llm.answer import grammar
from aligned_llm.testing import count_forwards
from tests.serving import LOCALHOST, SERVED_MODEL, WAIT_S, serve_tiny
from tests.test_hardening_core import CALL, CITY, json_schema, nested, tool

pytestmark = [pytest.mark.allow_hosts(LOCALHOST), pytest.mark.usefixtures("server_test_methods")]

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
PROMPT = "What is the weather in Oslo?"
TOOL = tool("f", {"type": "object", "properties": {}})
ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}


@pytest.fixture(scope="module")
def base_url(tiny_wide_llm):
    with serve_tiny(tiny_wide_llm) as url:
        yield url


HOSTILE_REQUESTS = [
    # values OpenAI's API refuses: validated strictly, never coerced
    (CHAT_URL, {"max_tokens": "5"}, "max_tokens"),
    (CHAT_URL, {"max_tokens": 4.0}, "max_tokens"),
    (CHAT_URL, {"max_tokens": True}, "max_tokens"),
    (CHAT_URL, {"max_completion_tokens": "5"}, "max_completion_tokens"),
    (CHAT_URL, {"temperature": "0.5"}, "temperature"),
    (CHAT_URL, {"temperature": True}, "temperature"),
    (CHAT_URL, {"top_p": "1"}, "top_p"),
    (CHAT_URL, {"seed": 1.0}, "seed"),
    (CHAT_URL, {"stream": "yes"}, "stream"),
    (CHAT_URL, {"stream": 1}, "stream"),
    (CHAT_URL, {"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    (CHAT_URL, {"messages": [{"role": 1, "content": "hi"}]}, "messages.0.role"),
    (CHAT_URL, {"max_tokens": None, "max_new_tokens": 4.0}, "max_new_tokens"),
    (CHAT_URL, {"method": "pad", "profile": "p", "k": "3"}, "k"),
    (CHAT_URL, {"method": "opad", "principle": "p", "beta": "1"}, "beta"),
    (COMPLETIONS_URL, {"max_tokens": "5"}, "max_tokens"),
    (COMPLETIONS_URL, {"echo": "no"}, "echo"),
    # settings no decoding can honour
    (CHAT_URL, {"method": "opad", "principle": ""}, "principle"),
    (CHAT_URL, {"method": "opad", "principle": "p", "beta": 1e-40}, "beta"),
    (CHAT_URL, {"method": "linear", "principle": "p", "rho": 1e39}, "rho"),
    (COMPLETIONS_URL, {"tools": [TOOL]}, "tools"),
    (COMPLETIONS_URL, {"tool_choice": "auto"}, "tool_choice"),
    (COMPLETIONS_URL, {"parallel_tool_calls": False}, "parallel_tool_calls"),
    # schemas that reach outside or never end, tool names, histories, answers longer than max_tokens
    (CHAT_URL, {"response_format": json_schema({"$ref": "file:///etc/passwd"})}, "response_format"),
    (CHAT_URL, {"tools": [tool("f", {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x"}}})]},
     "tools"),
    (CHAT_URL, {"response_format": json_schema({"type": "string", "minLength": 10**7})}, "response_format"),
    (CHAT_URL, {"tools": [tool("f", {"type": "object", "properties": {
        "xs": {"type": "array", "minItems": 10**9, "maxItems": 10**9}}})]}, "tools"),
    (CHAT_URL, {"response_format": json_schema({"type": "string", "pattern": "a{1000000}"})}, "response_format"),
    (CHAT_URL, {"response_format": json_schema(nested(400))}, "response_format"),
    (CHAT_URL, {"tools": [tool("f\n")]}, "tools"),
    (CHAT_URL, {"tools": [tool("weather", CITY)], "messages": [
        {"role": "tool", "tool_call_id": "x", "content": "1"}, {"role": "user", "content": "Hi"}]}, "messages[0]"),
    (CHAT_URL, {"tools": [tool("weather", CITY)], "messages": [
        {"role": "user", "content": "Hi"}, ASSISTANT_CALL, {"role": "tool", "tool_call_id": "zzz", "content": "1"}]},
     "messages[2].tool_call_id"),
    (CHAT_URL, {"tools": [tool("other", CITY)], "messages": [
        {"role": "user", "content": "Hi"}, ASSISTANT_CALL, {"role": "tool", "tool_call_id": "call-1", "content": "1"}]},
     "messages[1].tool_calls"),
    (CHAT_URL, {"tools": [tool("weather", CITY)], "tool_choice": "required", "max_tokens": 3}, "max_tokens"),
    (CHAT_URL, {"tools": [tool("weather", CITY)], "tool_choice": "required", "max_tokens": None,
                "max_completion_tokens": 3}, "max_completion_tokens"),
]  # fmt: skip


def body_for(url: str, fields: dict[str, Any]) -> dict[str, Any]:
    prompt = {"messages": [{"role": "user", "content": PROMPT}]} if url == CHAT_URL else {"prompt": PROMPT}
    return {"model": SERVED_MODEL, "max_tokens": 4, **prompt, **fields}


@pytest.mark.parametrize(
    ("url", "fields", "param"), HOSTILE_REQUESTS,
    ids=[f"{index} {url.rsplit('/', 1)[1]} {param}" for index, (url, _, param) in enumerate(HOSTILE_REQUESTS)],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_hostile_request_is_400_naming_the_field_before_any_forward(
    base_url, tiny_wide_llm, url, fields, param, stream
):
    body = body_for(url, fields)
    if stream and "stream" not in fields:
        body["stream"] = True
    with count_forwards(tiny_wide_llm) as forwards:
        response = httpx.post(f"{base_url}{url}", json=body, timeout=WAIT_S)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert error["message"].startswith(f"{param}: ")
    assert forwards.count == 0


def test_a_body_nested_too_deeply_to_parse_is_a_400(base_url):
    """A schema 1,000 objects deep: the body itself nests past what the JSON parser reads, and is refused."""
    schema = '{"type": "object", "properties": {"a": ' * 1000 + '{"type": "string"}' + "}}" * 1000
    body = (
        f'{{"model": "{SERVED_MODEL}", "max_tokens": 4, "messages": [{{"role": "user", "content": "Hi"}}], '
        f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "x", "schema": {schema}}}}}}}'
    )
    response = httpx.post(
        f"{base_url}{CHAT_URL}", content=body, headers={"content-type": "application/json"}, timeout=WAIT_S
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "nests deeper than the JSON parser reads" in error["message"] and "at most 64" in error["message"]


def test_metadata_and_user_are_accepted_and_ignored(base_url):
    plain = httpx.post(f"{base_url}{CHAT_URL}", json=body_for(CHAT_URL, {}), timeout=WAIT_S)
    tagged = httpx.post(
        f"{base_url}{CHAT_URL}", json=body_for(CHAT_URL, {"metadata": {"team": "a", "n": 1}, "user": "u-1"}),
        timeout=WAIT_S,
    )  # fmt: skip
    assert (plain.status_code, tagged.status_code) == (200, 200), tagged.text
    assert tagged.json()["choices"] == plain.json()["choices"]
    completion = httpx.post(f"{base_url}{COMPLETIONS_URL}", json=body_for(COMPLETIONS_URL, {"metadata": {}}),
                            timeout=WAIT_S)  # fmt: skip
    assert completion.status_code == 200, completion.text


def test_an_internal_error_is_a_500_and_the_keep_alive_connection_stays_usable(base_url):
    """After a 500 (and 400s), the same connection carries the next requests: no "connection reset"."""
    sequence = [
        ({"method": "crashes"}, 500),
        ({"method": "opad", "principle": ""}, 400),
        ({"method": "crashes"}, 500),
        ({}, 200),
        ({"method": "opad", "principle": "p", "beta": 1e-40}, 400),
        ({"max_tokens": "5"}, 400),
        ({}, 200),
    ]
    with httpx.Client(base_url=base_url, timeout=WAIT_S) as http:
        for _ in range(3):
            for fields, status in sequence:
                response = http.post(CHAT_URL, json=body_for(CHAT_URL, fields))
                assert response.status_code == status, (fields, response.text)
                if status == 500:
                    error = response.json()["error"]
                    assert error["type"] == "server_error" and "internal error: RuntimeError" in error["message"]
        streamed = http.post(CHAT_URL, json=body_for(CHAT_URL, {"stream": True}))
        assert streamed.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_health_answers_while_a_request_is_being_prepared(base_url, monkeypatch, stream):
    """A grammar held mid-compilation (as a huge schema would be) holds up neither ``/health`` nor the loop."""
    compiling, release = threading.Event(), threading.Event()
    compile_for_real = grammar.tightened_grammar

    def held(tag: Any) -> Any:
        compiling.set()
        release.wait(WAIT_S)
        return compile_for_real(tag)

    monkeypatch.setattr(grammar, "tightened_grammar", held)
    schema = {"type": "object", "properties": {f"held_{stream}": {"type": "integer"}}}
    body = body_for(CHAT_URL, {"response_format": json_schema(schema), "max_tokens": 30, "stream": stream})
    answered: dict[str, httpx.Response] = {}
    request = threading.Thread(
        target=lambda: answered.update(chat=httpx.post(f"{base_url}{CHAT_URL}", json=body, timeout=WAIT_S))
    )
    request.start()
    try:
        assert compiling.wait(WAIT_S), "the request never reached its grammar"
        health = httpx.get(f"{base_url}/health", timeout=WAIT_S)
        assert health.status_code == 200
        assert "chat" not in answered and not release.is_set(), "/health answered while the grammar was compiling"
    finally:
        release.set()
        request.join(WAIT_S)
    assert answered["chat"].status_code == 200, answered["chat"].text
