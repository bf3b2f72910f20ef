"""The framework matrix: each supported MCP server line in its own virtualenv, on its newest release
(pinned, as checked last), and `latest`: everything at its newest, to see upstream drift before it lands.

`./run.sh test` runs it after the main suite (whose virtualenv is the `mcp` 2.x line with
`MCPServer`); `nox -s "frameworks(line='fastmcp-3')"` runs one line. Each session installs the
framework first, as its users have it, then this package as a user would (`pip install .`), and
fails if that moved the framework's `mcp`; then it runs `tests/frameworks/` (real uvicorn servers,
a real redis-server) and requires every app of its line to be found and tested there.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
# `latest` is a look ahead, not part of `./run.sh test`: run it by name.
nox.options.sessions = ["frameworks", "litellm"]

# Pinned like constraints.txt (the main suite's toolchain), so that upstream drift shows up in `nox -s latest`.
TEST_DEPS = ("pytest==9.2.0", "pytest-asyncio==1.5.0", "pytest-timeout==2.4.0", "httpx==0.29.0")
FLOOR_WARNINGS = (
    # mcp 1.26 itself, with today's pydantic-settings and anyio: a settings warning at import and
    # memory streams its transports leave unclosed. Not ours; the newest 1.x has neither.
    "-W", "ignore::pydantic_settings.exceptions.IncompleteFieldDefinitionWarning",
    "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
)  # fmt: skip

LINES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # line: (what its users install, the apps tests/frameworks must find, extra pytest arguments)
    # The newest release of each line when last checked: bump them after `nox -s latest` passes.
    "mcp-1": ("mcp==1.30.0", "mcp1-fastmcp", ()),
    "mcp-1-floor": ("mcp==1.26.0", "mcp1-fastmcp", FLOOR_WARNINGS),
    "fastmcp-3": ("fastmcp==3.4.11", "mcp1-fastmcp,fastmcp3,fastmcp3-auth", ()),
    "fastmcp-4": ("fastmcp==4.2.3", "mcp2-mcpserver,fastmcp4,fastmcp4-auth", ()),
}


def _installed(session: nox.Session, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = session.run("python", "-c", code, silent=True)
    return str(out).strip()


@nox.session(python="3.11")
@nox.parametrize("line", list(LINES))
def frameworks(session: nox.Session, line: str) -> None:
    requirement, expected, extra = LINES[line]
    session.install(requirement, "uvicorn")
    before = _installed(session, "mcp")
    session.install(".[otel,continuity]", *TEST_DEPS)
    after = _installed(session, "mcp")
    if after != before:
        session.error(f"installing mcp-session-continuity moved mcp from {before} to {after} under {requirement}")
    session.log(f"{line}: mcp {after}" + (f", fastmcp {_installed(session, 'fastmcp')}" if "fastmcp" in line else ""))
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "tests/frameworks", *extra, *session.posargs,
        env={"MCP_REGISTRY_FRAMEWORKS": expected, "CI": os.environ.get("CI", "")},
    )  # fmt: skip


LITELLM = "litellm==1.110.2"
LITELLM_PROXY_DEPS = (
    # `litellm[proxy]` pins litellm-proxy, litellm-enterprise and litellm-proxy-extras, which the
    # package index reachable here does not carry; the proxy app (litellm/proxy/proxy_server.py) ships
    # in the litellm wheel itself and runs with its other runtime dependencies, listed here.
    "fastapi>=0.136.3", "starlette>=1.0.1", "uvicorn[standard]>=0.33", "backoff", "pyyaml", "rq>=2.7", "orjson",
    "apscheduler>=3.11.2,<4", "fastapi-sso", "pyjwt>=2.13", "python-multipart", "cryptography>=49", "pynacl",
    "websockets>=15,<16", "mcp>=2.3,<3", "httpx2>=2.10,<3", "rich", "tomlkit", "semver", "expression",
    "restrictedpython", "soundfile",
)  # fmt: skip


@nox.session(python="3.11")
def litellm(session: nox.Session) -> None:
    """LiteLLM's proxy wrapped by the recipe of deploy/litellm/, with the demo server as its upstream."""
    session.install(LITELLM, *LITELLM_PROXY_DEPS)
    before = _installed(session, "mcp")
    session.install(".[otel,cli]", *TEST_DEPS)
    after = _installed(session, "mcp")
    if after != before:
        session.error(f"installing mcp-session-continuity moved mcp from {before} to {after} beside LiteLLM")
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "tests/frameworks", *session.posargs,
        env={"MCP_REGISTRY_FRAMEWORKS": "mcp2-mcpserver,litellm", "CI": os.environ.get("CI", "")},
    )  # fmt: skip


@nox.session(python="3.11")
def latest(session: nox.Session) -> None:
    """The newest release of everything (runtime and toolchain), ignoring constraints.txt.

    `nox -s latest` (optionally `-- tests/test_lint.py` to try one file): a failure here is upstream
    drift to look at, not a red main. When it passes, regenerate constraints.txt from its virtualenv
    (`.nox/latest/bin/pip freeze --exclude-editable`) and bump the framework lines above.
    """
    session.install("--upgrade", "-e", ".[test]")
    session.run("pip", "list", "--format=freeze", silent=False)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *(session.posargs or ["tests"]))
