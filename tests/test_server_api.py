"""The OpenAI-compatible server with the `openai` client (sync, async, streaming) and raw HTTP: answers and errors."""

from __future__ import annotations

import json
import sys
import threading

import httpx
import openai
import pytest

from aligned_llm import setting_names
from aligned_llm.server.translate import PASSED_THROUGH
from tests.serving import (
    LOCALHOST,
    SERVED_MODEL,
    WAIT_S,
    Held,
    metric,
    serve_tiny,
    wait_for_metric,
)

pytestmark = [pytest.mark.allow_hosts(LOCALHOST), pytest.mark.usefixtures("server_test_methods")]

PROMPT = "Tell me about the sea."
PRINCIPLE = "Answer like a pirate."
KEY = "test-key"


@pytest.fixture(scope="module")
def base_url(tiny_pair_llm):
    with serve_tiny(tiny_pair_llm) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)


def chat(client, **options):
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, **options}
    return client.chat.completions.create(**body)


def error_of(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


def test_chat_completion_equals_the_library(client, tiny_pair_llm):
    answer = chat(client, extra_body={"method": "opad", "principle": PRINCIPLE, "beta": 0.5})
    expected = tiny_pair_llm.generate(PROMPT, method="opad", principle=PRINCIPLE, beta=0.5, max_new_tokens=8)
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == expected.finish_reason == "length"
    assert answer.model == SERVED_MODEL and answer.object == "chat.completion"
    assert answer.usage.prompt_tokens == expected.input_tokens
    assert answer.usage.completion_tokens == expected.output_tokens == 8


def test_streamed_chat_joins_to_the_library_text_and_ends_with_usage(client, tiny_pair_llm):
    stream = chat(client, stream=True, stream_options={"include_usage": True}, extra_body={"method": "aad"})
    chunks = list(stream)
    expected = tiny_pair_llm.generate(PROMPT, method="aad", max_new_tokens=8)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.output_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_the_raw_stream_is_server_sent_events_ending_in_done(base_url):
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=WAIT_S) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert "usage" not in json.loads(events[-2].removeprefix("data: "))


async def test_async_client_and_stop_and_seeded_sampling(base_url, tiny_pair_llm):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)
    expected = tiny_pair_llm.generate(PROMPT, max_new_tokens=12)
    stop = expected.text[len(expected.text) // 2 :][:3]
    answer = await client.chat.completions.create(
        model=SERVED_MODEL, messages=[{"role": "user", "content": PROMPT}], max_completion_tokens=12, stop=[stop]
    )
    assert answer.choices[0].message.content == expected.text.split(stop)[0]
    assert answer.choices[0].finish_reason == "stop"
    sampled = {"temperature": 0.9, "top_p": 0.8, "seed": 7}
    first = await client.chat.completions.create(
        model=SERVED_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=10, **sampled
    )
    library = tiny_pair_llm.generate(PROMPT, max_new_tokens=10, **sampled)
    assert first.choices[0].message.content == library.text


def test_messages_with_system_and_text_parts(client, tiny_pair_llm):
    messages = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "about the sea."}]},
    ]
    answer = client.chat.completions.create(model=SERVED_MODEL, messages=messages, max_tokens=6)
    expected = tiny_pair_llm.generate(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me\nabout the sea."}],
        max_new_tokens=6,
    )
    assert answer.choices[0].message.content == expected.text


def test_completions_batch_and_stream(client, tiny_pair_llm):
    prompts = [PROMPT, "Name a river."]
    settings = {"method": "linear", "principle": PRINCIPLE, "rho": 1.5}
    answer = client.completions.create(model=SERVED_MODEL, prompt=prompts, max_tokens=5, extra_body=settings)
    expected = tiny_pair_llm.generate(prompts, method="linear", principle=PRINCIPLE, rho=1.5, max_new_tokens=5)
    assert [choice.text for choice in answer.choices] == [result.text for result in expected]
    assert answer.usage.completion_tokens == sum(result.output_tokens for result in expected)
    streamed = client.completions.create(
        model=SERVED_MODEL, prompt=PROMPT, max_tokens=5, stream=True, extra_body=settings
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == expected[0].text


PING = {"type": "function", "function": {"name": "ping", "description": "Check the line.",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}  # fmt: skip


def test_tool_calls_come_back_in_openai_shape_streamed_or_not(client, tiny_pair_llm):
    expected = tiny_pair_llm.generate(PROMPT, tools=[PING], tool_choice="required", max_new_tokens=60)
    assert expected.finish_reason == "tool_calls" and expected.tool_calls
    answer = chat(client, tools=[PING], tool_choice="required", max_tokens=60)
    assert answer.choices[0].finish_reason == "tool_calls"
    calls = answer.choices[0].message.tool_calls
    assert [(call.function.name, json.loads(call.function.arguments)) for call in calls] == [
        (call.name, call.arguments) for call in expected.tool_calls
    ]
    assert [call.id for call in calls] == [call.id for call in expected.tool_calls] or all(
        call.id.startswith("call_") for call in calls
    )
    pieces = [piece for chunk in chat(client, tools=[PING], tool_choice="required", max_tokens=60, stream=True)
              if chunk.choices for piece in chunk.choices[0].delta.tool_calls or ()]  # fmt: skip
    assert pieces[0].function.name == "ping" and pieces[0].type == "function"
    arguments = "".join(piece.function.arguments for piece in pieces if piece.index == 0)
    assert json.loads(arguments) == expected.tool_calls[0].arguments


def test_response_format_json_schema(client, tiny_pair_llm):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}  # fmt: skip
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    expected = tiny_pair_llm.generate(PROMPT, response_format=response_format, max_new_tokens=30)
    answer = chat(client, response_format=response_format, max_tokens=30)
    assert json.loads(answer.choices[0].message.content) == expected.parsed
    assert set(expected.parsed) == {"a"}


def test_trace_comes_back_per_token(base_url, tiny_pair_llm):
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4,
            "method": "opad", "principle": PRINCIPLE, "trace": True}  # fmt: skip
    choice = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=WAIT_S).json()["choices"][0]
    expected = tiny_pair_llm.generate(PROMPT, method="opad", principle=PRINCIPLE, max_new_tokens=4, trace=True)
    assert [token["token_id"] for token in choice["trace"]] == [token.token_id for token in expected.trace]
    assert choice["trace"][0]["signal"] == pytest.approx(expected.trace[0].signal)


