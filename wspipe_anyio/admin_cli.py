"""The admin commands of ``wspipe``: a command-line client of the admin API.

::

    wspipe backends list
    wspipe backends add ws://10.0.0.7:9000/ [--weight 2]
    wspipe backends drain b3 [--migrate] [--wait [--wait-timeout SECONDS]]
    wspipe pipes list
    wspipe fleet
    wspipe reload

Each takes ``--admin URL`` (``http://HOST:PORT`` or ``HOST:PORT``; default
``$WSPIPE_ADMIN``, else ``127.0.0.1:9090``), ``--admin-token TOKEN`` or
``--admin-token-file FILE`` (default ``$WSPIPE_ADMIN_TOKEN``; prefer the variable
or the file: a flag shows in ``ps``) and ``--json`` (print the API's JSON instead
of a table). With none of them and a loopback admin address, the token the proxy
generated for that port is read from its private file
(:mod:`wspipe_anyio.admin.tokens`). Exit status: 0 done, 1 the API refused or
could not be reached (one line on stderr saying why), 2 usage, 3 ``drain --wait``
timed out (the drain goes on).

``drain --wait`` follows the drain until the backend has left the pool, printing a
progress line at most every ``--progress-interval`` seconds (pipes left, moved,
rate, ETA) on stdout.

The ``wspipe`` CLI wires these in with :func:`add_admin_subcommands` and
:func:`run_admin_command`; ``python -m wspipe_anyio.admin_cli`` runs them alone.
Standard library only (``urllib``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .admin.http import is_loopback
from .admin.tokens import find_token, read_token_file

#: Default admin address when neither ``--admin`` nor ``$WSPIPE_ADMIN`` is given.
DEFAULT_ADMIN = "127.0.0.1:9090"
#: The top-level commands this module adds.
ADMIN_COMMANDS = frozenset({"backends", "pipes", "fleet", "reload"})
#: Seconds to wait for the admin API.
DEFAULT_TIMEOUT = 10.0
#: ``drain --wait``: longest wait for the backend to leave the pool, by default.
DEFAULT_WAIT_TIMEOUT = 300.0
#: ``drain --wait``: seconds between two looks at the backend, and between two lines.
POLL_INTERVAL = 0.2
DEFAULT_PROGRESS_INTERVAL = 1.0
#: Exit status of ``drain --wait`` when the backend is still in the pool at the timeout.
EXIT_TIMEOUT = 3


class AdminError(Exception):
    """The admin API answered with an error or could not be reached."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", metavar="URL",
                        help="admin API: http://HOST:PORT or HOST:PORT "
                             f"(default $WSPIPE_ADMIN or {DEFAULT_ADMIN})")
    parser.add_argument("--admin-token", metavar="TOKEN",
                        help="admin bearer token (default $WSPIPE_ADMIN_TOKEN, else the "
                             "token the proxy generated, for a loopback address)")
    parser.add_argument("--admin-token-file", metavar="FILE",
                        help="read the admin token from the first line of FILE")
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"request timeout ({DEFAULT_TIMEOUT:g})")


def add_admin_subcommands(subparsers: Any) -> None:
    """Add ``backends`` and ``pipes`` to a ``parser.add_subparsers(dest="command")``.

    The chosen action is in ``args.admin_action``; run it with :func:`run_admin_command`.
    """
    backends = subparsers.add_parser(
        "backends", help="list, add or drain backends (admin API client)",
        description="List, add or drain the proxy's backends through its admin API.")
    actions = backends.add_subparsers(dest="admin_action", required=True)
    _common(actions.add_parser("list", help="list the backends and their state"))
    add = actions.add_parser("add", help="register a backend")
    add.add_argument("url", help="ws:// or wss:// URL")
    add.add_argument("--weight", type=float, default=1.0, help="relative weight (1)")
    _common(add)
    drain = actions.add_parser(
        "drain", help="drain a backend: no new pipes; it leaves the pool once empty")
    drain.add_argument("id", help="backend id (see 'backends list')")
    drain.add_argument("--migrate", action="store_true",
                       help="move its pipes to other backends now, at the proxy's migrate rate")
    drain.add_argument("--wait", action="store_true",
                       help="print progress until the backend has left the pool (exit 0), "
                            "or exit 3 at --wait-timeout")
    drain.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
                       metavar="SECONDS",
                       help=f"longest --wait ({DEFAULT_WAIT_TIMEOUT:g})")
    drain.add_argument("--progress-interval", type=float, default=DEFAULT_PROGRESS_INTERVAL,
                       metavar="SECONDS",
                       help=f"seconds between progress lines ({DEFAULT_PROGRESS_INTERVAL:g})")
    _common(drain)
    pipes = subparsers.add_parser(
        "pipes", help="list pipes (admin API client)",
        description="List the proxy's live pipes through its admin API.")
    pipe_actions = pipes.add_subparsers(dest="admin_action", required=True)
    _common(pipe_actions.add_parser("list", help="list the live pipes"))
    fleet = subparsers.add_parser(
        "fleet", help="list the instances of the fleet (admin API client)",
        description="List the fleet's instances (any instance answers for all), their "
                    "pipes and health, through the admin API of one of them.")
    fleet.set_defaults(admin_action=None)
    _common(fleet)
    reload = subparsers.add_parser(
        "reload", help="make the proxy re-read its configuration (admin API client)",
        description="POST /reload: the proxy re-reads its configuration as SIGHUP does "
                    "and prints what it applied and what needs a restart; exit 1 if the "
                    "configuration cannot be applied (nothing changed).")
    reload.set_defaults(admin_action="")
    _common(reload)


