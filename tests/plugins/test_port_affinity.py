import pytest

from wspipe_core import ConfigError, ProxyConfig
from wspipe_core.testing import Harness


def config(port):
    return ProxyConfig(plugin_settings={"port_affinity": {"port": port}})


def test_every_client_goes_to_the_backend_on_the_port():
    h = Harness(config(9002), plugins=["port_affinity"])
    other = h.backend("ws://10.0.0.1:9001/")
    chosen = h.backend("ws://10.0.0.2:9002/")
    for i in range(5):
        h.client().send(f"hello {i}")
    assert other.messages() == []
    assert chosen.messages() == [f"hello {i}" for i in range(5)]


def test_no_backend_on_the_port_leaves_the_choice_to_the_default():
    h = Harness(config(9999), plugins=["port_affinity"])
    backend = h.backend("ws://10.0.0.1:9001/")
    h.client().send("hello")
    assert backend.messages() == ["hello"]


def test_a_missing_port_stops_start_up():
    with pytest.raises(ConfigError, match=r"\[plugins.port_affinity\] port"):
        Harness(ProxyConfig(), plugins=["port_affinity"])
