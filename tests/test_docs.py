"""The docs cover what users rely on, and their code is the code the tests run."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest
import wspipe_plugins

from wspipe_core import ProxyConfig, hookspecs
from wspipe_core.builtin import BUFFER_POLICIES, STRATEGIES, make_builtins

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_MD = ROOT / "docs" / "plugins.md"
FAMILY_PAGES = sorted((ROOT / "docs" / "plugins").glob("*.md"))


def hookspec_signatures():
    specs = {}
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith(f"{hookspecs.PROJECT}_"):
            specs[name] = f"{name}({', '.join(inspect.signature(func).parameters)})"
    return specs


def headings(text):
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


@pytest.mark.parametrize("name,signature", sorted(hookspec_signatures().items()))
def test_plugin_hooks_are_documented(name, signature):
    """Each hook has a heading in docs/plugins.md written as its exact signature."""
    assert signature in headings(PLUGINS_MD.read_text()), (
        f"docs/plugins.md has no heading '### {signature}'")


def test_no_documented_hook_is_gone():
    documented = {h.split("(")[0] for h in headings(PLUGINS_MD.read_text())
                  if h.startswith(f"{hookspecs.PROJECT}_")}
    assert documented == set(hookspec_signatures())


def test_there_are_hookspecs_to_check():
    assert len(hookspec_signatures()) >= 8


EMBED = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.S)


def test_embedded_files_are_the_files_the_tests_run():
    """Code shown with ``<!-- file: PATH -->`` is that file, byte for byte (no drift)."""
    embeds = list(EMBED.finditer(PLUGINS_MD.read_text()))
    paths = {m["path"] for m in embeds}
    assert {"docs/examples/port_affinity.py", "tests/plugins/test_port_affinity.py"} <= paths
    for match in embeds:
        assert match["code"] == (ROOT / match["path"]).read_text(), (
            f"docs/plugins.md shows an outdated copy of {match['path']}")


@pytest.mark.parametrize("name", sorted(wspipe_plugins.FIRST_PARTY))
def test_every_first_party_plugin_has_a_section(name):
    pages = "\n".join(page.read_text() for page in FAMILY_PAGES)
    assert any(f"`{name}`" in heading for heading in headings(pages)), (
        f"no docs/plugins/*.md heading names {name}")
    assert wspipe_plugins.FIRST_PARTY[name] in pages, f"module of {name} not named in the docs"


def test_builtin_plugin_names_are_documented():
    from wspipe_core.hooks import BUILTIN_NAMES

    text = PLUGINS_MD.read_text()
    for name in BUILTIN_NAMES:
        assert f"`{name}`" in text


TOML = re.compile(r"```toml\n(?P<code>.*?)```", re.S)


def toml_blocks():
    return [(page.relative_to(ROOT).as_posix(), i, m["code"])
            for page in [PLUGINS_MD, *FAMILY_PAGES]
            for i, m in enumerate(TOML.finditer(page.read_text()))]


def test_there_are_toml_blocks_to_check():
    assert len(toml_blocks()) >= 6


@pytest.mark.parametrize("page,index,code", toml_blocks())
def test_toml_blocks_parse_and_builtin_tables_are_accepted(page, index, code):
    """Every TOML example parses, and the settings it shows for a strategy, backoff or
    buffer policy are accepted by the one implementation, selected by its name."""
    data = tomllib.loads(code)
    tables = data.get("plugins", {})
    for name, table in tables.items() if isinstance(tables, dict) else ():
        if name in STRATEGIES:
            make_builtins(ProxyConfig(strategy=name, plugin_settings={name: table}))
        elif name in BUFFER_POLICIES:
            make_builtins(ProxyConfig(buffer_policy=name, plugin_settings={name: table}))
        elif name == "backoff":
            make_builtins(ProxyConfig(plugin_settings={name: table}))
