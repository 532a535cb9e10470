"""Running the server: uvicorn on this machine, or Ray Serve replicas on a Ray cluster."""

from __future__ import annotations

import signal
import threading
from typing import Any

from aligned_llm.server.options import PORT, check_app_options, check_ray_options
from aligned_llm.spec import ModelSpec


def run_http(spec: ModelSpec, *, host: str, port: int, log_level: str = "info", **app_options: Any) -> None:
    """Load the model of ``spec`` and serve it with uvicorn until interrupted; the options are checked first."""
    PORT.validate(port)
    check_app_options(**app_options)
    import uvicorn

    from aligned_llm.server.app import create_app

    app = create_app(spec.load(), **{"served_model_name": spec.display_name, **app_options})
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def run_ray(
    spec: ModelSpec,
    *,
    host: str,
    port: int,
    replicas: int,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    **app_options: Any,
) -> None:
    """Serve ``replicas`` copies behind Ray Serve's HTTP proxy on ``host:port`` until interrupted.

    ``address``: a running cluster (``"auto"`` or ``ray://…``); without it a local Ray starts.
    Every option is checked before Ray starts.
    """
    PORT.validate(port)
    check_ray_options(replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus)
    check_app_options(**app_options)
    import ray
    from ray import serve

    from aligned_llm.server.ray_serve import application

    ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(
        application(spec, replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus, **app_options),
        name="aligned-llm",
        route_prefix="/",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
