"""The benchmark of mcp_registry: `python -m bench` (see bench/README.md)."""
