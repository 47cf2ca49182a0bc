"""Reload in the core: the plan (what changes live, what needs a restart) and
``Proxy.reconfigure`` carrying it out with explicit time, losing nothing."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

from wspipe_core import ConfigError, ProxyConfig
from wspipe_core.reconfigure import LIVE_KEYS, plan
from wspipe_core.testing import Harness, leftovers

from .helpers import config


def test_plan_sorts_changes_into_live_and_restart():
    running = ProxyConfig(backends=("ws://a/", "ws://b/"))
    new = ProxyConfig(backends=("ws://b/", "ws://c/", "dns+ws://svc:80/"), max_connections=5,
                      buffer_limit=1 << 20, strategy="round_robin", migrate_rate=10)
    change = plan(running, new)
    assert change.add_backends == ("ws://c/",)
    assert change.remove_backends == ("ws://a/",)
    assert change.add_discovered == ("dns+ws://svc:80/",)
    assert {c.key for c in change.live} == {"backends", "max_connections", "migrate_rate"}
    assert {c.key for c in change.restart} == {"buffer_limit", "strategy", "max_message_size"}
    # Restart-only keys keep their running values; live ones take the new.
    assert change.config.buffer_limit == running.buffer_limit
    assert change.config.strategy == "least_connections"
    assert change.config.max_connections == 5 and change.config.migrate_rate == 10
    assert change.restart_lines()[0] == (
        "buffer_limit: 5242880 -> 1048576 needs a restart; still 5242880")


def test_an_unchanged_config_is_an_empty_plan():
    assert plan(ProxyConfig(), ProxyConfig()).empty


def test_every_key_is_live_or_restart_only_and_live_ones_exist():
    names = {f.name for f in dataclasses.fields(ProxyConfig)}
    assert names >= LIVE_KEYS


@pytest.mark.parametrize(("new", "message"), [
    (ProxyConfig(backends=("http://x/",)), "backends: invalid backend URL"),
    (ProxyConfig(backends=("dns+ws://svc:80:90/",)), "backends: invalid backend entry"),
    (ProxyConfig(memory_budget=1 << 20, buffer_limit=1 << 20),  # buffer_limit is restart-only
     "buffer_limit must not exceed memory_budget"),
])
def test_a_plan_that_cannot_apply_raises_and_changes_nothing(new, message):
    h = Harness(config())
    before = h.proxy.config
    with pytest.raises(ConfigError, match=message):
        h.proxy.reconfigure(new, now=h.now)
    assert h.proxy.config is before


def test_reconfigure_adds_a_backend_and_drains_a_removed_one_with_migrate_losing_nothing():
    running = config(backends=("ws://b1/",), backoff="fixed", backoff_base=0.1)
    h = Harness(running)
    b1 = h.backend("ws://b1/", register=False)
    b2 = h.backend("ws://b2/", register=False)
    clients = [h.client() for _ in range(4)]
    for i, c in enumerate(clients):
        c.send(f"before-{i}")
    change, actions = h.proxy.reconfigure(
        dataclasses.replace(running, backends=("ws://b2/",)), now=h.now)
    h.apply(actions)
    assert change.add_backends == ("ws://b2/",) and change.remove_backends == ("ws://b1/",)
    h.advance(4 / running.migrate_rate)
    for i, c in enumerate(clients):
        c.send(f"after-{i}")
    h.advance(1)
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert sorted(b1.messages()) == sorted(f"before-{i}" for i in range(4))
    assert sorted(b2.messages()) == sorted(f"after-{i}" for i in range(4))
    assert all(c.close is None for c in clients)
    assert leftovers(h.proxy)["links"] == 4


def test_a_backend_added_at_runtime_survives_a_reload():
    running = config(backends=("ws://b1/",))
    h = Harness(running)
    h.backend("ws://b1/", register=False)
    h.backend("ws://api/")  # registered through the admin API, not in the file
    h.apply(h.proxy.reconfigure(running, now=h.now)[1])
    assert [b.url for b in h.proxy.backends()] == ["ws://b1/", "ws://api/"]


def test_live_limits_apply_to_the_next_client_and_restart_ones_do_not_change():
    running = config(max_connections=1)
    h = Harness(running)
    h.backend("ws://b1/", echo=True)
    first = h.client()
    assert h.client().status == 503
    h.apply(h.proxy.reconfigure(dataclasses.replace(running, max_connections=2,
                                                    buffer_limit=8 << 20), now=h.now)[1])
    second = h.client()
    assert second.accepted and first.accepted
    assert h.client().status == 503
    assert h.proxy.config.buffer_limit == running.buffer_limit


def test_discovered_entries_start_and_stop_with_the_file():
    running = config(backoff="fixed", backoff_base=0.1)
    h = Harness(running)
    b1 = h.backend("ws://b1/")
    h.backend("ws://10.0.0.9:80/", register=False)
    h.dns["svc"] = [("10.0.0.9", 80)]
    with_svc = dataclasses.replace(running, backends=("dns+ws://svc/",))
    h.apply(h.proxy.reconfigure(with_svc, now=h.now)[1])
    h.advance(0)
    assert [b.url for b in h.proxy.backends()] == ["ws://b1/", "ws://10.0.0.9:80/"]
    h.apply(h.proxy.reconfigure(running, now=h.now)[1])
    h.advance(1)
    assert [b.url for b in h.proxy.backends()] == ["ws://b1/"]
    assert b1.links == []


def test_plugins_reread_their_settings_on_every_reload(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    running = config(plugin_settings={"token": {"tokens_file": str(tokens)}})
    h = Harness(running, plugins=["token"])
    h.backend("ws://b1/", echo=True)

    def client(token):
        return h.client(f"/{uuid.uuid4()}?access_token={token}")

    assert client("old-token").accepted
    tokens.write_text("new-token\n")
    assert client("new-token").status == 403  # not before the reload
    h.apply(h.proxy.reconfigure(running, now=h.now)[1])  # same table, the file re-read
    assert client("new-token").accepted
    assert client("old-token").status == 403


def test_a_plugin_that_cannot_take_its_new_settings_keeps_the_running_ones(tmp_path, caplog):
    tokens = tmp_path / "tokens"
    tokens.write_text("kept\n")
    running = config(plugin_settings={"token": {"tokens_file": str(tokens)}})
    h = Harness(running, plugins=["token"])
    h.backend("ws://b1/", echo=True)
    tokens.unlink()
    h.apply(h.proxy.reconfigure(running, now=h.now)[1])
    assert "wspipe_reconfigure of" in caplog.text and "cannot read" in caplog.text
    assert h.client(f"/{uuid.uuid4()}?access_token=kept").accepted


def test_jwt_rereads_its_secret_file_on_a_reload(tmp_path):
    import time

    import jwt

    secret = tmp_path / "jwt-secret"
    secret.write_text("a" * 32)
    running = config(plugin_settings={"jwt": {"secret_file": str(secret)}})
    h = Harness(running, plugins=["jwt"])
    h.backend("ws://b1/", echo=True)

    def client(key):
        token = jwt.encode({"sub": "u", "exp": time.time() + 60}, key, algorithm="HS256")
        return h.client(f"/{uuid.uuid4()}?access_token={token}")

    assert client("a" * 32).accepted
    secret.write_text("b" * 32)
    h.apply(h.proxy.reconfigure(running, now=h.now)[1])
    assert client("b" * 32).accepted
    assert client("a" * 32).status == 403


def test_a_reload_cannot_add_a_backend_outside_backend_allow():
    running = config(backend_allow=("10.0.0.0/8",), backends=("ws://10.0.0.1/",))
    h = Harness(running)
    with pytest.raises(ConfigError, match=re.escape("ws://192.168.1.1/ is not on backend_allow")):
        h.proxy.reconfigure(dataclasses.replace(running, backends=("ws://192.168.1.1/",)),
                            now=h.now)
    assert [b.url for b in h.proxy.backends()] == ["ws://10.0.0.1/"]


def test_origin_takes_its_new_allow_list_on_a_reload():
    running = config(plugin_settings={"origin": {"allowed": ["https://old.example"]}})
    h = Harness(running, plugins=["origin"])
    h.backend("ws://b1/", echo=True)
    assert h.client(headers=[("Origin", "https://old.example")]).accepted
    new = dataclasses.replace(
        running, plugin_settings={"origin": {"allowed": ["https://new.example"]}})
    change, actions = h.proxy.reconfigure(new, now=h.now)
    h.apply(actions)
    assert [c.key for c in change.live] == ["plugin_settings"]
    assert h.client(headers=[("Origin", "https://new.example")]).accepted
    assert h.client(headers=[("Origin", "https://old.example")]).status == 403
