"""An OpenAI-compatible HTTP server for aligned decoding (the ``serve`` extra).

``create_app(llm)`` builds the FastAPI app; ``aligned-llm serve`` runs it with uvicorn, or as
Ray Serve replicas (``aligned_llm.server.ray_serve``). See docs/serving.md.
"""

from __future__ import annotations

from aligned_llm.server.app import create_app

__all__ = ["create_app"]
