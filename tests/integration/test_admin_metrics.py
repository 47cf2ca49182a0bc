"""Metrics hygiene, against a real proxy's ``/metrics``: what the shipped alert rules and
Grafana dashboard name exists, standard collectors and ``wspipe_build_info`` are there,
and no label carries a query string or credentials. Runs on asyncio and trio.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from peers import Backend, Client, client_path, running_backends, running_proxy, url
from prometheus_client.parser import text_string_to_metric_families

from wspipe_anyio.admin import AdminServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "wspipe-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wspipe-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
TOKEN = "metrics-token"
SECRET = "s3cret-in-the-query"

#: PromQL words and label names that may appear in an expression besides metric names.
PROMQL_WORDS = {"sum", "rate", "increase", "by", "without", "histogram_quantile", "on", "and",
                "or", "unless", "le", "state", "reason", "direction", "backend", "result",
                "job", "instance", "status", "code", "url", "max", "min", "avg"}
#: Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard target."""
    rules = yaml.safe_load(RULES.read_text())
    out = [(f"rule {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    out += [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"]
            for t in p["targets"]]
    out += [("dashboard variable", v["query"]) for v in dashboard["templating"]["list"]
            if v["type"] == "query"]
    return out


def metric_names(expr: str) -> set[str]:
    """The identifiers of ``expr`` that are not PromQL words (label matchers, strings,
    durations and numbers removed)."""
    bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", " ", expr)
    bare = re.sub(r"\blabel_values\(([a-z_]+),\s*[a-z_]+\)", r"\1", bare)
    return {name for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)
            if name not in PROMQL_WORDS}


def test_the_rules_file_is_prometheus_rules_and_the_guide_shows_it_as_it_is() -> None:
    rules = yaml.safe_load(RULES.read_text())
    (group,) = rules["groups"]
    assert group["name"] == "wspipe"
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels"}, rule
        assert rule["alert"].startswith("Wspipe")
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    guide = OPERATIONS.read_text()
    block = re.search(r"<!-- file: deploy/prometheus/wspipe-alerts.yml -->\n```yaml\n(.*?)```",
                      guide, re.S)
    assert block is not None, "operations.md does not embed the rules file"
    assert block[1] == RULES.read_text()


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "wspipe" and len(dashboard["panels"]) >= 10
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= names
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def exported(text: str) -> set[str]:
    """Every series name a scrape can hold: sample names, and for families that had no
    sample at that moment, the names their type gives them."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported_without_secrets(
        ) -> None:
    backend = Backend()
    with anyio.fail_after(30):
        async with running_backends(backend), \
                running_proxy([f"{backend.url}/room?token={SECRET}&x=1"],
                              health_check_interval=0.1) as server, \
                AdminServer(server, token=TOKEN) as admin, \
                httpx.AsyncClient(base_url=admin.url, timeout=5,
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            client = await Client.connect(url(server, client_path()))
            await client.send("hi")
            assert await client.recv() == "hi"
            with anyio.fail_after(5):
                while not server.backend_health()[0].checks:
                    await anyio.sleep(0.02)
            r = await http.post("/backends", json={"url": "ws://127.0.0.1:9/p?key=k2"})
            assert r.status_code == 201
            text = (await http.get("/metrics")).text
            await client.close()
    names = exported(text)
    missing = {(where, name) for where, expr in expressions() for name in metric_names(expr)
               if name not in names and name not in PROMETHEUS_SERIES}
    assert missing == set()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "python_info", "python_gc_objects_collected_total"):
        assert name in names
    build = [s for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "wspipe_build_info"]
    assert len(build) == 1 and build[0].value == 1
    assert re.fullmatch(r"\d+\.\d+.*|unknown", build[0].labels["version"])
    assert build[0].labels["python"].split()[0] in ("CPython", "PyPy")
    checks = [s for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "wspipe_health_checks_total" and s.labels["backend"] == "b1"]
    assert {s.labels["result"] for s in checks} == {"ok", "failed"}
    labels = [value for f in text_string_to_metric_families(text) for s in f.samples
              for value in s.labels.values()]
    assert f"{backend.url}/room" in labels
    for value in labels:
        assert "?" not in value and "@" not in value, value
        assert SECRET not in value and "k2" not in value and "token" not in value, value
    assert SECRET not in text


def test_every_metric_of_the_guide_table_is_in_the_rules_or_dashboard_or_exported() -> None:
    """The metrics table of operations.md names the health-check counter and build info."""
    guide = OPERATIONS.read_text()
    for name in ("wspipe_health_checks_total", "wspipe_build_info", "process_open_fds"):
        assert f"`{name}`" in guide
