"""RegistryConfig: its defaults, the environment variables of DESIGN.md, and the errors that name them.

Variable names are written out literally here: they are a contract with operators.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import secrets
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_registry import ConfigError, RegistryConfig
from mcp_registry.config import Continuity
from mcp_registry.outcomes import StalePolicy

BOOL_VARIABLES = {
    "MCP_SESSION_REGISTRY": "enabled",
    "MCP_SESSION_REGISTRY_TRACE_LOCAL": "trace_local",
    "MCP_SESSION_REGISTRY_RECORD_RAW_ID": "record_raw_id",
}
FLOAT_VARIABLES = {
    "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "refresh_seconds",
    "MCP_SESSION_REGISTRY_LOOKUP_RATE": "lookup_rate",
    "MCP_SESSION_REGISTRY_REDIS_TIMEOUT": "redis_timeout",
}
INT_VARIABLES = {
    "MCP_SESSION_REGISTRY_RETENTION_SECONDS": "retention_seconds",
    "MCP_SESSION_REGISTRY_QUEUE_SIZE": "queue_size",
}
NUMBER_VARIABLES = FLOAT_VARIABLES | INT_VARIABLES
TLS_VARIABLES = {
    "MCP_SESSION_REGISTRY_TLS_CA_FILE": "tls_ca_file",
    "MCP_SESSION_REGISTRY_TLS_CERT_FILE": "tls_cert_file",
    "MCP_SESSION_REGISTRY_TLS_KEY_FILE": "tls_key_file",
}
ALL_VARIABLES = [
    *BOOL_VARIABLES,
    *NUMBER_VARIABLES,
    *TLS_VARIABLES,
    "MCP_SESSION_REGISTRY_URL",
    "MCP_SESSION_REGISTRY_PREFIX",
    "MCP_SESSION_REGISTRY_WORKER_ID",
    "MCP_SESSION_STALE_POLICY",
    "MCP_SESSION_REGISTRY_HASH_KEY",
]
KEY = "lhTFSYwumWVnnTrYRC6MDxzxFBjvBiW7AT4bMzU21hs"
"""A generated key (`secrets.token_urlsafe(32)`)."""


def names(variable: str) -> str:
    """A `match` pattern: the error message names `variable`."""
    return re.escape(variable)


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_defaults() -> None:
    config = RegistryConfig()

    assert config.enabled is False
    assert config.url == "redis://localhost:6379/0"
    assert config.prefix == "mcpreg"
    assert config.worker_id == f"{socket.gethostname()}:{os.getpid()}"
    assert config.stale_policy is StalePolicy.SPEC
    assert config.trace_local is False
    assert config.hash_key is None
    assert config.record_raw_id is False
    assert config.refresh_seconds == 60.0
    assert config.retention_seconds == 86_400
    assert config.queue_size == 10_000
    assert config.lookup_rate == 200.0
    assert config.redis_timeout == 0.5
    assert (config.tls_ca_file, config.tls_cert_file, config.tls_key_file) == (None, None, None)
    assert config.session_ttl_seconds == 180


def test_an_empty_environment_gives_the_defaults() -> None:
    assert RegistryConfig.from_env({}) == RegistryConfig()


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MCP_SESSION_REGISTRY", "1")
    monkeypatch.setenv("MCP_SESSION_STALE_POLICY", "strip")

    config = RegistryConfig.from_env()

    assert config.enabled is True
    assert config.stale_policy is StalePolicy.STRIP


def test_config_is_frozen() -> None:
    config = RegistryConfig()

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.enabled = True  # type: ignore[misc]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------------
# Every variable
# --------------------------------------------------------------------------------------------


def test_from_env_reads_every_variable() -> None:
    env = {
        "MCP_SESSION_REGISTRY": "1",
        "MCP_SESSION_REGISTRY_URL": "rediss://user:pw@redis.internal:6380/2",
        "MCP_SESSION_REGISTRY_PREFIX": "tenant-a:mcp",
        "MCP_SESSION_REGISTRY_WORKER_ID": "pod-7:1234",
        "MCP_SESSION_STALE_POLICY": "strip",
        "MCP_SESSION_REGISTRY_TRACE_LOCAL": "true",
        "MCP_SESSION_REGISTRY_HASH_KEY": KEY,
        "MCP_SESSION_REGISTRY_RECORD_RAW_ID": "yes",
        "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "15",
        "MCP_SESSION_REGISTRY_RETENTION_SECONDS": "3600",
        "MCP_SESSION_REGISTRY_QUEUE_SIZE": "500",
        "MCP_SESSION_REGISTRY_LOOKUP_RATE": "12.5",
        "MCP_SESSION_REGISTRY_REDIS_TIMEOUT": "0.25",
        "MCP_SESSION_REGISTRY_TLS_CA_FILE": "/etc/redis/ca.pem",
        "MCP_SESSION_REGISTRY_TLS_CERT_FILE": "/etc/redis/client.pem",
        "MCP_SESSION_REGISTRY_TLS_KEY_FILE": "/etc/redis/client.key",
    }

    config = RegistryConfig.from_env(env)

    assert config == RegistryConfig(
        enabled=True,
        url="rediss://user:pw@redis.internal:6380/2",
        prefix="tenant-a:mcp",
        worker_id="pod-7:1234",
        stale_policy=StalePolicy.STRIP,
        trace_local=True,
        hash_key=KEY.encode(),
        record_raw_id=True,
        refresh_seconds=15.0,
        retention_seconds=3600,
        queue_size=500,
        lookup_rate=12.5,
        redis_timeout=0.25,
        tls_ca_file="/etc/redis/ca.pem",
        tls_cert_file="/etc/redis/client.pem",
        tls_key_file="/etc/redis/client.key",
    )
    assert isinstance(config.retention_seconds, int)
    assert isinstance(config.queue_size, int)


TRUTHY = ["1", "true", "yes", "on", "TRUE", "Yes", "ON", " on ", "true\n"]
FALSY = ["0", "false", "no", "off", "FALSE", "No", "OFF", " off ", ""]
NOT_BOOLEAN = ["2", "-1", "y", "n", "t", "enable", "enabled", "disabled", "truee", "on off", "null"]


@pytest.mark.parametrize("variable", BOOL_VARIABLES)
@pytest.mark.parametrize("spelling", TRUTHY)
def test_truthy_spellings(variable: str, spelling: str) -> None:
    config = RegistryConfig.from_env({variable: spelling})

    assert getattr(config, BOOL_VARIABLES[variable]) is True


@pytest.mark.parametrize("variable", BOOL_VARIABLES)
@pytest.mark.parametrize("spelling", FALSY)
def test_falsy_spellings(variable: str, spelling: str) -> None:
    config = RegistryConfig.from_env({variable: spelling})

    assert getattr(config, BOOL_VARIABLES[variable]) is False


@pytest.mark.parametrize("variable", BOOL_VARIABLES)
@pytest.mark.parametrize("spelling", NOT_BOOLEAN)
def test_a_bad_boolean_names_the_variable(variable: str, spelling: str) -> None:
    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({variable: spelling})


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("spec", StalePolicy.SPEC),
        ("strip", StalePolicy.STRIP),
        ("STRIP", StalePolicy.STRIP),
        (" Spec ", StalePolicy.SPEC),
    ],
)
def test_stale_policy_spellings(spelling: str, expected: StalePolicy) -> None:
    assert RegistryConfig.from_env({"MCP_SESSION_STALE_POLICY": spelling}).stale_policy is expected


@pytest.mark.parametrize("spelling", ["", "reject", "pass", "lax", "spec,strip", "1"])
def test_a_bad_stale_policy_names_the_variable(spelling: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_STALE_POLICY")):
        RegistryConfig.from_env({"MCP_SESSION_STALE_POLICY": spelling})


def test_a_stale_policy_given_as_text_in_code_is_parsed() -> None:
    assert RegistryConfig.from_env({}, stale_policy="strip").stale_policy is StalePolicy.STRIP
    with pytest.raises(ConfigError, match=names("MCP_SESSION_STALE_POLICY")):
        RegistryConfig.from_env({}, stale_policy="loose")


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:secret@10.0.0.5:6379",
        "rediss://user:pw@redis.internal:6380/2",
        "unix:///var/run/redis/redis.sock",
        "REDIS://localhost",
    ],
)
def test_redis_urls(url: str) -> None:
    assert RegistryConfig.from_env({"MCP_SESSION_REGISTRY_URL": url}).url == url
    assert RegistryConfig(url=url).url == url


@pytest.mark.parametrize(
    "url", ["http://localhost:6379", "localhost:6379", "redis", "tcp://localhost:6379", "valkey://x", "", "  "]
)
def test_a_bad_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_URL")):
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_URL": url})
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_URL")):
        RegistryConfig(url=url)


def test_text_variables_are_trimmed() -> None:
    config = RegistryConfig.from_env(
        {
            "MCP_SESSION_REGISTRY_URL": " redis://cache:6379/1\n",
            "MCP_SESSION_REGISTRY_PREFIX": " app ",
            "MCP_SESSION_REGISTRY_WORKER_ID": "\tweb-1 ",
            "MCP_SESSION_REGISTRY_TLS_CA_FILE": " /ca.pem ",
        }
    )

    assert (config.url, config.prefix, config.worker_id) == ("redis://cache:6379/1", "app", "web-1")
    assert config.tls_ca_file == "/ca.pem"


@pytest.mark.parametrize("variable", TLS_VARIABLES)
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_tls_variable_means_unset(variable: str, value: str) -> None:
    assert getattr(RegistryConfig.from_env({variable: value}), TLS_VARIABLES[variable]) is None


@pytest.mark.parametrize("prefix", ["", "   ", "has space", "{tag}", "a{b", "a}b", "nul\x00", "a|b"])
def test_a_bad_prefix_names_the_variable(prefix: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_PREFIX")):
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_PREFIX": prefix})


# Non-ASCII: the id travels in every hop's header, where it used to break every hop that worker sent (bad_tag).
@pytest.mark.parametrize("worker_id", ["", "a|b", "line\nbreak", "bell\x07", "caf\u00e9:1", "\u30ef\u30fc\u30ab\u30fc"])
def test_a_bad_worker_id_names_the_variable(worker_id: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_WORKER_ID")):
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_WORKER_ID": worker_id})
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_WORKER_ID")):
        RegistryConfig(worker_id=worker_id)


def test_a_blank_worker_id_variable_is_an_error_not_the_default() -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_WORKER_ID")):
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_WORKER_ID": "  "})


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "url-safe base64 or hex"),
        ("x", "at least 32 random bytes"),
        ("0123456789abcdef", "64 hex digits"),  # the old 16-byte minimum
        (secrets.token_hex(24), "64 hex digits"),  # 24 random bytes
        ("dictionary-word-key-16", "at least 32 random bytes"),  # guessed in about a second offline
        ("correct-horse-battery-staple-purple-monkey-x", "does not look random"),
        ("k" * 64, "does not look random"),
        ("0123456789abcdef" * 4, "does not look random"),
        ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "does not look random"),
        ("\u00e9" * 32, "url-safe base64 or hex"),
    ],
)
def test_a_weak_hash_key_fails_start_up_naming_the_variable(key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_HASH_KEY")) as from_env:
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_HASH_KEY": key})
    assert says in str(from_env.value)
    assert "secrets.token_urlsafe(32)" in str(from_env.value)  # how to make a good one
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_HASH_KEY")):
        RegistryConfig(hash_key=key.encode())


@pytest.mark.parametrize(
    "key",
    [secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_hex(32), secrets.token_bytes(32)],
    ids=["token_urlsafe(32)", "token_urlsafe(48)", "token_hex(32)", "raw 32 bytes in code"],
)
def test_a_generated_key_is_accepted_as_given(key: str | bytes) -> None:
    raw = key if isinstance(key, bytes) else key.encode()
    assert RegistryConfig(hash_key=raw).hash_key == raw
    if isinstance(key, str):
        assert RegistryConfig.from_env({"MCP_SESSION_REGISTRY_HASH_KEY": key}).hash_key == raw


@pytest.mark.parametrize("variable", NUMBER_VARIABLES)
@pytest.mark.parametrize("value", ["abc", "", " ", "1s", "ten", "0x10", "1,5", "5 5"])
def test_a_non_number_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({variable: value})


@pytest.mark.parametrize("variable", NUMBER_VARIABLES)
@pytest.mark.parametrize("value", ["0", "-1", "-0", "-inf", "inf", "nan", "1e999"])
def test_a_number_that_is_not_positive_and_finite_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({variable: value})


@pytest.mark.parametrize("variable", INT_VARIABLES)
@pytest.mark.parametrize("value", ["1.5", "10.0", "1e3"])
def test_a_whole_number_variable_rejects_fractions(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({variable: value})


@pytest.mark.parametrize("field", NUMBER_VARIABLES.values())
@pytest.mark.parametrize("value", [0, -1, math.inf, -math.inf, math.nan])
def test_a_bad_number_in_code_names_the_variable(field: str, value: float) -> None:
    variable = next(name for name, attr in NUMBER_VARIABLES.items() if attr == field)

    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({}, **{field: value})


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("MCP_SESSION_REGISTRY_REFRESH_SECONDS", "0.5", 0.5),
        ("MCP_SESSION_REGISTRY_REFRESH_SECONDS", " 30 ", 30.0),
        ("MCP_SESSION_REGISTRY_LOOKUP_RATE", "1e3", 1000.0),
        ("MCP_SESSION_REGISTRY_REDIS_TIMEOUT", "0.05", 0.05),
        ("MCP_SESSION_REGISTRY_RETENTION_SECONDS", "60", 60),
        ("MCP_SESSION_REGISTRY_QUEUE_SIZE", "1", 1),
    ],
)
def test_numbers(variable: str, raw: str, expected: float) -> None:
    assert getattr(RegistryConfig.from_env({variable: raw}), NUMBER_VARIABLES[variable]) == expected


# --------------------------------------------------------------------------------------------
# Code wins over the environment
# --------------------------------------------------------------------------------------------


def test_keyword_overrides_win_over_the_environment() -> None:
    env = {
        "MCP_SESSION_REGISTRY": "1",
        "MCP_SESSION_REGISTRY_URL": "redis://from-env:6379/0",
        "MCP_SESSION_REGISTRY_PREFIX": "from-env",
        "MCP_SESSION_REGISTRY_WORKER_ID": "env-worker",
        "MCP_SESSION_STALE_POLICY": "strip",
        "MCP_SESSION_REGISTRY_TRACE_LOCAL": "1",
        "MCP_SESSION_REGISTRY_HASH_KEY": "mbH4Q8O-tHNOnYs1AtoX3cP85HyIcqs5ng32tN14FFY",
        "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "5",
        "MCP_SESSION_REGISTRY_QUEUE_SIZE": "7",
        "MCP_SESSION_REGISTRY_TLS_CA_FILE": "/env/ca.pem",
    }

    config = RegistryConfig.from_env(
        env,
        enabled=False,
        url="unix:///run/redis.sock",
        prefix="from-code",
        worker_id="code-worker",
        stale_policy=StalePolicy.SPEC,
        trace_local=False,
        hash_key=b"fIFByMjPGsiVEQpEDJBEvB1g81vBOo5KF15JEjp5G-I",
        refresh_seconds=20.0,
        queue_size=70,
        tls_ca_file=None,
    )

    assert config == RegistryConfig(
        enabled=False,
        url="unix:///run/redis.sock",
        prefix="from-code",
        worker_id="code-worker",
        stale_policy=StalePolicy.SPEC,
        trace_local=False,
        hash_key=b"fIFByMjPGsiVEQpEDJBEvB1g81vBOo5KF15JEjp5G-I",
        refresh_seconds=20.0,
        queue_size=70,
        tls_ca_file=None,
    )


def test_variables_without_an_override_still_apply() -> None:
    config = RegistryConfig.from_env(
        {"MCP_SESSION_REGISTRY": "on", "MCP_SESSION_REGISTRY_PREFIX": "from-env"}, prefix="from-code"
    )

    assert config.enabled is True
    assert config.prefix == "from-code"


def test_replace_validates_again() -> None:
    config = RegistryConfig()

    assert config.replace(refresh_seconds=2.0).session_ttl_seconds == 6
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_PREFIX")):
        config.replace(prefix="")


# --------------------------------------------------------------------------------------------
# Live-session TTL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refresh_seconds", "ttl"),
    [(60.0, 180), (1.0, 3), (10.0, 30), (0.5, 2), (0.2, 1), (0.1, 1), (0.001, 1), (2.5, 8)],
)
def test_session_ttl_is_three_refresh_intervals(refresh_seconds: float, ttl: int) -> None:
    assert RegistryConfig(refresh_seconds=refresh_seconds).session_ttl_seconds == ttl


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False))
def test_session_ttl_covers_three_intervals_in_whole_seconds(refresh_seconds: float) -> None:
    ttl = RegistryConfig(refresh_seconds=refresh_seconds).session_ttl_seconds

    assert isinstance(ttl, int)
    assert ttl >= 3 * refresh_seconds
    assert ttl < 3 * refresh_seconds + 1


# --------------------------------------------------------------------------------------------
# Continuity
# --------------------------------------------------------------------------------------------
CONTINUITY_ENV = {"MCP_SESSION_CONTINUITY": "forward", "MCP_SESSION_REGISTRY_HASH_KEY": KEY}


def test_continuity_is_off_by_default() -> None:
    config = RegistryConfig.from_env({})

    assert config.continuity is Continuity.OFF
    assert config.forward_listen.startswith("unix:")
    assert config.forward_listen.endswith("/mcp-registry-hop-{pid}.sock")
    assert config.forward_advertise is None
    assert config.route_label is None


def test_continuity_variables_are_read() -> None:
    config = RegistryConfig.from_env({
        **CONTINUITY_ENV,
        "MCP_SESSION_FORWARD_LISTEN": "0.0.0.0:0",
        "MCP_SESSION_FORWARD_ADVERTISE": "10.0.0.5",
        "MCP_SESSION_FORWARD_TIMEOUT": "12.5",
        "MCP_SESSION_ROUTE_LABEL": "host-a",
    })

    assert config.continuity is Continuity.FORWARD
    assert (config.forward_listen, config.forward_advertise) == ("0.0.0.0:0", "10.0.0.5")
    assert config.forward_timeout == 12.5
    assert config.route_label == "host-a"


@pytest.mark.parametrize(("spelling", "expected"), [("FORWARD", Continuity.FORWARD), (" off ", Continuity.OFF),
                                                    ("", Continuity.OFF)])
def test_continuity_spellings(spelling: str, expected: Continuity) -> None:
    assert RegistryConfig.from_env({**CONTINUITY_ENV, "MCP_SESSION_CONTINUITY": spelling}).continuity is expected


def test_a_bad_continuity_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_CONTINUITY")):
        RegistryConfig.from_env({"MCP_SESSION_CONTINUITY": "sticky"})


def test_forwarding_without_the_shared_key_fails_naming_the_key_variable() -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_HASH_KEY")):
        RegistryConfig.from_env({"MCP_SESSION_CONTINUITY": "forward"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MCP_SESSION_FORWARD_LISTEN", "nowhere"), ("MCP_SESSION_FORWARD_ADVERTISE", "a:b:c"),
     ("MCP_SESSION_FORWARD_TIMEOUT", "0"), ("MCP_SESSION_FORWARD_TIMEOUT", "soon"),
     ("MCP_SESSION_ROUTE_LABEL", "has.dot"), ("MCP_SESSION_ROUTE_LABEL", "x" * 17)],
)
def test_a_bad_continuity_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=names(variable)):
        RegistryConfig.from_env({**CONTINUITY_ENV, variable: value})



def test_the_mcp_path_variable_takes_comma_separated_paths() -> None:
    assert RegistryConfig.from_env({"MCP_SESSION_REGISTRY_PATH": "/mcp, /v2/mcp"}).paths == ("/mcp", "/v2/mcp")
    assert RegistryConfig.from_env({}).paths is None


@pytest.mark.parametrize("value", ["mcp", "/mcp,", "/a b"])
def test_a_bad_mcp_path_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=names("MCP_SESSION_REGISTRY_PATH")):
        RegistryConfig.from_env({"MCP_SESSION_REGISTRY_PATH": value})
