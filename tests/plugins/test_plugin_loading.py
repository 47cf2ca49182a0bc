"""Loading plugins: entry points, names, module paths, blocking, and start-up errors."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import wspipe_plugins

from wspipe_core import ConfigError, ProxyConfig, hookimpl, make_plugin_manager
from wspipe_core.hooks import BUILTIN_NAMES, available_plugins, describe_plugins
from wspipe_core.testing import Harness

ROOT = Path(__file__).resolve().parents[2]


def names(pm):
    return [name for name, plugin in pm.list_name_plugin() if plugin is not None]


def test_every_first_party_plugin_is_an_entry_point_of_the_wspipe_distribution():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["wspipe"] == wspipe_plugins.FIRST_PARTY
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="wspipe")
                 if ep.dist is not None and ep.dist.name == "wspipe"}
    assert installed == wspipe_plugins.FIRST_PARTY
    listed = {name: (target, autoload) for name, target, autoload in available_plugins()}
    for name, target in wspipe_plugins.FIRST_PARTY.items():
        assert listed[name] == (target, False)


def test_first_party_entry_points_are_not_loaded_unless_named():
    pm = make_plugin_manager(ProxyConfig(), load_entrypoints=True)
    assert not set(wspipe_plugins.FIRST_PARTY) & set(names(pm))
    assert set(BUILTIN_NAMES) <= set(names(pm))


@pytest.mark.parametrize("name", sorted(wspipe_plugins.FIRST_PARTY))
def test_each_first_party_plugin_loads_by_entry_point_name(name):
    settings = {"token": {"tokens": ["t"]}, "jwt": {"secret": "s" * 32},
                "origin": {"allowed": ["https://a.example"]}}
    h = Harness(ProxyConfig(plugin_settings=settings), plugins=[name])
    listed = dict(describe_plugins(h.proxy.pm))
    # The auth plugins take new settings (and re-read their files) on a reload.
    reloads = ["wspipe_reconfigure"] if name in ("token", "jwt", "origin") else []
    assert listed[name] == ["wspipe_configure", *reloads]
    (active,) = [n for n in listed if n.startswith(f"{name}:")]
    assert listed[active]  # the configured object implements the family's hook(s)


def test_describe_plugins_lists_call_order_and_hooks():
    h = Harness(plugins=["weighted", "token"],
                config=ProxyConfig(plugin_settings={"token": {"tokens": ["t"]}}))
    listed = describe_plugins(h.proxy.pm)
    order = [name for name, _ in listed]
    assert order.index("token:TokenAuth") < order.index("weighted:Weighted")
    assert order[-4:] == list(BUILTIN_NAMES)  # built-ins are asked last of all
    assert dict(listed)["token:TokenAuth"] == ["wspipe_authenticate", "wspipe_backend_request"]
    assert dict(listed)["wspipe.strategy"] == ["wspipe_select_backend"]


def test_describe_plugins_puts_tryfirst_first_and_trylast_after_the_others():
    class Early:
        @hookimpl(tryfirst=True)
        def wspipe_select_backend(self, candidates):
            return None

    class Late:
        @hookimpl(trylast=True)
        def wspipe_select_backend(self, candidates):
            return None

    late, early = Late(), Early()
    order = [name for name, _ in describe_plugins(Harness(plugins=[early, late]).proxy.pm)]
    assert order[0].endswith(".Early")
    assert order.index(next(n for n in order if n.endswith(".Late"))) == len(order) - 5
    assert order[-4:] == list(BUILTIN_NAMES)


def test_the_builtins_are_asked_after_a_users_trylast_plugin():
    asked = []

    class Fallback:
        @hookimpl(trylast=True)
        def wspipe_select_backend(self, candidates):
            asked.append(len(candidates))
            return candidates[-1]

    h = Harness(plugins=[Fallback()])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    for _ in range(3):
        h.client()
    assert asked == [2, 2, 2] and (len(b1.links), len(b2.links)) == (0, 3)


def test_an_object_of_a_builtin_class_takes_its_familys_place():
    from wspipe_core.builtin import DropOldest, Exclusive, RoundRobin

    h = Harness(plugins=[RoundRobin(), DropOldest()])
    order = [name for name, _ in describe_plugins(h.proxy.pm)]
    assert order.index("wspipe_core.builtin.strategies.RoundRobin") < order.index(
        "wspipe.strategy")
    h = Harness(plugins=[RoundRobin(), Exclusive()])  # the later one wins, and alone
    assert [n for n in names(h.proxy.pm) if "strateg" in n] == [
        "wspipe_core.builtin.strategies.Exclusive"]


def test_module_path_loading():
    h = Harness(plugins=["wspipe_plugins.strategy.weighted"])
    assert "wspipe_plugins.strategy.weighted" in names(h.proxy.pm)
    assert "weighted:Weighted" in names(h.proxy.pm)


def test_the_same_plugin_by_name_and_by_path_is_registered_once():
    h = Harness(plugins=["round_robin", "wspipe_plugins.strategy.round_robin"])
    assert [n for n in names(h.proxy.pm) if "round_robin" in n] == [
        "round_robin", "round_robin:RoundRobin"]


def test_a_plugin_file_outside_the_package_loads_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "pick_last.py").write_text(textwrap.dedent("""
        from wspipe_core import hookimpl

        @hookimpl
        def wspipe_select_backend(candidates):
            return candidates[-1]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    h = Harness(plugins=["pick_last"])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    for _ in range(3):
        h.client()
    assert (len(b1.links), len(b2.links)) == (0, 3)


