"""The ``--store`` URL parser: redis://, rediss:// and redis+sentinel://, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wspipe_anyio.store import StoreAddress, StoreURLError, redact


def test_one_server() -> None:
    address = StoreAddress.parse("rediss://user:p%40ss@cache.example:6380/3")
    assert (address.host, address.port, address.db, address.tls) == ("cache.example", 6380, 3,
                                                                     True)
    assert (address.username, address.password) == ("user", "p@ss")
    assert address.sentinels == () and address.service is None
    assert StoreAddress.parse("redis://[::1]/").port == 6379
    assert StoreAddress.parse("redis://h", password="from-env").password == "from-env"
    assert "p@ss" not in repr(address)


def test_sentinels() -> None:
    address = StoreAddress.parse("redis+sentinel://:pw@s1:26380,[::1],s3/mymaster/2")
    assert address.sentinels == (("s1", 26380), ("::1", 26379), ("s3", 26379))
    assert (address.service, address.db, address.tls, address.password) == (
        "mymaster", 2, False, "pw")
    assert StoreAddress.parse("redis+sentinel://s1/svc").db == 0
    assert StoreAddress.parse("redis+sentinel://s1/svc/", password="env").password == "env"


@pytest.mark.parametrize(("url", "says"), [
    ("http://h/0", "must be redis://, rediss:// or redis+sentinel://"),
    ("redis+sentinels://h/svc", "must be redis://"),
    ("redis://:secret@/0", "no host"),
    ("redis://h:port/0", "numeric port"),
    ("redis://h:70000/0", "numeric port"),
    ("redis://h/zero", "numeric port and /DB"),
    ("redis://h1,h2/0", "several hosts"),
    ("redis+sentinel://:secret@s1,s2", "/SERVICE[/DB]"),
    ("redis+sentinel://s1/", "/SERVICE[/DB]"),
    ("redis+sentinel://s1/svc/1/2", "/SERVICE[/DB]"),
    ("redis+sentinel://s1/svc/x", "numeric port and /DB"),
    ("redis+sentinel://s1,,s2/svc", "no host"),
    ("redis+sentinel://s1:0/svc", "numeric port"),
    ("redis+sentinel://[::1/svc", "bad IPv6 host"),
])
def test_errors_say_what_is_wrong_and_never_show_the_password(url: str, says: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        StoreAddress.parse(url)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


def test_redact() -> None:
    assert redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis+sentinel://:pw@s1:1,s2/svc") == "redis+sentinel://:***@s1:1,s2/svc"
    assert redact("redis://h/0") == "redis://h/0"
    assert redact("redis://user@h/0") == "redis://user@h/0"


def test_a_bad_sentinel_url_exits_2_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "wspipe_anyio", "serve", "--store",
                           "redis+sentinel://:hunter2@s1,s2"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]" in done.stderr
    assert "hunter2" not in done.stderr and "***" in done.stderr
