"""Settings from flags, ``$WSPIPE_*`` and the config file: precedence, secrets from files,
errors naming the variable, and ``wspipe config --show``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from wspipe_anyio import cli
from wspipe_anyio.settings import Schema, SettingsError, merge, read_environ
from wspipe_core import ProxyConfig


def options(argv: list[str], environ: dict[str, str]) -> cli.ServeOptions:
    merged = cli.merge_layers(cli.build_parser().parse_args(["serve", *argv]), environ=environ)
    return cli.build_options(merged.values, merged)


def test_flags_override_environment_override_file_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text('max_connections = 10\nbuffer_limit = "1MiB"\nping_interval = 3\n'
                    'link_timeout = 2\n')
    env = {"WSPIPE_MAX_CONNECTIONS": "20", "WSPIPE_BUFFER_LIMIT": "2MiB"}
    cfg = options(["--config", str(path), "--max-connections", "30"], env).config
    assert cfg.max_connections == 30          # flag over env over file
    assert cfg.buffer_limit == 2 << 20        # env over file
    assert cfg.ping_interval == 3.0           # file over default
    assert cfg.link_timeout == 2.0
    assert cfg.max_interruption == ProxyConfig().max_interruption  # default


def test_every_key_has_a_variable_of_its_type() -> None:
    env = {
        "WSPIPE_BACKENDS": "ws://127.0.0.1:9001/, ws://127.0.0.1:9002/",
        "WSPIPE_LISTEN": '["127.0.0.1:7001", "[::1]:7001"]',
        "WSPIPE_FORWARD_TARGET": "off",
        "WSPIPE_INTERRUPTION_CODES": "1001,1012",
        "WSPIPE_MIGRATE_RATE": "12.5",
        "WSPIPE_MAX_ERRORS": "7",
        "WSPIPE_SUBPROTOCOLS": "chat.v2,chat.v1",
        "WSPIPE_HEALTH_CHECK_PATH": "/healthz",
        "WSPIPE_RACE_AFTER": "250ms",
        "WSPIPE_PLUGIN_SETTINGS": '{backoff = {kind = "fixed", delay = 0.2}}',
        "WSPIPE_LOAD_ENTRYPOINTS": "false",
        "WSPIPE_ASYNC_LIB": "trio",
        "WSPIPE_SHUTDOWN_GRACE": "3s",
    }
    opts = options([], env)
    cfg = opts.config
    assert cfg.backends == ("ws://127.0.0.1:9001/", "ws://127.0.0.1:9002/")
    assert opts.listen == (("127.0.0.1", 7001), ("::1", 7001))
    assert cfg.forward_target is False
    assert cfg.interruption_codes == frozenset({1001, 1012})
    assert cfg.migrate_rate == 12.5
    assert cfg.max_errors == 7
    assert cfg.subprotocols == ("chat.v2", "chat.v1")
    assert cfg.health_check_path == "/healthz"
    assert cfg.race_after == 0.25
    assert cfg.plugin_settings == {"backoff": {"kind": "fixed", "delay": 0.2}}
    assert opts.load_entrypoints is False
    assert opts.async_lib == "trio"
    assert opts.shutdown_grace == 3.0


def test_schema_reads_every_key_from_text() -> None:
    """No key falls through to "str" by accident: each ProxyConfig field has a kind
    that matches its default."""
    schema = cli.SCHEMA
    defaults = ProxyConfig()
    for key in schema.core_keys:
        kind = schema.kind(key)
        value = getattr(defaults, key)
        if kind == "str" and value is not None:
            assert isinstance(value, str), key


def test_a_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    opts = options(["--admin", "127.0.0.1:0"], {"WSPIPE_ADMIN_TOKEN_FILE": str(secret)})
    assert opts.admin is not None and opts.admin.token == "from-a-file"
    opts = options(["--admin", "127.0.0.1:0"], {"WSPIPE_ADMIN_TOKEN": "from-a-variable"})
    assert opts.admin is not None and opts.admin.token == "from-a-variable"
    backends = tmp_path / "backends"
    backends.write_text("ws://127.0.0.1:9001/,ws://127.0.0.1:9002/\n")
    cfg = options([], {"WSPIPE_BACKENDS_FILE": str(backends)}).config
    assert cfg.backends == ("ws://127.0.0.1:9001/", "ws://127.0.0.1:9002/")


def test_a_higher_layer_token_replaces_the_file_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("in-the-file\n")
    path = tmp_path / "wspipe.toml"
    path.write_text(f'admin = "127.0.0.1:0"\nadmin_token_file = "{secret}"\n')
    opts = options(["--config", str(path)], {"WSPIPE_ADMIN_TOKEN": "from-env"})
    assert opts.admin is not None and opts.admin.token == "from-env"


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text("max_connections = 42\n")
    assert options([], {"WSPIPE_CONFIG": str(path)}).config.max_connections == 42


def test_empty_variables_count_as_unset() -> None:
    assert options([], {"WSPIPE_MAX_CONNECTIONS": ""}).config == ProxyConfig()


@pytest.mark.parametrize(("env", "message"), [
    ({"WSPIPE_MAX_CONNECTIONS": "many"}, "$WSPIPE_MAX_CONNECTIONS: expected an integer"),
    ({"WSPIPE_MAX_CONNECTIONS": "-1"},
     "max_connections must be a positive integer, got -1 (from $WSPIPE_MAX_CONNECTIONS)"),
    ({"WSPIPE_BUFFER_LIMIT": "lots"}, "$WSPIPE_BUFFER_LIMIT: invalid size"),
    ({"WSPIPE_PING_INTERVAL": "soon"}, "$WSPIPE_PING_INTERVAL: invalid duration"),
    ({"WSPIPE_FORWARD_TARGET": "maybe"}, "$WSPIPE_FORWARD_TARGET: expected true or false"),
    ({"WSPIPE_INTERRUPTION_CODES": "1001,x"}, "$WSPIPE_INTERRUPTION_CODES: expected comma"),
    ({"WSPIPE_LISTEN": "[oops"}, "$WSPIPE_LISTEN: not a TOML value"),
    ({"WSPIPE_ADMIN_TOKEN_FILE": "/no/such/file", "WSPIPE_ADMIN": "127.0.0.1:0"},
     "cannot read admin token file /no/such/file"),
    ({"WSPIPE_BACKENDS_FILE": "/no/such/file"}, "$WSPIPE_BACKENDS_FILE: cannot read"),
    ({"WSPIPE_BACKENDS_FILE": "/etc/hostname", "WSPIPE_BACKENDS": "ws://x/"},
     "give $WSPIPE_BACKENDS or $WSPIPE_BACKENDS_FILE, not both"),
    ({"WSPIPE_PLUGIN_SETTINGS": "x"}, "$WSPIPE_PLUGIN_SETTINGS: expected a TOML table"),
    ({"WSPIPE_DELIVERY": "sometimes"}, "(from $WSPIPE_DELIVERY)"),
])
def test_bad_environment_values_exit_2_naming_the_variable(
        env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("wspipe: error: ") and message in err, err


def test_unknown_variables_are_reported_and_ignored() -> None:
    warnings: list[str] = []
    values, _ = read_environ({"WSPIPE_BUFER_LIMIT": "1MiB", "OTHER": "x"}, cli.SCHEMA,
                             warnings.append)
    assert values == {}
    assert warnings == ["$WSPIPE_BUFER_LIMIT is not a configuration key; ignored"]


def test_sources_name_each_layer(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text("max_connections = 10\n")
    schema = Schema(driver_defaults=cli.DRIVER_DEFAULTS, sizes=cli.SIZE_KEYS,
                    durations=cli.DURATION_KEYS)
    merged = merge({"backends": ["ws://127.0.0.1:1/"]}, schema, config_path=str(path),
                   environ={"WSPIPE_LINK_TIMEOUT": "2"}, flag_names={"backends": "--backend"})
    assert merged.source("max_connections") == f"max_connections in {path}"
    assert merged.source("link_timeout") == "$WSPIPE_LINK_TIMEOUT"
    assert merged.source("backends") == "--backend"
    assert merged.source("ping_interval") == "default"
    with pytest.raises(SettingsError, match="WSPIPE_LINK_TIMEOUT"):
        merge({}, schema, config_path=None, environ={"WSPIPE_LINK_TIMEOUT": "x"})


def test_config_show_prints_the_merged_config_masked_with_sources(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text('ping_interval = "5s"\n[plugins.token]\ntokens = ["client-secret"]\n'
                    'header = "authorization"\n')
    monkeypatch.setenv("WSPIPE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("WSPIPE_ADMIN", "127.0.0.1:9999")
    monkeypatch.setenv("WSPIPE_BUFFER_LIMIT", "2MiB")
    assert cli.main(["config", "--show", "--config", str(path),
                     "--backend", "ws://user:pw@127.0.0.1:9001/", "--max-connections", "7"]) == 0
    out = capsys.readouterr().out
    assert "admin-secret" not in out and "client-secret" not in out and "pw@" not in out
    assert 'admin_token = "***"  # $WSPIPE_ADMIN_TOKEN' in out
    assert "max_connections = 7  # --max-connections" in out
    assert "buffer_limit = 2097152  # $WSPIPE_BUFFER_LIMIT" in out
    assert f"ping_interval = 5.0  # ping_interval in {path}" in out
    assert "link_timeout = 3.0  # default" in out
    assert 'backends = ["ws://***@127.0.0.1:9001/"]  # --backend' in out
    assert 'header = "authorization"' in out
    parsed = tomllib.loads(out)  # it is a config file
    assert parsed["plugins"]["token"]["tokens"] == "***"


def test_config_show_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What --show prints, read back as a config file, is the same configuration."""
    monkeypatch.setenv("WSPIPE_SUBPROTOCOLS", "a,b")
    args = ["--backend", "ws://127.0.0.1:9001/", "--race-after", "0.2",
            "--listen", "[::1]:7000"]
    assert cli.main(["config", "--show", *args]) == 0
    shown = tmp_path / "shown.toml"
    shown.write_text(capsys.readouterr().out)
    monkeypatch.delenv("WSPIPE_SUBPROTOCOLS")
    again = options(["--config", str(shown)], {})
    first = options(args, {"WSPIPE_SUBPROTOCOLS": "a,b"})
    assert again.config == first.config
    assert again.listen == first.listen


def test_config_show_refuses_what_serve_refuses(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WSPIPE_MAX_PENDING_PER_PEER", "0")
    assert cli.main(["config", "--show"]) == 2
    assert "(from $WSPIPE_MAX_PENDING_PER_PEER)" in capsys.readouterr().err


def test_the_admin_address_may_be_the_url_the_admin_commands_take() -> None:
    """$WSPIPE_ADMIN is read by the admin commands (a URL or HOST:PORT) and by serve."""
    opts = options([], {"WSPIPE_ADMIN": "http://127.0.0.1:9191/", "WSPIPE_ADMIN_TOKEN": "t"})
    assert opts.admin is not None and (opts.admin.host, opts.admin.port) == ("127.0.0.1", 9191)
