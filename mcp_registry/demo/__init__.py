"""The demo: an MCP app, and the real processes around it (Redis, workers, a non-sticky balancer).

`mcp_registry.demo:app` is the demo's ASGI app, built on first access so that importing the
infrastructure modules (`runner`, `cluster`, ...) never builds one::

    uvicorn mcp_registry.demo:app --port 8000

Build more with `mcp_registry.demo.app.build_app()`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from mcp_registry.demo.app import build_app

        built = build_app()
        # Importing the `app` submodule just bound the name to the module; the ASGI app wins.
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
