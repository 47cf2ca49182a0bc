"""ProxyConfig validation: every error names the offending field."""

from __future__ import annotations

import pytest

from wspipe_core import ConfigError, ProxyConfig


def test_defaults_are_valid_and_pinned():
    cfg = ProxyConfig()
    assert cfg.buffer_limit == 5 * 1024 * 1024  # as in the original
    assert cfg.max_interruption == 30.0
    assert cfg.interruption_codes == frozenset({1001, 1006, 1011, 1012, 1013, 1014})
    assert cfg.strategy == "least_connections" and cfg.buffer_policy == "close"


@pytest.mark.parametrize("field,value", [
    ("max_connections", 0), ("max_connections", -1), ("max_connections", 1.5),
    ("max_connections", True), ("buffer_limit", 0), ("memory_budget", "1"),
    ("max_message_size", -1), ("max_header_size", 0), ("eject_after", 0),
    ("write_high_water", 0),
    ("handshake_timeout", 0), ("max_interruption", -1), ("close_timeout", "5"),
    ("eject_base", 0), ("eject_max", 0), ("backoff_max", 0), ("handshake_timeout", True),
    ("ping_interval", -1), ("ping_timeout", -0.5), ("backoff_base", -1),
    ("max_header_size", 16 * 1024 + 1),
    ("write_low_water", 256 * 1024), ("write_low_water", -1),
    ("max_errors", 0),
    ("buffer_policy", "spill"), ("backoff", "linear"),
    ("client_id_header", ""), ("client_id_header", "x-idé"),
])
def test_invalid_value_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ProxyConfig(**{field: value})


def test_interruption_code_out_of_range_is_named():
    with pytest.raises(ConfigError, match="interruption_codes: 999"):
        ProxyConfig(interruption_codes=frozenset({999}))


def test_ping_timeout_required_when_pinging():
    with pytest.raises(ConfigError, match="ping_timeout"):
        ProxyConfig(ping_interval=5, ping_timeout=0)
    assert ProxyConfig(ping_interval=0, ping_timeout=0).ping_timeout == 0


@pytest.mark.parametrize("kwargs,field", [
    ({"max_message_size": 2000, "buffer_limit": 1000}, "max_message_size"),
    ({"buffer_limit": 2000, "memory_budget": 1000, "max_message_size": 1000}, "buffer_limit"),
])
def test_inconsistent_limits_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ProxyConfig(**kwargs)


def test_max_message_size_follows_a_smaller_buffer_limit_unless_set():
    """``--buffer-limit 1MiB`` alone must not fail on another setting's default."""
    assert ProxyConfig().max_message_size == 4 * 1024 * 1024
    assert ProxyConfig(buffer_limit=1024 * 1024).max_message_size == 1024 * 1024
    assert ProxyConfig(buffer_limit=1000, max_message_size=500).max_message_size == 500
    with pytest.raises(ConfigError, match=r"max_message_size \(2000\) must not exceed "
                                          r"buffer_limit \(1000\)"):
        ProxyConfig(buffer_limit=1000, max_message_size=2000)


def test_from_mapping_accepts_dashes_and_lists():
    cfg = ProxyConfig.from_mapping({"max-connections": 5, "backends": ["ws://a/", "ws://b/"],
                                    "interruption-codes": [1012], "subprotocols": ["chat"]})
    assert cfg.max_connections == 5
    assert cfg.backends == ("ws://a/", "ws://b/")
    assert cfg.interruption_codes == frozenset({1012})
    assert cfg.subprotocols == ("chat",)


def test_from_mapping_rejects_unknown_keys_by_name():
    with pytest.raises(ConfigError, match="max_conections"):
        ProxyConfig.from_mapping({"max_conections": 5})


def test_from_mapping_validates_values():
    with pytest.raises(ConfigError, match="buffer_limit"):
        ProxyConfig.from_mapping({"buffer-limit": -5})


def test_config_is_frozen():
    cfg = ProxyConfig()
    with pytest.raises(AttributeError):
        cfg.buffer_limit = 1  # type: ignore[misc]


@pytest.mark.parametrize("field", ["subprotocols", "forward_headers", "backends"])
def test_a_string_where_a_list_is_expected_is_a_config_error(field):
    """``subprotocols = "chat"`` in a config file would allow "c", "ha", ... by substring."""
    with pytest.raises(ConfigError, match=field):
        ProxyConfig(**{field: "chat"})
    with pytest.raises(ConfigError, match=field):
        ProxyConfig.from_mapping({field: "chat"})
    with pytest.raises(ConfigError, match=field):
        ProxyConfig(**{field: ("ok", 5)})


@pytest.mark.parametrize("codes", [["1012"], 1012, [True]])
def test_interruption_codes_must_be_integers(codes):
    with pytest.raises(ConfigError, match="interruption_codes"):
        ProxyConfig.from_mapping({"interruption_codes": codes})
