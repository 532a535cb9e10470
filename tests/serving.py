"""Helpers for the server tests: a uvicorn server on 127.0.0.1 in a thread, its metrics, a held method.

Tests that use them carry ``pytest.mark.allow_hosts(["127.0.0.1"])``: sockets stay blocked
everywhere else, and these tests can only reach this machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

import httpx
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from aligned_llm import StepScores, Vanilla, create_app

LOCALHOST = ["127.0.0.1"]
WAIT_S = 60.0
"""Upper bound of every wait in these tests (a hung server fails them instead of hanging the suite)."""


SERVED_MODEL = "tiny"
"""The name the tiny-model servers of these tests serve under."""


def serve_tiny(llm: object, **options: object) -> AbstractContextManager[str]:
    """A running server of ``create_app(llm, served_model_name=SERVED_MODEL, **options)``; yields its URL."""
    return running_server(create_app(llm, served_model_name=SERVED_MODEL, **options))


@contextmanager
def running_server(app: object) -> Iterator[str]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1 until the block ends; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           loop="asyncio"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)


def metric(base_url: str, name: str, **labels: str) -> float:
    """The current value of one sample of the server's ``/metrics`` (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=WAIT_S).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0


def wait_for_metric(base_url: str, name: str, value: float, **labels: str) -> None:
    """Poll ``/metrics`` until the sample equals ``value`` (bounded by ``WAIT_S``)."""
    deadline = time.monotonic() + WAIT_S
    while metric(base_url, name, **labels) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never reached {value}")
        time.sleep(0.02)


class Held(Vanilla):
    """Vanilla decoding whose steps after the first wait for ``Held.release`` (and count themselves).

    Lets a test hold a request in flight for as long as it needs, without timing.
    """

    name: ClassVar[str] = "held"
    release: ClassVar[threading.Event] = threading.Event()
    steps: ClassVar[list[int]] = []

    def __init__(self) -> None:
        super().__init__()

    def score(self, logits: torch.Tensor, state: dict, step: int) -> StepScores:
        Held.steps.append(step)
        if step >= 1:
            Held.release.wait(timeout=WAIT_S)
        return super().score(logits, state, step)

    @classmethod
    def reset(cls) -> None:
        cls.release.clear()
        cls.steps.clear()


class Crashes(Vanilla):
    """Vanilla decoding that fails with an internal error (not a bad setting) at its first step: a server 500."""

    name: ClassVar[str] = "crashes"

    def __init__(self) -> None:
        super().__init__()

    def score(self, logits: torch.Tensor, state: dict, step: int) -> StepScores:
        raise RuntimeError("an internal error of the test method")


TEST_METHODS = (Held, Crashes)
"""The server tests' own methods, registered for a module's run by the ``server_test_methods`` fixture."""