def test_models_and_health(client, base_url, tiny_pair_llm):
    models = client.models.list().data
    assert [model.id for model in models] == [SERVED_MODEL]
    assert set(models[0].methods) == set(tiny_pair_llm.available_methods()) >= {"opad", "aad"}
    assert client.models.retrieve(SERVED_MODEL).max_model_len == tiny_pair_llm.context_window
    assert httpx.get(f"{base_url}/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"extra_body": {"principal": "typo", "bogus": 1}}, "bogus"),
        ({"extra_body": {"method": "opad"}}, "principle"),
        ({"extra_body": {"method": "opad", "principle": "p", "beta": -1}}, "beta"),
        ({"extra_body": {"method": "nope"}}, "method"),
        ({"extra_body": {"k": 0}}, "k"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -3}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"max_tokens": 4, "extra_body": {"max_new_tokens": 4}}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"extra_body": {"method": "opad", "principle": ""}}, "principle"),
        ({"extra_body": {"method": "opad", "principle": "p", "beta": 1e-40}}, "beta"),
        ({"extra_body": {"method": "pad", "profile": "p", "beta": 1e38}}, "beta"),
        ({"extra_body": {"method": "linear", "principle": "p", "rho": 1e39}}, "rho"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_naming_the_parameter(client, options, param):
    error = error_of(lambda: chat(client, **options))
    assert error.status_code == 400
    assert error.body["param"] == param
    assert error.body["message"].startswith(param) or param in error.body["message"]
    assert error.body["type"] == "invalid_request_error"


def test_unknown_fields_are_listed_with_the_valid_settings(client):
    error = error_of(lambda: chat(client, extra_body={"principal": "typo", "bogus": 1}))
    assert "bogus, principal" in error.body["message"]
    assert all(name in error.body["message"] for name in setting_names() if name not in PASSED_THROUGH)


def test_over_long_prompt_is_400_context_length_exceeded(client, tiny_pair_llm):
    error = error_of(lambda: chat(client, max_tokens=tiny_pair_llm.context_window))
    assert (error.status_code, error.body["code"], error.body["param"]) == (400, "context_length_exceeded", "messages")
    long_prompt = "sea " * tiny_pair_llm.context_window
    error = error_of(lambda: client.completions.create(model=SERVED_MODEL, prompt=long_prompt, max_tokens=4))
    assert (error.status_code, error.body["param"]) == (400, "prompt")


def test_unknown_model_is_404(client):
    error = error_of(lambda: chat(client, model="gpt-4o"))
    assert (error.status_code, error.body["code"], error.body["param"]) == (404, "model_not_found", "model")
    assert error_of(lambda: client.models.retrieve("gpt-4o")).status_code == 404


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b'{"model": "tiny", "messages": [', {"content-type": "application/json"}, "not valid JSON"),
        (b"{bad", {}, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, "JSON object"),
        (b'{"model": "tiny"}', {"content-type": "application/json"}, "messages"),
        (b'{"messages": "hi"}', {"content-type": "application/json"}, "messages"),
    ],
)
def test_malformed_bodies_are_400(base_url, content, headers, message):
    response = httpx.post(f"{base_url}/v1/chat/completions", content=content, headers=headers, timeout=WAIT_S)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_api_key_is_required_when_set(tiny_pair_llm):
    with serve_tiny(tiny_pair_llm, api_key=KEY) as url:
        without = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0, timeout=WAIT_S)
        error = error_of(lambda: chat(without))
        assert (error.status_code, error.body["code"]) == (401, "invalid_api_key")
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
        with_key = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=WAIT_S)
        assert chat(with_key, max_tokens=2).usage.completion_tokens == 2


