"""The backoff plugin through wspipe_backoff: ranges, growth, settings, and the retry schedule."""

from __future__ import annotations

import random

import pytest
from wspipe_plugins.backoff import ExponentialBackoff, FixedBackoff

from wspipe_core import ConfigError, ProxyConfig
from wspipe_core.testing import Harness


@pytest.mark.parametrize("attempt,ceiling", [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8),
                                             (5, 1.0), (50, 1.0), (10**6, 1.0)])
def test_exponential_full_jitter_stays_in_range(attempt, ceiling):
    backoff = ExponentialBackoff(base=0.1, maximum=1.0)
    rng = random.Random(attempt)
    delays = [backoff.wspipe_backoff(attempt=attempt, rng=rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: spread over the whole range, not clustered at the top.
    assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling


def test_fixed_is_fixed():
    assert {FixedBackoff(0.3).wspipe_backoff() for _ in range(5)} == {0.3}


def retry_delays(h, n):
    """The proxy's retry delays of its one pipe, read from its deadlines."""
    delays = []
    for _ in range(n):
        start = h.now
        deadline = h.proxy.next_deadline()
        assert deadline is not None
        delays.append(deadline - start)
        h.advance(deadline - start)
    return delays


def test_backoff_settings_choose_fixed_through_the_hook():
    config = ProxyConfig(max_interruption=60.0, ping_interval=0,
                         plugin_settings={"backoff": {"kind": "fixed", "delay": 0.5}})
    h = Harness(config, plugins=["backoff"])
    h.backend("ws://b1:80/", mode="refuse")
    h.backend("ws://b2:80/", mode="refuse")
    h.client()
    delays = retry_delays(h, 6)
    assert delays == pytest.approx([0.5] * 6)


def test_backoff_exponential_from_settings_grows_to_its_max():
    config = ProxyConfig(max_interruption=600.0, ping_interval=0, eject_after=1000,
                         plugin_settings={"backoff": {"base": 1.0, "max": 8.0}})
    h = Harness(config, plugins=["backoff"])
    h.backend("ws://b1:80/", mode="refuse")
    h.client()
    delays = retry_delays(h, 40)
    ceilings = [min(8.0, 2.0 ** (i - 1)) for i in range(1, 41)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[10:]) > 4.0  # the ceiling did grow to 8


def test_backoff_defaults_come_from_the_configuration():
    h = Harness(ProxyConfig(backoff_base=0.25, backoff_max=3.0), plugins=["backoff"])
    plugin = h.proxy.pm.get_plugin("backoff:ExponentialBackoff")
    assert (plugin.base, plugin.maximum) == (0.25, 3.0)
    h = Harness(ProxyConfig(backoff="fixed", backoff_base=0.4), plugins=["backoff"])
    assert h.proxy.pm.get_plugin("backoff:FixedBackoff").delay == 0.4


def test_the_backoff_table_configures_the_builtin_backoff_too():
    """One reading of ``[plugins.backoff]``: loading the plugin is not needed for it."""
    config = ProxyConfig(max_interruption=60.0, ping_interval=0,
                         plugin_settings={"backoff": {"kind": "fixed", "delay": 0.5}})
    h = Harness(config)
    h.backend("ws://b1:80/", mode="refuse")
    h.client()
    assert retry_delays(h, 4) == pytest.approx([0.5] * 4)
    assert type(h.proxy.pm.get_plugin("wspipe.backoff")) is FixedBackoff


@pytest.mark.parametrize("table,match", [
    ({"kind": "linear"}, "expected exponential or fixed"),
    ({"base": -1}, "base"),
    ({"kind": "fixed", "delay": "1s"}, "delay"),
    ({"kind": "fixed", "base": 1}, "unknown key"),
])
@pytest.mark.parametrize("plugins", [["backoff"], []], ids=["plugin", "builtin"])
def test_backoff_bad_settings(table, match, plugins):
    with pytest.raises(ConfigError, match=match):
        Harness(ProxyConfig(plugin_settings={"backoff": table}), plugins=plugins)
