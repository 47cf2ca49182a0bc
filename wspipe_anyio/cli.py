"""The ``wspipe`` command: ``wspipe serve`` runs the proxy, ``wspipe demo`` shows failover.

Every ``serve`` flag has a key of the same name (``-`` or ``_``) in the TOML file
given with ``--config``; flags override the file. Keys that are not flags:
any other :class:`wspipe_core.ProxyConfig` field (``subprotocols``,
``forward_headers``, ``interruption_codes``, ...), and ``[plugins.NAME]`` tables
(settings passed to plugins). Flag → key names that differ:
``--backend`` → ``backends``, ``--plugin`` → ``plugin_modules``,
``--no-entrypoints`` → ``load_entrypoints = false``.

Sizes accept units (``5MiB``, ``512KiB``, ``1GB``); times are seconds and accept
``500ms``, ``2s``, ``1m``. Invalid flags or configuration: one line on stderr,
exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import anyio

from wspipe_core import BackendError, ConfigError, Proxy, ProxyConfig, make_plugin_manager
from wspipe_core.hooks import available_plugins, describe_plugins

from . import settings as settings_mod
from . import tls
from .admin import (
    ADMIN_DEFAULTS,
    ADMIN_KEYS,
    AdminConfigError,
    AdminOptions,
    add_admin_flags,
    admin_options,
    open_admin,
)
from .admin.console import installed_version
from .admin_cli import ADMIN_COMMANDS, add_admin_subcommands, run_admin_command
from .chaos import ChaosUsageError, add_chaos_flags, chaos_command
from .fleet_cli import FLEET_DEFAULTS, FLEET_KEYS, FleetOptions, add_fleet_flags, fleet_options
from .logfmt import setup_logging
from .reload import Loaded, Reloader, ReloadFailed
from .server import Address, ProxyServer
from .speedups import tune_malloc
from .units import parse_address, parse_duration, parse_size

log = logging.getLogger("wspipe")

#: ProxyConfig fields that are byte sizes and durations (accept units).
SIZE_KEYS = frozenset({"buffer_limit", "memory_budget", "max_message_size", "max_header_size",
                       "write_high_water", "write_low_water"})
DURATION_KEYS = frozenset({"handshake_timeout", "link_timeout", "race_after", "resume_window",
                           "confirm_interval",
                           "ping_interval", "ping_timeout",
                           "max_interruption", "close_timeout", "eject_base", "eject_max",
                           "backoff_base", "backoff_max",
                           "health_check_interval", "health_check_timeout",
                           "lease_ttl", "store_timeout", "discovery_interval",
                           "shutdown_grace", "connect_timeout", "close_linger"})
#: Keys of the driver (everything else goes to ProxyConfig).
DRIVER_KEYS = frozenset({"listen", "async_lib", "plugin_modules", "load_entrypoints",
                         "log_level", "log_format", "certfile", "keyfile", "cafile",
                         "shutdown_grace", "connect_timeout", "close_linger"}
                        ) | ADMIN_KEYS | FLEET_KEYS
DRIVER_DEFAULTS: dict[str, Any] = {**ADMIN_DEFAULTS,
    "listen": ["127.0.0.1:8080"], "async_lib": "asyncio", "plugin_modules": [],
    "load_entrypoints": True, "log_level": "info", "log_format": "text", "certfile": None,
    "keyfile": None, "cafile": None, "shutdown_grace": 10.0, "connect_timeout": None,
    "close_linger": 2.0, **FLEET_DEFAULTS,
}
EXIT_USAGE = 2


class UsageFailure(Exception):
    """A flag, config file or value is invalid; exit 2 with this message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageFailure(message)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wspipe`` command."""
    parser = _Parser(prog="wspipe", description="Interruption-resistant WebSocket proxy.")
    parser.add_argument("--version", action="version",
                        version=f"wspipe {installed_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the proxy",
                           description="Run the proxy until SIGTERM or SIGINT.")
    add = serve.add_argument
    add("--config", metavar="FILE", help="TOML configuration file; flags override it")
    add("--listen", action="append", metavar="HOST:PORT",
        help="client listen address, repeatable (default 127.0.0.1:8080; IPv6 as [::1]:8080)")
    add("--backend", dest="backends", action="append", metavar="URL",
        help="backend ws:// or wss:// URL, repeatable")
    add("--async-lib", choices=("asyncio", "trio"),
        help="event loop (default asyncio, with uvloop when installed)")
    add("--strategy", help="backend selection: least_connections, round_robin, "
        "consistent_hash, exclusive, weighted")
    add("--plugin", dest="plugin_modules", action="append", metavar="MODULE",
        help="import and register a plugin module, repeatable")
    add("--no-entrypoints", dest="load_entrypoints", action="store_const", const=False,
        help="do not load plugins from the 'wspipe' entry-point group")
    add("--buffer-limit", type=_size, metavar="SIZE", help="per-pipe buffer limit (5MiB)")
    add("--memory-budget", type=_size, metavar="SIZE", help="buffer limit over all pipes")
    add("--max-message-size", type=_size, metavar="SIZE", help="largest message relayed")
    add("--max-connections", type=int, metavar="N", help="client connections before 503")
    add("--max-interruption", type=_duration, metavar="SECONDS",
        help="longest time without a link before the client gets 1013")
    add("--ping-interval", type=_duration, metavar="SECONDS", help="keepalive ping interval")
    add("--ping-timeout", type=_duration, metavar="SECONDS", help="pong wait before a link is dead")
    add("--handshake-timeout", type=_duration, metavar="SECONDS",
        help="time a client has to complete its upgrade request (10)")
    add("--delivery", choices=("at-most-once", "at-least-once", "acked"),
        help="what a pipe promises for client messages across an interruption "
             "(at-most-once)")
    add("--link-timeout", type=_duration, metavar="SECONDS",
        help="time a link has to connect to its backend and finish its handshake (3)")
    add("--race-after", type=_duration, metavar="SECONDS",
        help="dial a second backend when a link is not open after this long (0.5; 0: never)")
    add("--resume-window", type=_duration, metavar="SECONDS",
        help="how long a client that vanished without a Close may come back to its session "
             "(30; 0: never)")
    add("--subprotocol", dest="subprotocols", action="append", metavar="NAME",
        help="a subprotocol clients may ask for, repeatable (default: any, the backend "
             "chooses)")
    add("--backend-allow", dest="backend_allow", action="append", metavar="HOST|CIDR",
        help="a host name (*.domain for names below it), address or network backend URLs "
             "may point at, repeatable (default: any)")
    add("--max-pending-per-peer", type=int, metavar="N",
        help="upgrade requests in progress from one address before its oldest gets 408 (64)")
    add("--max-pending-handshakes", type=int, metavar="N",
        help="upgrade requests in progress in all before the oldest gets 408 (1024)")
    add("--migrate-rate", type=float, metavar="PIPES_PER_S",
        help="pipes moved per second, over the whole proxy, by a drain with migrate (50)")
    add("--health-check-interval", type=_duration, metavar="SECONDS",
        help="probe every backend with a WebSocket handshake this often (0: off, the "
             "default); a pass ends an ejection, failures count like failed links")
    add("--health-check-timeout", type=_duration, metavar="SECONDS",
        help="time a health check has to be answered (2)")
    add("--health-check-path", metavar="PATH",
        help="request target of the health checks (default: the backend URL's own)")
    add("--health-check-status", type=int, metavar="STATUS",
        help="HTTP status of a healthy answer (101: the upgrade is accepted)")
    add("--shutdown-grace", type=_duration, metavar="SECONDS",
        help="longest wait for clients to close on SIGTERM (10)")
    add("--connect-timeout", type=_duration, metavar="SECONDS",
        help="TCP/TLS connect timeout to backends (default: link timeout)")
    add("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    add("--log-format", choices=("text", "json"), help="default text")
    add("--certfile", metavar="PEM", help="serve clients over TLS with this certificate chain")
    add("--keyfile", metavar="PEM", help="private key of --certfile (if not in it)")
    add("--cafile", metavar="PEM", help="CAs trusted for wss:// backends (default: system)")
    add_admin_flags(serve)
    add_fleet_flags(serve)
    chaos = sub.add_parser("chaos", parents=[serve], add_help=False,
                           help="check the delivery mode against injected faults",
                           description="Run the proxy with these settings, managed echo "
                           "backends and clients, inject seeded faults, print what was "
                           "lost, duplicated and reordered; exit 1 if the delivery mode's "
                           "promise was broken.")
    add_chaos_flags(chaos)
    demo = sub.add_parser("demo", help="show a pipe surviving two backend restarts",
                          description="Run a proxy, two echo backends and a client in-process.")
    demo.add_argument("--async-lib", choices=("asyncio", "trio"), default="asyncio")
    demo.add_argument("--messages", type=int, default=120, help="messages to send (120)")
    plugins = sub.add_parser("plugins", help="list the plugins serve would load",
                             description="List the loaded plugins, in call order, with the "
                             "hooks each implements, then the installed ones.")
    plugins.add_argument("--config", metavar="FILE", help="TOML configuration file")
    plugins.add_argument("--strategy", help="built-in strategy name")
    plugins.add_argument("--plugin", dest="plugin_modules", action="append", metavar="MODULE",
                         help="a plugin module or entry-point name, repeatable")
    plugins.add_argument("--no-entrypoints", dest="load_entrypoints", action="store_const",
                         const=False, help="do not load entry-point plugins")
    config = sub.add_parser(
        "config", help="print the effective configuration serve would run with",
        description="Merge flags > $WSPIPE_* > config file > defaults exactly as serve "
        "does and print the result as TOML, each key with its source, secrets masked. "
        "Takes every serve flag.")
    config.add_argument("--show", action="store_true", required=True,
                        help="print the merged effective configuration")
    add_admin_subcommands(sub)
    return parser


# Configuration.


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file into a flat dict of ``_`` keys (:func:`.settings.read_file`).

    :raises UsageFailure: Unreadable or invalid file.
    """
    try:
        return settings_mod.read_file(path)
    except settings_mod.SettingsError as exc:
        raise UsageFailure(str(exc)) from None


