"""Many clients at once: the same texts as serial calls, and a client that disconnects cancels only its own request."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.serving import LOCALHOST, SERVED_MODEL, WAIT_S, Held, serve_tiny

pytestmark = [pytest.mark.allow_hosts(LOCALHOST), pytest.mark.usefixtures("server_test_methods")]

PROMPTS = ["Tell me about the sea.", "Name three rivers.", "Why is the sky blue?", "Write a haiku."]
PRINCIPLES = ["Answer like a pirate.", "Be extremely brief.", "Use formal language."]
METHODS = [
    {"method": "vanilla"},
    {"method": "vanilla", "principle": PRINCIPLES[0]},
    {"method": "opad", "beta": 0.5},
    {"method": "linear", "rho": 1.0},
    {"method": "pad", "profile": {"helpful": 1.0, "humor": 0.5}, "k": 5},
    {"method": "aad", "alpha": 0.2},
]


def mixed_requests(count: int) -> list[tuple[str, dict, bool]]:
    """``count`` (prompt, settings, stream) triples cycling through prompts, methods and principles."""
    requests = []
    for index in range(count):
        settings = dict(METHODS[index % len(METHODS)], max_new_tokens=8)
        if settings["method"] in ("opad", "linear"):
            settings["principle"] = PRINCIPLES[index % len(PRINCIPLES)]
        requests.append((PROMPTS[index % len(PROMPTS)], settings, index % 2 == 1))
    return requests


async def ask(client: openai.AsyncOpenAI, prompt: str, settings: dict, stream: bool) -> str:
    extra = {name: value for name, value in settings.items() if name != "max_new_tokens"}
    options = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": prompt}],
               "max_tokens": settings["max_new_tokens"], "extra_body": extra}  # fmt: skip
    if not stream:
        return (await client.chat.completions.create(**options)).choices[0].message.content
    chunks = await client.chat.completions.create(stream=True, **options)
    return "".join([chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices])


async def metric_value(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0


async def until_metric(http: httpx.AsyncClient, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while await metric_value(http, name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {value}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def base_url(tiny_pair_llm):
    with serve_tiny(tiny_pair_llm) as url:
        yield url


async def test_sixteen_concurrent_clients_get_the_serial_texts(base_url, tiny_pair_llm):
    requests = mixed_requests(16)
    serial = [tiny_pair_llm.generate(prompt, **settings).text for prompt, settings, _stream in requests]
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=WAIT_S)
    concurrent = await asyncio.gather(*(ask(client, *request) for request in requests))
    assert concurrent == serial
    assert len(set(serial)) > len(PROMPTS), "the methods and principles must change the texts"


async def test_a_killed_client_cancels_its_request_and_disturbs_no_other(base_url, tiny_pair_llm):
    Held.reset()
    requests = mixed_requests(6)
    serial = [tiny_pair_llm.generate(prompt, **settings).text for prompt, settings, _stream in requests]
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=WAIT_S)
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT_S) as http:
        others = [asyncio.create_task(ask(client, *request)) for request in requests]
        doomed = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 200,
                  "method": "held", "stream": True}  # fmt: skip
        async with http.stream("POST", "/v1/chat/completions", json=doomed) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            while not Held.steps:
                await asyncio.sleep(0.01)
        await until_metric(http, "aligned_llm_client_disconnects_total", 1)
        Held.release.set()
        assert await asyncio.gather(*others) == serial
        await until_metric(http, "aligned_llm_requests_in_flight", 0)
        assert await metric_value(http, "aligned_llm_requests_total", endpoint="/v1/chat/completions",
                                  status="499") == 1  # fmt: skip
    assert len(Held.steps) <= 3, "decoding stops at its next step, far before max_tokens=200"
