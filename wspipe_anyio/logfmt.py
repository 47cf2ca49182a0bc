"""Structured logs: text or JSON lines that carry pipe context, with secrets redacted.

Every line the core writes about a pipe carries ``pipe``, ``client_id`` and
``backend`` as record attributes (``extra=``); :class:`JSONFormatter` emits them as
fields and the text format shows them in the message. :class:`RedactingFilter`
masks secrets before any handler sees a record: the values it is given (the admin
token), bearer/basic credentials, ``Authorization``/``Cookie`` header values, and
the values of secret-looking query parameters in URLs (``?token=...``).

URLs that leave the process in structured answers are masked harder, by one
implementation: :func:`mask_url` (admin API answers: credentials, every query value
and the fragment masked), :func:`mask_urls` (every URL inside a free text, such as an
error detail) and :func:`url_label` (metric labels: no credentials, query or fragment).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

#: Record attributes copied into JSON lines when present.
CONTEXT_FIELDS = ("pipe", "client_id", "backend")
REDACTED = "***"

_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_HEADERS = re.compile(
    r"(?i)(['\"]?(?:authorization|proxy-authorization|cookie|set-cookie|x-api-key)['\"]?"
    r"\s*[:=,]\s*['\"]?)([^'\"\r\n]+)")
_QUERY = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|password|passwd|auth|sig|"
    r"signature)=)[^&\s'\"]+")


_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+")


def _split_url(url: str) -> tuple[str, str, str, str, str]:
    """``(scheme://, host[:port], path, query, fragment)`` without userinfo; never raises."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, rest = (rest[:end], rest[end:]) if sep else ("", rest)
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    return scheme, authority, path, query, fragment


def mask_url(url: str) -> str:
    """``url`` with its credentials, every query value and its fragment masked.

    ``ws://u:p@10.0.0.7:9000/path?token=abc&room=1`` becomes
    ``ws://***@10.0.0.7:9000/path?token=***&room=***``: the shape stays readable, no
    value does. A query item without ``=`` is masked whole.
    """
    scheme, authority, path, query, fragment = _split_url(url)
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    out = scheme + authority + path
    if query:
        items = [f"{item.partition('=')[0]}={REDACTED}" if "=" in item else REDACTED
                 for item in query.split("&") if item]
        out += "?" + "&".join(items)
    if fragment:
        out += "#" + REDACTED
    return out


def mask_urls(text: str) -> str:
    """``text`` with every ``scheme://...`` URL in it passed through :func:`mask_url`."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def url_label(url: str) -> str:
    """``url`` as a metric label: scheme, host, port and path only.

    ``ws://u:p@10.0.0.7:9000/path?token=abc`` becomes ``ws://10.0.0.7:9000/path``.
    """
    scheme, authority, path, _, _ = _split_url(url)
    return scheme + authority.rpartition("@")[2] + path


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials, secret header and query values and ``secrets`` masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIALS.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _HEADERS.sub(lambda m: m.group(1) + REDACTED, text)
    return _QUERY.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Mask secrets in every record's message (and exception text) before it is emitted.

    :param secrets: Exact values to mask wherever they appear (e.g. the admin token).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def add_secret(self, secret: str) -> None:
        """Mask ``secret`` from now on."""
        if secret and secret not in self.secrets:
            self.secrets += (secret,)

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the message by its redacted text; always keep the record."""
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``msg``,
    the pipe context fields when present (``pipe``, ``client_id``, ``backend``) and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as a JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, fmt: str, *, secrets: Iterable[str] = (),
                  stream: TextIO | None = None) -> RedactingFilter:
    """Log to ``stream`` (stderr) at ``level`` in ``text`` or ``json``, secrets redacted.

    :returns: The filter, to register secrets learnt later (``add_secret``).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return redactor
