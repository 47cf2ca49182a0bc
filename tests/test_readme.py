"""The README tells the truth: its library example runs, its install extras exist, its
commands parse, and what it says CI runs is what .ci/run runs."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve

from wspipe_anyio import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_library_example_runs_serves_and_shuts_down_on_sigterm() -> None:
    (example,) = code_blocks(section("In your own program"), "python")
    first, second, listen = free_port(), free_port(), free_port()
    code = (example.replace("9001", str(first)).replace("9002", str(second))
            .replace("8080", str(listen)))
    servers = []
    for port in (first, second):
        server = serve(lambda ws: [ws.send(m) for m in ws], "127.0.0.1", port,
                       compression=None)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded by the deadline: until the example listens
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.05)
        with connect(f"ws://127.0.0.1:{listen}/{uuid.uuid4()}", open_timeout=5,
                     proxy=None, compression=None) as ws:
            ws.send("through the example")
            assert ws.recv(timeout=5) == "through the example"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1001  # shutdown() closed the client
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for server in servers:
            server.shutdown()


def test_install_extras_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = re.findall(r"pip install 'wspipe\[(\w+)\]'", section("Install"))
    assert named and set(named) <= set(extras)
    assert "pip install wspipe " in section("Install")


def test_the_serve_and_config_commands_parse() -> None:
    (command,) = code_blocks(section("Serve"), "sh")
    argv = command.replace("\\\n", " ").split()[1:]
    options = cli.build_options(cli.merge_settings(cli.build_parser().parse_args(argv)))
    assert options.listen == (("127.0.0.1", 8080),)
    assert len(options.config.backends) == 2


def test_what_ci_runs_is_what_the_readme_says() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    claims = section("Develop")
    for command in ("ruff check .", "mypy --strict wspipe_core wspipe_anyio",
                    "hadolint Dockerfile", "python -m build --sdist --wheel",
                    "wspipe\" --version", "wspipe\" demo", "python -m pytest -q",
                    "docker info"):
        assert command in ci, command
    for claim in ("ruff", "mypy --strict", "hadolint", "sdist and wheel",
                  "wspipe --version", "wspipe demo", "python -m pytest -q"):
        assert claim in claims, claim