def test_a_plugin_that_fails_to_import_stops_start_up_naming_it(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        make_plugin_manager(ProxyConfig(), plugins=["broken_plugin"])
    message = str(info.value)
    assert "broken_plugin" in message and "no_such_dependency_xyz" in message
    assert "\n" not in message


def test_an_unknown_module_stops_start_up_naming_it():
    with pytest.raises(ConfigError, match="cannot import plugin 'no_such_plugin_xyz'"):
        make_plugin_manager(ProxyConfig(), plugins=["no_such_plugin_xyz"])


def test_a_plugin_with_an_unknown_hook_stops_start_up_naming_it(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(textwrap.dedent("""
        from wspipe_core import hookimpl

        @hookimpl
        def wspipe_select_backends(candidates):
            return candidates[0]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        make_plugin_manager(ProxyConfig(), plugins=["typo_plugin"])
    assert str(info.value) == (
        "plugin 'typo_plugin' implements unknown hook 'wspipe_select_backends'")


def test_an_object_with_an_unknown_hook_stops_start_up_naming_it():
    class Typo:
        @hookimpl
        def wspipe_authenticat(self, request):
            return None

    with pytest.raises(ConfigError, match=r"plugin '.*Typo' implements unknown hook "
                                          r"'wspipe_authenticat'"):
        make_plugin_manager(ProxyConfig(), plugins=[Typo()])


def test_an_unmarked_hook_function_is_refused():
    class Forgot:
        def wspipe_select_backend(self, candidates):
            return candidates[0]

    with pytest.raises(ConfigError, match="wspipe_select_backend is not marked with @hookimpl"):
        make_plugin_manager(ProxyConfig(), plugins=[Forgot()])


def test_a_plugin_registered_by_wspipe_configure_is_checked_too():
    class Late:
        @hookimpl
        def wspipe_bogus(self):
            pass

    class Registrar:
        @hookimpl
        def wspipe_configure(self, pm):
            pm.register(Late(), name="late")

    with pytest.raises(ConfigError, match="plugin 'late' implements unknown hook 'wspipe_bogus'"):
        Harness(plugins=[Registrar()])


def test_wrong_argument_names_stop_start_up():
    class BadArgs:
        @hookimpl
        def wspipe_select_backend(self, backends):
            return backends[0]

    with pytest.raises(ConfigError, match="BadArgs"):
        make_plugin_manager(ProxyConfig(), plugins=[BadArgs()])


# Blocking.


def test_blocking_the_builtin_strategy_leaves_the_choice_to_plugins():
    pm = make_plugin_manager(ProxyConfig(), blocked=["wspipe.strategy"])
    assert "wspipe.strategy" not in names(pm)
    pm = make_plugin_manager(ProxyConfig(), plugins=["no:wspipe.strategy"])
    assert "wspipe.strategy" not in names(pm)


def test_no_prefix_blocks_a_later_plugin_spec():
    h = Harness(plugins=["no:weighted", "weighted", "round_robin"])
    assert "weighted" not in names(h.proxy.pm)
    assert "round_robin:RoundRobin" in names(h.proxy.pm)


def test_blocking_a_plugins_configured_object():
    h = Harness(plugins=["no:weighted:Weighted", "weighted"])
    assert "weighted" in names(h.proxy.pm) and "weighted:Weighted" not in names(h.proxy.pm)


# Third-party entry points: loaded at start-up unless blocked.


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Install a fake distribution with two ``wspipe`` entry points on sys.path."""
    (tmp_path / "tp_sticky.py").write_text(textwrap.dedent("""
        from wspipe_core import hookimpl

        @hookimpl
        def wspipe_select_backend(candidates):
            return candidates[-1]
    """))
    (tmp_path / "tp_broken.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "tp_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-plugins\nVersion: 1.0\n")
    entry_points = dist / "entry_points.txt"
    entry_points.write_text("[wspipe]\nsticky = tp_sticky\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield entry_points
    for module in ("tp_sticky", "tp_broken"):
        sys.modules.pop(module, None)


def test_third_party_entry_points_load_at_start_up(third_party):
    pm = make_plugin_manager(ProxyConfig(), load_entrypoints=True)
    assert "sticky" in names(pm)
    assert ("sticky", "tp_sticky", True) in available_plugins()
    pm = make_plugin_manager(ProxyConfig(), load_entrypoints=False)
    assert "sticky" not in names(pm)


def test_third_party_entry_point_can_be_blocked(third_party):
    pm = make_plugin_manager(ProxyConfig(), load_entrypoints=True, blocked=["sticky"])
    assert "sticky" not in names(pm)
    pm = make_plugin_manager(ProxyConfig(), load_entrypoints=True, plugins=["no:sticky"])
    assert "sticky" not in names(pm)


def test_a_broken_entry_point_stops_start_up_naming_it(third_party):
    third_party.write_text("[wspipe]\nbroken = tp_broken\n")
    with pytest.raises(ConfigError, match=r"cannot load plugin 'broken' \(tp_broken\): "
                                          r"RuntimeError: boom at import"):
        make_plugin_manager(ProxyConfig(), load_entrypoints=True)


def test_jwt_without_pyjwt_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jwt", None)  # as if PyJWT were not installed
    monkeypatch.delitem(sys.modules, "wspipe_plugins.auth.jwt", raising=False)
    with pytest.raises(ConfigError, match=r"cannot load plugin 'jwt' .*pip install "
                                          r"'wspipe\[jwt\]'"):
        make_plugin_manager(ProxyConfig(), plugins=["jwt"])
