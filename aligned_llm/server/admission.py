"""A bounded number of requests in flight, and each request's metrics from admission to its end.

Beyond ``limit`` requests accepted and not finished, a new one is refused at once with 503 and
``Retry-After`` rather than queued without bound: the client (or a load balancer in front of
several servers) retries or goes elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aligned_llm.result import GenerationResult
from aligned_llm.server.errors import queue_full
from aligned_llm.server.metrics import Metrics


class Admission:
    """Admits requests while fewer than ``limit`` are in flight."""

    def __init__(self, limit: int, retry_after: int, metrics: Metrics) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.metrics = metrics
        self.in_flight = 0

    def admit(self, endpoint: str) -> AdmittedRequest:
        """A ticket for one request, or a 503 ``APIError`` when the server is full."""
        if self.in_flight >= self.limit:
            self.metrics.requests.labels(endpoint, "503").inc()
            raise queue_full(self.limit, self.retry_after)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        return AdmittedRequest(self, endpoint)

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)


class AdmittedRequest:
    """One admitted request: records its first token, then its outcome once, and frees its place."""

    def __init__(self, admission: Admission, endpoint: str) -> None:
        self._admission = admission
        self._metrics = admission.metrics
        self._endpoint = endpoint
        self._started = time.perf_counter()
        self._first_token = False
        self._done = False
        self._disconnected = False

    @property
    def finished(self) -> bool:
        return self._done

    def first_token(self) -> None:
        if not self._first_token:
            self._first_token = True
            self._metrics.time_to_first_token.labels(self._endpoint).observe(time.perf_counter() - self._started)

    def disconnected(self) -> None:
        """The client went away before the answer was complete: counted once, never after :meth:`finish`."""
        if not self._disconnected and not self._done:
            self._disconnected = True
            self._metrics.disconnects.inc()

    def finish(
        self, status: int, method: str = "", results: Sequence[GenerationResult] = (), extra_tokens: int = 0
    ) -> None:
        """Record the outcome (status, tokens, latency) and free the place; later calls do nothing."""
        if self._done:
            return
        self._done = True
        self._admission.release()
        self._metrics.requests.labels(self._endpoint, str(status)).inc()
        if results or extra_tokens:
            self._metrics.prompt_tokens.labels(method).inc(sum(result.input_tokens for result in results))
            generated = sum(result.output_tokens for result in results) + extra_tokens
            self._metrics.generation_tokens.labels(method).inc(generated)
        if status == 200:
            self._metrics.latency.labels(self._endpoint).observe(time.perf_counter() - self._started)