#: The keys ``serve`` knows, for the environment and ``config --show``.
SCHEMA = settings_mod.Schema(driver_defaults=DRIVER_DEFAULTS, sizes=SIZE_KEYS,
                             durations=DURATION_KEYS)


def merge_layers(args: argparse.Namespace, environ: Mapping[str, str] | None = None
                 ) -> settings_mod.Merged:
    """Flags over ``$WSPIPE_*`` over the config file, with the source of each key
    (:mod:`.settings`)."""
    flags = {key: value for key, value in vars(args).items()
             if key not in ("command", "config", "show") and value is not None}
    try:
        return settings_mod.merge(flags, SCHEMA, config_path=args.config, environ=environ,
                                  warn=settings_mod.warn_stderr, flag_names=_flag_names())
    except settings_mod.SettingsError as exc:
        raise UsageFailure(str(exc)) from None


def _flag_names() -> dict[str, str]:
    """``serve``'s flag of each key (``backends`` → ``--backend``)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.option_strings[0]
            for action in sub.choices["serve"]._actions if action.option_strings}


def merge_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The merged settings (flags > environment > file), with units parsed."""
    return merge_layers(args).values


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """Everything ``wspipe serve`` needs, validated."""

    config: ProxyConfig
    listen: tuple[Address, ...]
    async_lib: str
    plugin_modules: tuple[str, ...]
    load_entrypoints: bool
    log_level: str
    log_format: str
    ssl_context: ssl.SSLContext | None
    backend_ssl_context: ssl.SSLContext | None
    shutdown_grace: float
    connect_timeout: float | None
    close_linger: float
    admin: AdminOptions | None = None
    fleet: FleetOptions | None = None


