# The demo MCP app (`mcp_registry.demo:app`) with the registry, the OpenTelemetry SDK and
# exporters, and uvicorn[standard] (uvloop, httptools) for multi-worker serving.
# Used by docker-compose.yml; configured only through MCP_SESSION_* and OTEL_* variables.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mcp_registry ./mcp_registry
RUN pip install ".[otel,cli]"

USER nobody
EXPOSE 8000
CMD ["uvicorn", "mcp_registry.demo:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
