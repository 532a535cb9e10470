"""The same app as N Ray Serve replicas, each loading its own model, behind Ray Serve's HTTP proxy.

From Python: ``serve.run(application(ModelSpec(...), replicas=2))``. From the shell:
``aligned-llm serve --ray --replicas 2`` or ``serve run aligned_llm.server.ray_serve:build_app
replicas=2 model=/path`` (Ray's own CLI; its ``key=value`` arguments are :func:`build_app`'s).
The replicas receive a :class:`~aligned_llm.spec.ModelSpec`, never a path from a request.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from aligned_llm.errors import InvalidSettingError
from aligned_llm.server.app import create_app
from aligned_llm.server.options import DEFAULT_MAX_QUEUE, check_app_options, check_ray_options
from aligned_llm.spec import ModelSpec


@serve.ingress()
class AlignedServer:
    """One replica: loads the model of ``spec`` and serves ``create_app`` on it."""

    def __init__(self, spec: ModelSpec, app_options: dict[str, Any]) -> None:
        self._app = create_app(spec.load(), **app_options)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


def application(
    spec: ModelSpec,
    *,
    replicas: int = 1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    **app_options: Any,
) -> Application:
    """A Ray Serve application of ``replicas`` copies of the server, each with its own model.

    ``num_cpus``/``num_gpus`` are reserved per replica (on a GPU cluster, ``num_gpus=1`` puts
    one model per GPU); ``app_options`` are :func:`create_app`'s (``served_model_name``,
    ``api_key``, ``max_queue``, ``retry_after``). Each replica takes up to ``max_queue``
    requests at once; Ray Serve routes new requests to the least busy replica.
    """
    check_ray_options(replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus)
    check_app_options(**app_options)
    options = {"served_model_name": spec.display_name, **app_options}
    actor_options = {
        name: value for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if value is not None
    }
    deployment = serve.deployment(
        AlignedServer,
        name="aligned-llm",
        num_replicas=replicas,
        max_ongoing_requests=options.get("max_queue", DEFAULT_MAX_QUEUE),
        ray_actor_options=actor_options,
    )
    return deployment.bind(spec, options)


def build_app(args: dict[str, str]) -> Application:
    """The application builder for ``serve run aligned_llm.server.ray_serve:build_app key=value ...``.

    Keys: ``model``, ``adapter``, ``reference``, ``device``, ``dtype``, ``replicas``,
    ``num_cpus``, ``num_gpus``, ``served_model_name``, ``api_key``, ``max_queue``.
    """
    known = {"model", "adapter", "reference", "device", "dtype", "replicas", "num_cpus", "num_gpus",
             "served_model_name", "api_key", "max_queue"}  # fmt: skip
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidSettingError(unknown[0], f"is not an argument; the arguments are {', '.join(sorted(known))}")
    model_fields = ("model", "adapter", "reference", "device", "dtype")
    spec = ModelSpec(**{name: args[name] for name in model_fields if name in args})
    app_options: dict[str, Any] = {name: args[name] for name in ("served_model_name", "api_key") if name in args}
    if "max_queue" in args:
        app_options["max_queue"] = int(args["max_queue"])
    return application(
        spec,
        replicas=int(args.get("replicas", 1)),
        num_cpus=float(args["num_cpus"]) if "num_cpus" in args else None,
        num_gpus=float(args["num_gpus"]) if "num_gpus" in args else None,
        **app_options,
    )
