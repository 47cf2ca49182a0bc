"""The package as published: license, version, changelog and the sample config file."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

from wspipe_anyio import cli
from wspipe_core import ProxyConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "deploy" / "wspipe.toml"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_is_mit_and_declared() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_build_backend_understands_the_spdx_license_string() -> None:
    # setuptools reads `license = "MIT"` (PEP 639) and `license-files` from 77 on.
    requires = pyproject()["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert match and int(match[1]) >= 77, setuptools


def test_version_comes_from_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"wspipe {importlib.metadata.version('wspipe')}"


def test_changelog_has_an_entry_for_this_version() -> None:
    version = pyproject()["project"]["version"]
    assert re.search(rf"^## \[?{re.escape(version)}\]?", (ROOT / "CHANGELOG.md").read_text(),
                     re.M), f"CHANGELOG.md has no '## {version}' heading"


def sample_options() -> cli.ServeOptions:
    merged = cli.merge_layers(cli.build_parser().parse_args(["serve", "--config", str(SAMPLE)]),
                              environ={})
    return cli.build_options(merged.values, merged)


def test_sample_config_parses_and_holds_exactly_the_defaults() -> None:
    options = sample_options()
    assert options.config == ProxyConfig()
    settings = cli.load_config_file(str(SAMPLE))
    for key, value in settings.items():
        if key in cli.DRIVER_KEYS:
            assert value == cli.DRIVER_DEFAULTS[key], key


def test_sample_config_names_every_key() -> None:
    """Every ProxyConfig field and driver key is in the sample, set to its default or,
    when the default is unset, as a commented-out line: adding a key means adding it
    here (and to docs/cli.md)."""
    text = SAMPLE.read_text()
    given = set(cli.load_config_file(str(SAMPLE)))
    commented = set(re.findall(r"^# ?\[?(?:plugins\.)?([a-z_]+)\]? ?=", text, re.M))
    keys = {f.name for f in dataclasses.fields(ProxyConfig)} | set(cli.DRIVER_KEYS)
    keys.discard("plugin_settings")  # [plugins.NAME] tables, shown as a comment
    assert "[plugins." in text
    missing = sorted(keys - given - commented)
    assert not missing, f"deploy/wspipe.toml lacks {missing}"
    for key in given & commented:
        pytest.fail(f"{key} is both set and commented out")


def test_sample_config_commented_keys_are_the_unset_ones() -> None:
    text = SAMPLE.read_text()
    commented = set(re.findall(r"^# ([a-z_]+) =", text, re.M))
    defaults = {f.name: getattr(ProxyConfig(), f.name) for f in dataclasses.fields(ProxyConfig)}
    defaults.update(cli.DRIVER_DEFAULTS)
    assert commented - defaults.keys() == {"tokens_file"}  # the [plugins.token] example
    for key in commented & defaults.keys():
        assert defaults[key] is None, f"{key} has a default and should be set in the sample"


def test_sample_config_marks_exactly_the_live_keys() -> None:
    """A key marked [live] changes on a reload: the core's LIVE_KEYS and the driver's."""
    from wspipe_anyio.reload import LIVE_DRIVER_KEYS
    from wspipe_core.reconfigure import LIVE_KEYS

    marked: set[str] = set()
    block: list[str] = []  # the comment lines just above
    for line in SAMPLE.read_text().split("# [plugins.", 1)[0].splitlines():
        match = re.match(r"^(?:# ?)?([a-z_]+) ?=", line)
        if match:
            if "[live" in line or any("[live" in c for c in block):
                marked.add(match[1])
            block = []
        elif line.startswith("#"):
            block.append(line)
        else:
            block = []
    expected = (LIVE_KEYS | LIVE_DRIVER_KEYS) - {"plugin_settings"}
    assert marked == expected, (f"marked but not live: {sorted(marked - expected)}; "
                                f"live but not marked: {sorted(expected - marked)}")
