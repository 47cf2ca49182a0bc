"""The ``wspipe`` command line: parsing, config files, units, and exit status 2 on bad input."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from wspipe_anyio.cli import build_options, build_parser, main, merge_settings
from wspipe_anyio.units import parse_address, parse_duration, parse_size


def options(argv: list[str]):  # type: ignore[no-untyped-def]
    return build_options(merge_settings(build_parser().parse_args(["serve", *argv])))


@pytest.mark.parametrize(("text", "expected"), [
    ("65536", 65536), ("5MiB", 5 << 20), ("512 KiB", 512 << 10), ("1GB", 10**9),
    ("5M", 5 << 20), ("1.5KiB", 1536), (42, 42),
])
def test_sizes_accept_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "5XB", "-1", "1.3B", True])
def test_invalid_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("20", 20.0), ("2.5s", 2.5), ("500ms", 0.5), ("1m", 60.0), (3, 3.0),
])
def test_durations_accept_units(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9000", ("127.0.0.1", 9000)), ("[::1]:9000", ("::1", 9000)),
    (":9000", ("127.0.0.1", 9000)), ("localhost", ("localhost", 8080)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["::1:80", "[::1", "host:port", "host:70000"])
def test_invalid_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_defaults() -> None:
    opts = options([])
    assert opts.listen == (("127.0.0.1", 8080),)
    assert opts.async_lib == "asyncio"
    assert opts.config.backends == ()
    assert opts.ssl_context is None


def test_flags_reach_the_proxy_config() -> None:
    opts = options([
        "--listen", "127.0.0.1:1", "--listen", "[::1]:2", "--backend", "ws://a:1",
        "--backend", "wss://b", "--async-lib", "trio", "--strategy", "round_robin",
        "--buffer-limit", "1MiB", "--memory-budget", "64MiB", "--max-message-size", "512KiB",
        "--max-connections", "7", "--max-interruption", "2.5", "--ping-interval", "500ms",
        "--ping-timeout", "1s", "--handshake-timeout", "3", "--log-format", "json",
        "--plugin", "some.module"])
    cfg = opts.config
    assert opts.listen == (("127.0.0.1", 1), ("::1", 2))
    assert cfg.backends == ("ws://a:1", "wss://b")
    assert opts.async_lib == "trio"
    assert (cfg.strategy, cfg.buffer_limit, cfg.memory_budget, cfg.max_message_size) == (
        "round_robin", 1 << 20, 64 << 20, 512 << 10)
    assert (cfg.max_connections, cfg.max_interruption, cfg.ping_interval, cfg.ping_timeout,
            cfg.handshake_timeout) == (7, 2.5, 0.5, 1.0, 3.0)
    assert opts.log_format == "json"
    assert opts.plugin_modules == ("some.module",)


def test_config_file_with_flags_overriding(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text(
        'listen = "127.0.0.1:9000"\n'
        'backends = ["ws://a:1", "ws://b:2"]\n'
        'buffer-limit = "8MiB"\n'
        'max_connections = 5\n'
        'subprotocols = ["chat"]\n'
        'async_lib = "trio"\n'
        '[plugins.quota]\nlimit = 3\n')
    opts = options(["--config", str(path), "--max-connections", "9", "--backend", "ws://c:3"])
    assert opts.listen == (("127.0.0.1", 9000),)
    assert opts.config.backends == ("ws://c:3",)  # a flag replaces the file's list
    assert opts.config.buffer_limit == 8 << 20
    assert opts.config.max_connections == 9
    assert opts.config.subprotocols == ("chat",)
    assert opts.config.plugin_settings == {"quota": {"limit": 3}}
    assert opts.async_lib == "trio"


def test_migrate_rate_is_a_core_key_that_works_without_admin(tmp_path: Path) -> None:
    assert options([]).config.migrate_rate == 50.0
    opts = options(["--migrate-rate", "5"])
    assert (opts.config.migrate_rate, opts.admin) == (5.0, None)
    path = tmp_path / "wspipe.toml"
    path.write_text("migrate_rate = 7\n")
    assert options(["--config", str(path)]).config.migrate_rate == 7
    assert options(["--config", str(path), "--migrate-rate", "2.5"]).config.migrate_rate == 2.5
    with_admin = options(["--admin", "127.0.0.1:0", "--migrate-rate", "3"])
    assert with_admin.config.migrate_rate == 3.0
    assert with_admin.admin is not None


@pytest.mark.parametrize(("argv", "config", "message"), [
    (["--bogus"], None, "unrecognized arguments"),
    (["--backend", "http://x"], None, "invalid backend URL"),
    (["--backend", "ws://"], None, "invalid backend URL"),
    (["--buffer-limit", "lots"], None, "invalid size"),
    (["--max-connections", "0"], None, "max_connections"),
    (["--async-lib", "curio"], None, "invalid choice"),
    (["--listen", "[::1"], None, "invalid listen address"),
    (["--plugin", "no_such_module_xyz"], None, "cannot import plugin"),
    (["--strategy", "nope"], None, "unknown strategy"),
    (["--migrate-rate", "0"], None, "migrate_rate must be > 0"),
    (["--migrate-rate", "fast"], None, "invalid float value"),
    ([], "migrate_rate = -1", "migrate_rate must be > 0"),
    (["--certfile", "/no/such.pem"], None, "TLS setup failed"),
    ([], "x = [", "invalid config file"),
    ([], "no_such_key = 1", "unknown configuration key"),
    ([], 'ping_interval = "soon"', "invalid duration"),
    ([], "max_connections = 'many'", "max_connections"),
    ([], "listen = 8080", "listen must be HOST:PORT"),
    ([], "plugins = [1]", "'plugins' must be a list"),
    (["--backend-allow", "10.0.0.0/8", "--backend", "ws://evil.example/"], None,
     "host 'evil.example' is not on backend_allow"),
    (["--backend-allow", "10.0.0.0/33"], None, "backend_allow: '10.0.0.0/33'"),
])
def test_bad_input_exits_2_with_one_line(
    argv: list[str], config: str | None, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if config is not None:
        path = tmp_path / "bad.toml"
        path.write_text(config)
        argv = [*argv, "--config", str(path)]
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err


def test_unreadable_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", "/no/such/wspipe.toml"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_every_serve_flag_is_documented() -> None:
    cli_md = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    serve_help = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(serve_help):
        build_parser().parse_args(["serve", "--help"])
    flags = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", serve_help.getvalue())))
    assert len(flags) > 20
    missing = [f for f in flags if f != "--help" and f"`{f}" not in cli_md]
    assert missing == []


def test_plugins_lists_loaded_plugins_with_their_hooks_in_call_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--plugin", "weighted", "--no-entrypoints"]) == 0
    out = capsys.readouterr().out.splitlines()
    loaded = out[1:out.index("installed (entry-point group 'wspipe'):")]
    names = [line.split()[0] for line in loaded]
    # The user's plugin is called before the built-in strategy it overrides.
    assert names.index("weighted:Weighted") < names.index("wspipe.strategy")
    assert any(line.split() == ["wspipe.strategy", "wspipe_select_backend"] for line in loaded)
    assert any(line.split()[0] == "jwt" for line in out[len(loaded) + 2:])


def test_plugins_with_a_plugin_that_fails_to_import_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--plugin", "no_such_module_here"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_module_here" in err


def test_config_file_plugins_list_loads_plugins(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text('plugins = ["weighted", "origin"]\n')
    opts = options(["--config", str(path)])
    assert opts.plugin_modules == ("weighted", "origin")


def test_config_file_plugins_table_loads_and_configures(tmp_path: Path) -> None:
    path = tmp_path / "wspipe.toml"
    path.write_text('[plugins]\nload = ["token"]\n[plugins.token]\ntokens = ["s3cret"]\n')
    opts = options(["--config", str(path), "--plugin", "weighted"])
    assert set(opts.plugin_modules) == {"weighted"}  # a flag replaces the file's list
    assert opts.config.plugin_settings == {"token": {"tokens": ["s3cret"]}}
    opts = options(["--config", str(path)])
    assert opts.plugin_modules == ("token",)


def test_trio_requested_but_not_installed_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trio" else real(name, *a))
    assert main(["demo", "--async-lib", "trio"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'wspipe[trio]'" in err


def test_link_racing_subprotocol_and_pending_flags_reach_the_core() -> None:
    opts = options(["--link-timeout", "1500ms", "--race-after", "0", "--subprotocol", "chat.v2",
                    "--subprotocol", "chat.v1", "--max-pending-per-peer", "5",
                    "--max-pending-handshakes", "50", "--buffer-limit", "1MiB"])
    cfg = opts.config
    assert (cfg.link_timeout, cfg.race_after) == (1.5, 0.0)
    assert cfg.subprotocols == ("chat.v2", "chat.v1")
    assert (cfg.max_pending_per_peer, cfg.max_pending_handshakes) == (5, 50)
    assert cfg.max_message_size == 1024 * 1024  # follows the smaller buffer limit
    assert options([]).config.subprotocols is None  # default: the backend chooses


def test_resume_window_comes_from_the_flag_or_the_file(tmp_path: Path) -> None:
    assert options([]).config.resume_window == 30.0
    assert options(["--resume-window", "2m"]).config.resume_window == 120.0
    path = tmp_path / "wspipe.toml"
    path.write_text('resume_window = "0"\n')
    assert options(["--config", str(path)]).config.resume_window == 0.0