def build_options(settings: dict[str, Any],
                  merged: settings_mod.Merged | None = None) -> ServeOptions:
    """Validate merged settings into :class:`ServeOptions`.

    :raises UsageFailure: Any invalid value, with one line saying which (and, given
        ``merged``, where it came from: ``(from $WSPIPE_MAX_CONNECTIONS)``).
    """
    try:
        return _build_options(settings)
    except UsageFailure as exc:
        raise UsageFailure(merged.blame(str(exc)) if merged else str(exc)) from None


def _build_options(settings: dict[str, Any]) -> ServeOptions:
    driver = {**DRIVER_DEFAULTS, **{k: v for k, v in settings.items() if k in DRIVER_KEYS}}
    core = {k: v for k, v in settings.items() if k not in DRIVER_KEYS}
    try:
        config = ProxyConfig.from_mapping(core)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise UsageFailure(f"invalid configuration: {exc}") from None
    if not isinstance(driver["listen"], list | tuple) or not all(
            isinstance(item, str) for item in driver["listen"]):
        raise UsageFailure(f"listen must be HOST:PORT or a list of them, "
                           f"got {driver['listen']!r}")
    try:
        listen = tuple(parse_address(item) for item in driver["listen"])
    except ValueError as exc:
        raise UsageFailure(f"listen: {exc}") from None
    if not listen:
        raise UsageFailure("listen: at least one address is needed")
    if driver["async_lib"] not in ("asyncio", "trio"):
        raise UsageFailure(f"async_lib must be asyncio or trio, got {driver['async_lib']!r}")
    if str(driver["log_level"]).lower() not in ("debug", "info", "warning", "error"):
        raise UsageFailure(f"invalid log_level {driver['log_level']!r}")
    if driver["log_format"] not in ("text", "json"):
        raise UsageFailure(f"log_format must be text or json, got {driver['log_format']!r}")
    server_ctx = backend_ctx = None
    try:
        if driver["certfile"]:
            server_ctx = tls.server_context(driver["certfile"], driver["keyfile"])
        elif driver["keyfile"]:
            raise UsageFailure("keyfile given without certfile")
        if driver["cafile"]:
            backend_ctx = tls.backend_context(driver["cafile"])
    except (OSError, ssl.SSLError) as exc:
        raise UsageFailure(f"TLS setup failed: {exc}") from None
    for key in ("shutdown_grace", "close_linger"):
        if not isinstance(driver[key], float) or driver[key] < 0:
            raise UsageFailure(f"{key} must be a number of seconds >= 0")
    if driver["connect_timeout"] is not None and driver["connect_timeout"] <= 0:
        raise UsageFailure("connect_timeout must be > 0")
    try:
        admin = admin_options(driver)
    except AdminConfigError as exc:
        raise UsageFailure(str(exc)) from None
    try:
        fleet = fleet_options(driver, config)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if fleet is not None and fleet.workers > 1 and admin is not None and admin.token_dir:
        raise UsageFailure("--workers with --admin needs a token (--admin-token-file, "
                           "$WSPIPE_ADMIN_TOKEN or --admin-token): every worker answers "
                           "the admin API with the same one")
    return ServeOptions(
        config=config, listen=listen, async_lib=driver["async_lib"],
        plugin_modules=tuple(str(m) for m in driver["plugin_modules"]),
        load_entrypoints=bool(driver["load_entrypoints"]),
        log_level=str(driver["log_level"]).upper(), log_format=driver["log_format"],
        ssl_context=server_ctx, backend_ssl_context=backend_ctx,
        shutdown_grace=driver["shutdown_grace"], connect_timeout=driver["connect_timeout"],
        close_linger=driver["close_linger"], admin=admin, fleet=fleet,
    )


