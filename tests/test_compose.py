"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the services
and their wiring, and that every command is a real `digits` subcommand."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from api.metrics_state import NAMES as STATE_NAMES
from cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DIGITS_SERVICES = {"migrate", "api", "worker", "interactive", "scheduler"}
MONITORING = {"prometheus", "grafana", "flower"}
LONG_RUNNING = {"redis", "postgres", "api", "worker", "interactive", "scheduler", *MONITORING}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_services_are_all_there(services):
    assert set(services) == {"redis", "postgres", *DIGITS_SERVICES, *MONITORING}
    # Monitoring only with `--profile monitoring`; everything else always.
    for name, service in services.items():
        assert service.get("profiles", []) == (["monitoring"] if name in MONITORING else [])


def test_redis_never_evicts_queued_work(services):
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_services_have_a_healthcheck(services, name):
    test = services[name]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    if test[1:3] == ["python", "-c"]:
        compile(test[3], f"{name} healthcheck", "exec")  # YAML indentation kept the code whole


@pytest.mark.parametrize("name", ["worker", "interactive"])
def test_workers_can_be_scaled(services, name):
    """`--scale worker=N` needs no fixed container name and no fixed host port."""
    assert "container_name" not in services[name]
    assert "ports" not in services[name]


def test_dependencies_wait_for_health_and_for_the_migration(services):
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert condition == "service_completed_successfully", (name, dependency)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"  # one-off, not restarted after success
    for name in DIGITS_SERVICES - {"migrate"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_digits_services_are_configured_by_digits_variables(services):
    for name in DIGITS_SERVICES:
        env = services[name]["environment"]
        assert all(key.startswith("DIGITS_") for key in env), name
        assert env["DIGITS_DATABASE_URL"] == (
            "postgresql+psycopg://digits:digits@postgres:5432/digits")
        assert env["DIGITS_REDIS_URL"] == "redis://redis:6379/0"
        # Listening beyond loopback: API keys required unless the operator says otherwise.
        assert env["DIGITS_AUTH"] == "${DIGITS_AUTH:-required}"
        assert env["DIGITS_SECRET_KEY"] == "${DIGITS_SECRET_KEY:-}"


@pytest.mark.parametrize("name, subcommand", [
    ("migrate", "db"), ("api", "api"), ("worker", "worker"), ("interactive", "worker"),
    ("scheduler", "reconcile"),
])
def test_commands_are_real_digits_subcommands(services, name, subcommand):
    command = services[name]["command"]
    assert command[0] == "digits"
    try:
        args = build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{name}: `{' '.join(command)}` is not a valid digits command")
    assert args.command == subcommand


@pytest.mark.parametrize("name, queue", [("worker", "bulk"), ("interactive", "interactive")])
def test_each_worker_service_consumes_its_queue(services, name, queue):
    command = services[name]["command"]
    assert command[command.index("--queues") + 1] == queue


# --- the monitoring profile ------------------------------------------------------------


def metric_names() -> set[str]:
    """Every series name digits exposes: the families defined in shared.metrics, with
    the suffixes Prometheus sees, and the gauges read when /metrics is scraped."""
    from prometheus_client import REGISTRY

    import shared.metrics  # noqa: F401  (defines the families in the default registry)

    names = set(STATE_NAMES)
    for family in REGISTRY.collect():
        if not family.name.startswith("digits_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def series_in(expr: str) -> set[str]:
    # Label values in quotes may hold anything; drop them before looking for names.
    return set(re.findall(r"\bdigits_[a-z0-9_]+\b", re.sub(r'"[^"]*"', '""', expr)))


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "monitoring/grafana/dashboards/digits.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", [])]


def test_every_dashboard_query_names_metrics_that_exist():
    known = metric_names()
    queries = dashboard_queries()
    assert len(queries) >= 10
    titles = " ".join(title.lower() for title, _ in queries)
    for topic in ("images per second", "queue", "latency", "error", "workers"):
        assert topic in titles, topic
    for title, expr in queries:
        names = series_in(expr)
        assert names, f"{title}: {expr} names no digits metric"
        assert names <= known, f"{title}: unknown {sorted(names - known)} in {expr}"


def test_every_alert_names_metrics_that_exist():
    rules = yaml.safe_load((ROOT / "monitoring/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert any("digits_oldest_pending_image_age_seconds" in e for e in exprs)
    for expr in exprs:
        assert series_in(expr) and series_in(expr) <= metric_names(), expr


def test_prometheus_scrapes_the_api_and_the_workers(services):
    config = yaml.safe_load((ROOT / "monitoring/prometheus.yml").read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            for name in sd["names"]:
                targets[name] = sd["port"]
    assert targets == {"api": 8000, "worker": 9100, "interactive": 9100}
    assert "8000" in " ".join(services["api"]["command"])
    for name in ("worker", "interactive"):
        assert services[name]["environment"]["DIGITS_METRICS_PORT"] == "9100"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_grafana_gets_the_datasource_and_the_dashboard_it_names(services):
    mounts = {volume.split(":")[1]: ROOT / volume.split(":")[0]
              for volume in services["grafana"]["volumes"] if volume.startswith("./")}
    provisioning = mounts["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    board = json.loads((mounts["/var/lib/grafana/dashboards"] / "digits.json").read_text())
    used = {target["datasource"]["uid"] for panel in board["panels"]
            for target in panel.get("targets", [])}
    assert used == {uid}
    provider = yaml.safe_load((provisioning / "dashboards/digits.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for volume in services["prometheus"]["volumes"]:
        if volume.startswith("./"):
            assert (ROOT / volume.split(":")[0]).is_file(), volume


def test_the_image_installs_the_pinned_model_side():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install -c constraints.txt '.[ml]'" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    assert "models" not in ignored  # the trained model ships in the image


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (make system-deps)")
def test_docker_compose_accepts_the_file():
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- the healthchecks' own code, run against the live stack ---------------------------


def run_healthcheck(services: dict, name: str, env: dict[str, str]):
    """Run a service's `python -c` healthcheck here, as Docker would in the container."""
    code = services[name]["healthcheck"]["test"][3]
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_worker_healthcheck_finds_a_worker_on_this_host(services, live_stack):
    healthy = run_healthcheck(services, "worker", live_stack.env)
    assert healthy.returncode == 0, healthy.stderr
    # Through another Redis database no worker answers: unhealthy, by the check's own
    # verdict (exit 1, nothing on stderr), not by a crash.
    other = live_stack.env["DIGITS_REDIS_URL"].rsplit("/", 1)[0] + "/7"
    alone = run_healthcheck(services, "worker", {**live_stack.env, "DIGITS_REDIS_URL": other})
    assert (alone.returncode, alone.stderr) == (1, "")


def test_the_scheduler_healthcheck_needs_redis_and_the_database(services, live_stack):
    healthy = run_healthcheck(services, "scheduler", live_stack.env)
    assert healthy.returncode == 0, healthy.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = {**live_stack.env, "DIGITS_REDIS_URL": f"redis://127.0.0.1:{closed}/0"}
    assert run_healthcheck(services, "scheduler", down).returncode != 0