def admin_base_url(value: str | None) -> str:
    """``http://host:port`` from ``--admin``/``$WSPIPE_ADMIN`` (``HOST:PORT`` or a URL)."""
    value = (value or os.environ.get("WSPIPE_ADMIN") or DEFAULT_ADMIN).strip()
    if "://" not in value:
        value = "http://" + value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"invalid admin address {value!r}: expected http://HOST:PORT or "
                         "HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def resolve_token(args: argparse.Namespace, base: str) -> tuple[str | None, str]:
    """The token to send, and where it came from (for error messages).

    ``--admin-token``, else ``--admin-token-file``, else ``$WSPIPE_ADMIN_TOKEN``, else
    (only for a loopback ``http://`` admin address, never sent elsewhere) the token
    file the proxy generated for that port.
    """
    if args.admin_token is not None:
        return args.admin_token, "--admin-token"
    token_file = getattr(args, "admin_token_file", None)
    if token_file is not None:
        try:
            token = read_token_file(Path(token_file))
        except OSError as exc:
            raise AdminError(f"cannot read admin token file {token_file}: "
                             f"{exc.strerror or exc}") from None
        if token is None:
            raise AdminError(f"admin token file {token_file} does not exist or is empty")
        return token, token_file
    if os.environ.get("WSPIPE_ADMIN_TOKEN"):
        return os.environ["WSPIPE_ADMIN_TOKEN"], "$WSPIPE_ADMIN_TOKEN"
    parts = urllib.parse.urlsplit(base)
    if parts.scheme != "http" or not parts.hostname or not is_loopback(parts.hostname):
        return None, "no token given"
    token, searched = find_token(parts.port or 80)
    if token is not None:
        return token, "the generated token file"
    places = ", ".join(str(p) for p in searched) or "no token directory"
    return None, f"no token given and no generated token file ({places})"