# Running.


def run_async(func: Callable[[], Any], async_lib: str) -> Any:
    """Run ``func`` on asyncio (uvloop when installed) or trio."""
    options: dict[str, Any] = {}
    if async_lib == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageFailure("trio is not installed: pip install 'wspipe[trio]'")
    if async_lib == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        options["use_uvloop"] = True
    return anyio.run(func, backend=async_lib, backend_options=options)


async def serve_until_signalled(server: ProxyServer, admin: AdminOptions | None = None,
                                reloader: Reloader | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; a second signal cancels.

    SIGHUP reloads the configuration with ``reloader`` (:mod:`.reload`); without one
    it is logged and ignored (it never stops the proxy).
    """
    reload_json = (lambda: reloader.reload().json()) if reloader is not None else None
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with server, open_admin(server, admin, reload_json,
                                       reuse_port=server.reuse_port) as admin_server, \
                anyio.create_task_group() as tg:
            if reloader is not None:
                reloader.admin = admin_server

            async def watch() -> None:
                shutting_down = False
                async for signum in signals:  # ends: the second SIGTERM/SIGINT returns
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        if reloader is None:
                            log.warning("SIGHUP: no configuration to reload; ignored")
                        else:
                            log.info("SIGHUP: reloading the configuration")
                            with contextlib.suppress(ReloadFailed):  # logged, nothing changed
                                reloader.reload()
                        continue
                    if shutting_down:
                        log.warning("%s again: stopping now", name)
                        tg.cancel_scope.cancel()
                        return
                    log.info("%s: shutting down", name)
                    shutting_down = True
                    tg.start_soon(server.shutdown)

            tg.start_soon(watch)
            log.info("ready")
            await server.serve()
            tg.cancel_scope.cancel()


def loaded(options: ServeOptions, merged: settings_mod.Merged) -> Loaded:
    """What a reload compares: the core's config, the configured admin token, driver keys."""
    driver = {**DRIVER_DEFAULTS, **{k: v for k, v in merged.values.items() if k in DRIVER_KEYS}}
    token = options.admin.token if options.admin and not options.admin.generated else None
    return Loaded(options.config, token, driver)


def reload_settings(args: argparse.Namespace) -> Loaded:
    """Read the configuration again, as ``serve`` did at start-up (same flags).

    :raises UsageFailure: Anything invalid.
    """
    merged = merge_layers(args)
    return loaded(build_options(merged.values, merged), merged)


def cmd_serve(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """``wspipe serve``."""
    merged = merge_layers(args)
    options = build_options(merged.values, merged)
    secrets = [options.admin.token] if options.admin and options.admin.token else []
    fleet = options.fleet
    if fleet is not None and fleet.address.password:
        secrets.append(fleet.address.password)
    setup_logging(options.log_level, options.log_format, secrets=secrets)
    if fleet is not None and fleet.workers > 1 and not fleet.worker:
        from .workers import run_workers

        return run_workers(fleet.workers, argv if argv is not None else sys.argv[1:])
    tune_malloc()
    try:
        server = ProxyServer(
            options.config, listen=options.listen, plugins=options.plugin_modules,
            load_entrypoints=options.load_entrypoints, ssl_context=options.ssl_context,
            backend_ssl_context=options.backend_ssl_context,
            connect_timeout=options.connect_timeout, close_linger=options.close_linger,
            shutdown_grace=options.shutdown_grace,
            store=fleet.store(options.config) if fleet is not None else None,
            instance=fleet.instance if fleet is not None else None,
            reuse_port=fleet is not None and fleet.worker)
    except (ConfigError, BackendError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    reloader = Reloader(server, lambda: reload_settings(args), loaded(options, merged),
                        on_result=lambda result: server.metrics.reloads.labels(result).inc())
    try:
        run_async(lambda: serve_until_signalled(server, options.admin, reloader),
                  options.async_lib)
    except OSError as exc:
        print(f"wspipe: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """``wspipe plugins``: what ``serve`` with the same settings would load."""
    options = build_options(merge_settings(args))
    try:
        pm = make_plugin_manager(options.config, plugins=options.plugin_modules,
                                 load_entrypoints=options.load_entrypoints)
        Proxy(options.config, pm=pm)  # runs wspipe_configure, which may register more
    except (ConfigError, BackendError) as exc:
        raise UsageFailure(str(exc)) from None
    print("loaded plugins, first called first:")
    for name, hooks in describe_plugins(pm):
        print(f"  {name:<40} {', '.join(hooks) or '-'}")
    print("installed (entry-point group 'wspipe'):")
    for name, target, automatic in available_plugins():
        how = "loaded at start-up" if automatic else f"load with --plugin {name}"
        print(f"  {name:<20} {target:<50} {how}")
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    """``wspipe chaos``."""
    try:
        return chaos_command(merge_settings(args), build_options)
    except ChaosUsageError as exc:
        raise UsageFailure(str(exc)) from None


def cmd_config(serve_flags: Sequence[str]) -> int:
    """``wspipe config --show [serve flags]``: the effective configuration, masked."""
    serve_args = build_parser().parse_args(["serve", *serve_flags])
    merged = merge_layers(serve_args)
    options = build_options(merged.values, merged)  # validated exactly as serve would
    driver = {**DRIVER_DEFAULTS,
              **{k: v for k, v in merged.values.items() if k in DRIVER_KEYS}}
    print(settings_mod.render(options.config, driver, merged), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``wspipe demo``."""
    from .demo import run_demo

    setup_logging("ERROR", "text")  # the demo prints the pipe events itself
    ok: bool = run_async(lambda: run_demo(messages=args.messages), args.async_lib)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wspipe`` console script and ``python -m wspipe_anyio``."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if argv[:1] == ["config"]:  # config --show takes every serve flag
            args, serve_flags = build_parser().parse_known_args(argv)
            return cmd_config(serve_flags)
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            return cmd_serve(args, argv)
        if args.command in ADMIN_COMMANDS:
            return run_admin_command(args)
        if args.command == "plugins":
            return cmd_plugins(args)
        if args.command == "chaos":
            return cmd_chaos(args)
        return cmd_demo(args)
    except UsageFailure as exc:
        print(f"wspipe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
