"""Structured logs: pipe context on every pipe line, JSON or text, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import anyio
import pytest
from test_admin import TOKEN, admin_client, make_harness

from wspipe_anyio.logfmt import redact, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_about_a_pipe_carry_pipe_client_and_backend(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("debug", "json", stream=stream)
    h, _ = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client("/0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11")
    h.backends["ws://b1:80/"].kill()
    client.close_ws()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about_pipe = [line for line in lines if line["msg"].startswith("pipe p1 ")]
    assert len(about_pipe) >= 4  # accepted, linked, interrupted, resumed, closed...
    for line in about_pipe:
        assert line["pipe"] == "p1"
        assert line["client_id"] == "0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11"
        assert line["backend"] in ("b1", "b2", "-")
        assert line["ts"].endswith("+00:00") and line["level"] and line["logger"]
    assert any("interrupted" in line["msg"] and line["backend"] == "b1" for line in about_pipe)
    assert any("resumed on b2" in line["msg"] for line in about_pipe)


def test_text_lines_carry_the_context_in_the_message(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream)
    h, _ = make_harness("ws://b1:80/")
    h.client("/0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11")
    line = next(line for line in stream.getvalue().splitlines() if "pipe p1" in line)
    assert "INFO wspipe: pipe p1 client 0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11 backend" in line


@pytest.mark.anyio
async def test_secrets_never_reach_the_log(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("debug", "json", secrets=[TOKEN], stream=stream)
    h, control = make_harness("ws://b1:80/")
    h.client(headers=[("authorization", "Bearer client-secret"), ("cookie", "sid=cookie-secret")])
    logging.getLogger("wspipe.test").info("request headers %r",
                                          [("authorization", "Bearer client-secret")])
    logging.getLogger("wspipe.test").warning("token was %s", TOKEN)
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            for token in (TOKEN, TOKEN + "x", "wrong"):
                await http.get("/backends", headers={"Authorization": f"Bearer {token}"})
            await http.post("/backends", json={"url": "ws://b2:80/?token=url-secret"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
            await http.get("/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    text = stream.getvalue()
    assert "-> 403: invalid token" in text and "-> 404" in text
    for secret in (TOKEN, "client-secret", "cookie-secret", "url-secret"):
        assert secret not in text
    assert "?token=***" in text


def test_redact() -> None:
    assert redact("Authorization: Bearer abc") == "Authorization: ***"
    assert redact("sent Bearer abc.def-1 to x") == "sent Bearer *** to x"
    assert redact("ws://h/p?room=1&access_token=abc&x=2") == "ws://h/p?room=1&access_token=***&x=2"
    assert redact("admin token is hunter2", ["hunter2"]) == "admin token is ***"
    assert redact("backend b1 registered: ws://127.0.0.1:9000/") == (
        "backend b1 registered: ws://127.0.0.1:9000/")