def request(base: str, method: str, path: str, *, token: str | None,
            body: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """One admin API call; the decoded JSON answer.

    :raises AdminError: HTTP error (with the API's ``detail``) or unreachable API.
    """
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        raise AdminError(f"{method} {path}: HTTP {exc.code}"
                         f"{': ' + detail if detail else ''}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the admin API at {base}: {reason}") from None
    except ValueError as exc:
        raise AdminError(f"{method} {path}: the answer is not JSON: {exc}") from None


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with an upper-case header."""
    cells = [[str(c).upper() for c in columns]]
    cells += [["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                          strict=True)).rstrip()
                     for line in cells)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def progress_line(info: dict[str, Any], elapsed: float) -> str:
    """One line of ``drain --wait``: pipes left, moved, rate and ETA of a draining backend."""
    left = info.get("pipes", 0)
    migration = info.get("migration")
    if not migration:
        return f"{info['id']}: {left} pipe(s) left (draining; no new pipes, waiting for them " \
               "to end)"
    moved = migration["moved"]
    rate = moved / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {left / rate:.1f}s" if rate > 0 else "ETA -"
    line = (f"{info['id']}: {left} pipe(s) left, {moved} of {migration['total']} moved, "
            f"{rate:.1f} pipes/s, {eta}")
    if migration.get("waiting"):
        line += " (waiting: no other backend is up)"
    return line


def wait_drained(call: Any, backend_id: str, *, timeout: float, progress_interval: float,
                 out: TextIO, pipes: int) -> tuple[int, dict[str, Any]]:
    """Follow a drain until the backend leaves the pool (0) or ``timeout`` passes (3).

    :param call: ``call(method, path)``: one admin API request (raises :class:`AdminError`).
    :param pipes: Pipes on the backend when the drain began (for the last line).
    :returns: The exit status and the backend as last seen.
    """
    path = f"/backends/{urllib.parse.quote(backend_id, safe='')}"
    started = time.monotonic()
    deadline = started + timeout
    printed_at = float("-inf")
    info: dict[str, Any] = {}
    # Bounded in time (the deadline) and so in count (one look per POLL_INTERVAL).
    for _ in range(int(timeout / POLL_INTERVAL) + 2):
        try:
            info = call("GET", path)
        except AdminError as exc:
            if ": HTTP 404" not in str(exc):
                raise
            total = time.monotonic() - started
            print(f"{backend_id}: empty, left the pool after {total:.1f}s (had {pipes} "
                  "pipe(s))", file=out, flush=True)
            return 0, info
        now = time.monotonic()
        if now - printed_at >= progress_interval:
            print(progress_line(info, now - started), file=out, flush=True)
            printed_at = now
        if now >= deadline:
            break
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - now)))
    return EXIT_TIMEOUT, info


def run_admin_command(args: argparse.Namespace, *, stdout: TextIO | None = None,
                      stderr: TextIO | None = None) -> int:
    """Run ``backends ...`` or ``pipes ...`` parsed by :func:`add_admin_subcommands`."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        base = admin_base_url(args.admin)
        token, source = resolve_token(args, base)

        def call(method: str, path: str, body: Any = None) -> Any:
            try:
                return request(base, method, path, token=token, body=body,
                               timeout=args.timeout)
            except AdminError as exc:
                if token is None and ": HTTP 401" in str(exc):
                    raise AdminError(f"{exc} ({source}; give --admin-token-file or "
                                     "$WSPIPE_ADMIN_TOKEN)") from None
                raise

        action = (args.command, args.admin_action)
        if action == ("backends", "list"):
            result = call("GET", "/backends")
            table = format_table(result, ["id", "url", "state", "pipes", "errors", "weight"])
        elif action == ("backends", "add"):
            result = call("POST", "/backends", {"url": args.url, "weight": args.weight})
            table = f"backend {result['id']} registered: {result['url']} (weight " \
                    f"{result['weight']:g})"
        elif action == ("backends", "drain"):
            migrate = "true" if args.migrate else "false"
            result = call("DELETE", f"/backends/{urllib.parse.quote(args.id, safe='')}"
                                    f"?migrate={migrate}")
            if result.get("removed") and result["pipes"]:
                table = (f"backend {result['id']} removed from the pool: its "
                         f"{result['pipes']} pipe(s) moved to other backends")
            elif result.get("removed"):
                table = f"backend {result['id']} had no pipes: removed from the pool"
            elif args.migrate:
                table = (f"backend {result['id']} draining: moving its {result['pipes']} "
                         f"pipe(s) to other backends at {result['migrate_rate']:g}/s")
            else:
                table = (f"backend {result['id']} draining: no new pipes; it leaves the pool "
                         f"when its {result['pipes']} pipe(s) end")
            if args.wait:
                print(json.dumps(result, indent=2) if args.json else table, file=out,
                      flush=True)
                if result.get("removed"):
                    return 0
                code, last = wait_drained(call, result["id"], timeout=args.wait_timeout,
                                          progress_interval=args.progress_interval, out=out,
                                          pipes=result["pipes"])
                if code == EXIT_TIMEOUT:
                    print(f"wspipe: error: backend {result['id']} still has "
                          f"{last.get('pipes', '?')} pipe(s) after {args.wait_timeout:g}s; "
                          "the drain goes on", file=err)
                return code
        elif action == ("fleet", None):
            result = call("GET", "/fleet")
            rows = [{**i, "backends_up": f"{i.get('backends', {}).get('up', '?')}/"
                                         f"{i.get('backends', {}).get('total', '?')}",
                     "listen": ",".join(i.get("listen", [])),
                     "me": "*" if i.get("instance") == result.get("instance") else ""}
                    for i in result.get("instances", [])]
            store = result.get("store") or "none (a single instance)"
            table = (f"store: {store}; {result.get('members', 1)} live instance(s)\n"
                     + format_table(rows, ["me", "instance", "host", "pid", "listen", "pipes",
                                           "connections", "backends_up", "store",
                                           "stopping"]))
        elif action == ("reload", ""):
            result = call("POST", "/reload", {})
            lines = [f"applied: {', '.join(result['applied']) or 'nothing'}"]
            lines += [f"added: {url}" for url in result["backends_added"]]
            lines += [f"draining (migrate): {url}" for url in result["backends_removed"]]
            lines += [f"needs a restart: {line}" for line in result["restart_required"]]
            table = "\n".join(lines)
        elif action == ("pipes", "list"):
            result = call("GET", "/pipes")
            now = time.time()
            rows = [{**p, "age": _age(p.get("age_seconds", now - p.get("since", now))),
                     "buffered": p.get("buffered_bytes"), "backend": p.get("backend_id")}
                    for p in result]
            table = format_table(rows, ["id", "client_id", "backend", "state", "buffered",
                                        "interruptions", "age"])
        else:
            print(f"wspipe: error: unknown admin command {' '.join(action)}", file=err)
            return 2
    except AdminError as exc:
        print(f"wspipe: error: {exc}", file=err)
        return 1
    print(json.dumps(result, indent=2) if args.json else table, file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wspipe_anyio.admin_cli backends list`` (the commands without ``serve``)."""
    parser = argparse.ArgumentParser(prog="wspipe", description="wspipe admin API client.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_admin_subcommands(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_admin_command(args)


if __name__ == "__main__":
    sys.exit(main())