def test_a_full_queue_answers_503_with_retry_after(tiny_pair_llm):
    Held.reset()
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50,
            "method": "held", "stream": True}  # fmt: skip
    with serve_tiny(tiny_pair_llm, max_queue=1, retry_after=3) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=WAIT_S) as held:
            lines = held.iter_lines()
            assert next(lines).startswith("data: ")
            assert metric(url, "aligned_llm_requests_in_flight") == 1
            refused = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, timeout=WAIT_S)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "3"
            assert refused.json()["error"]["code"] == "queue_full"
            Held.release.set()
            assert [line for line in lines if line][-1] == "data: [DONE]"
        wait_for_metric(url, "aligned_llm_requests_in_flight", 0)
        assert chat(openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0), max_tokens=2).choices
        assert metric(url, "aligned_llm_requests_total", endpoint="/v1/chat/completions", status="503") == 1


def test_metrics_count_requests_tokens_and_latency(tiny_pair_llm):
    with serve_tiny(tiny_pair_llm) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=WAIT_S)
        answer = chat(client, max_tokens=5, extra_body={"method": "opad", "principle": PRINCIPLE})
        list(chat(client, max_tokens=3, stream=True))
        error_of(lambda: chat(client, extra_body={"k": 0}))
        endpoint = "/v1/chat/completions"
        assert metric(url, "aligned_llm_requests_total", endpoint=endpoint, status="200") == 2
        assert metric(url, "aligned_llm_requests_total", endpoint=endpoint, status="400") == 1
        assert metric(url, "aligned_llm_generation_tokens_total", method="opad") == 5
        assert metric(url, "aligned_llm_generation_tokens_total", method="vanilla") == 3
        assert metric(url, "aligned_llm_prompt_tokens_total", method="opad") == answer.usage.prompt_tokens
        assert metric(url, "aligned_llm_request_latency_seconds_count", endpoint=endpoint) == 2
        assert metric(url, "aligned_llm_time_to_first_token_seconds_count", endpoint=endpoint) == 1
        assert metric(url, "aligned_llm_requests_in_flight") == 0
        assert metric(url, "aligned_llm_client_disconnects_total") == 0


class _Audit:
    """Records, while on, the audit events that mean a file was opened, code compiled or run, or a process started."""

    EVENTS = ("open", "compile", "exec", "subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn")

    def __init__(self) -> None:
        self.on = threading.Event()
        self.seen: list[tuple[str, str]] = []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if self.on.is_set() and event in self.EVENTS:
            self.seen.append((event, repr(args)[:200]))


def test_nothing_a_request_sends_loads_a_path_reads_a_file_or_runs_code(
    client, base_url, tiny_pair_llm, tiny_reference_dir, tmp_path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    template_injection = "{{ cycler.__init__.__globals__.os.popen('touch " + str(tmp_path / "pwned") + "') }}"
    hostile = [
        {"model": str(tiny_reference_dir)},
        {"extra_body": {"adapter": str(tiny_reference_dir)}},
        {"extra_body": {"reference": str(tiny_reference_dir), "method": "aad"}},
        {"extra_body": {"reward_model": str(tiny_reference_dir), "method": "pad", "profile": "x"}},
        {"extra_body": {"model_path": str(secret), "tokenizer": str(secret)}},
        {"extra_body": {"method": "aligned_llm.testing:save_tiny_model"}},
        {"extra_body": {"method": "pad", "profile": str(secret)}},
        {"extra_body": {"method": "opad", "principle": template_injection}},
        {"messages": [{"role": "user", "content": f"file://{secret}"}, {"role": "assistant", "content": str(secret)},
                      {"role": "user", "content": str(secret)}]},
        {"tools": [{"type": "function", "function": {"name": "cat", "parameters": {"$ref": f"file://{secret}"}}}]},
    ]

    def send_all() -> list[int]:
        statuses = []
        for options in hostile:
            try:
                chat(client, max_tokens=2, **options)
                statuses.append(200)
            except openai.APIStatusError as error:
                statuses.append(error.status_code)
        return statuses

    first = send_all()
    audit = _Audit()
    audit.on.set()
    try:
        again = send_all()
    finally:
        audit.on.clear()
    assert first == again
    assert again[0] == 404 and again[1:6] == [400] * 5
    assert again[6:9] == [200, 200, 200], "text that looks like a path or a template is only text"
    assert again[9] == 400, "a schema $ref to a file is refused (only local #/ references are allowed), never read"
    assert audit.seen == []
    assert not (tmp_path / "pwned").exists()
    expected = tiny_pair_llm.generate(PROMPT, method="opad", principle=template_injection, max_new_tokens=2)
    assert (
        chat(client, max_tokens=2, extra_body={"method": "opad", "principle": template_injection})
        .choices[0]
        .message.content
        == expected.text
    )
