"""The server's startup options, checked before any model is loaded or any server starts.

Each check raises ``InvalidSettingError`` naming the option (``api_key``, ``port``, …) and what
it allows; ``aligned-llm serve`` reports it under the flag's name as a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence

from aligned_llm.errors import InvalidSettingError
from aligned_llm.parameters import Parameter

DEFAULT_MAX_QUEUE = 64
DEFAULT_RETRY_AFTER = 1

PORT = Parameter("port", int, 8000, "TCP port to listen on (0: any free port)", minimum=0, maximum=65535)
MAX_QUEUE = Parameter(
    "max_queue", int, DEFAULT_MAX_QUEUE, "requests in flight beyond which new ones get 503", minimum=1
)
RETRY_AFTER = Parameter(
    "retry_after", int, DEFAULT_RETRY_AFTER, "seconds a 503's Retry-After header tells the client to wait", minimum=0
)
REPLICAS = Parameter("replicas", int, 1, "Ray Serve replicas, one model each", minimum=1)
NUM_CPUS = Parameter("num_cpus", float, None, "CPUs Ray reserves per replica", minimum=0.0, optional=True)
NUM_GPUS = Parameter("num_gpus", float, None, "GPUs Ray reserves per replica", minimum=0.0, optional=True)


def check_api_key(api_key: object) -> None:
    """``None`` (no authentication) or a non-empty key of printable ASCII without spaces; the key is never echoed."""
    if api_key is None:
        return
    if not isinstance(api_key, str) or not api_key:
        raise InvalidSettingError(
            "api_key",
            "must be a non-empty key; leave it unset to serve without authentication "
            "(an empty key would be satisfied by an empty 'Authorization: Bearer' header)",
        )
    if not all("!" <= character <= "~" for character in api_key):
        raise InvalidSettingError(
            "api_key", "must be printable ASCII without spaces or control characters (it travels in an HTTP header)"
        )


def check_served_model_name(served_model_name: object) -> None:
    """``None`` (the model's own name), a non-blank name, or a non-empty list of them."""
    if served_model_name is None:
        return
    names = [served_model_name] if isinstance(served_model_name, str) else served_model_name
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(name, str) and name.strip() == name and name for name in names)
    ):
        raise InvalidSettingError(
            "served_model_name",
            "must be a non-empty name without surrounding spaces (or a non-empty list of them), "
            f"got {served_model_name!r}",
        )


def check_app_options(
    *,
    served_model_name: object = None,
    api_key: object = None,
    max_queue: object = DEFAULT_MAX_QUEUE,
    retry_after: object = DEFAULT_RETRY_AFTER,
) -> None:
    """Check :func:`~aligned_llm.server.app.create_app`'s options."""
    check_served_model_name(served_model_name)
    check_api_key(api_key)
    MAX_QUEUE.validate(max_queue)
    RETRY_AFTER.validate(retry_after)


def check_ray_options(*, replicas: object = 1, num_cpus: object = None, num_gpus: object = None) -> None:
    """Check the Ray Serve options: at least one replica, and non-negative finite resources per replica."""
    REPLICAS.validate(replicas)
    NUM_CPUS.validate(num_cpus)
    NUM_GPUS.validate(num_gpus)
