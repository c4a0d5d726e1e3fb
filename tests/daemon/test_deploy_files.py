"""The deployment files: the example service files stop the daemon with a grace above its own
shutdown timeout; deploy/'s Compose file, Grafana dashboard and Prometheus alert rules name only
what the server has (its metrics, its variables, its health route) and pass promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import Config, DownloadManagerConfig, load_config
from daemon.metrics import Metrics
from daemon.services import close_root
from tests.conftest import open_test_root

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHUTDOWN = Config.shutdown_timeout_sec


def test_systemd_unit_fits_the_shutdown_timeout() -> None:
    unit = (ROOT / "deploy" / "pezzottify.service").read_text()
    assert re.search(r"^KillMode=mixed$", unit, re.M)
    assert re.search(r"^Restart=on-failure$", unit, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    assert stop is not None
    assert int(stop.group(1)) >= DEFAULT_SHUTDOWN + 10


def test_dockerfile_stops_with_sigterm_and_documents_the_grace() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in text
    grace = re.search(r"docker stop -t (\d+)", text)
    assert grace is not None
    assert int(grace.group(1)) >= DEFAULT_SHUTDOWN + 10
    assert "pezzottify-server" in text


# deploy/: the Compose file, the Grafana dashboard and the Prometheus alert rules (SPEC §15) -----

DEPLOY = ROOT / "deploy"
PROMQL_METRIC = re.compile(r"\bpezzottify_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")  # a series selector with labels
# Series Prometheus makes itself rather than the server: `up` is the scrape's own.
PROMETHEUS_OWN = {"up"}


def exported_names() -> set[str]:
    """Every series name the server's metrics can produce (a counter `_total`, a histogram's
    `_bucket`, `_count` and `_sum`), from the one registry `daemon.metrics` builds."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def compose_service() -> dict[str, Any]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service: dict[str, Any] = compose["services"]["pezzottify"]
    return service


def test_every_metric_the_dashboard_and_the_alerts_name_is_exported() -> None:
    known = exported_names()
    texts = [*dashboard_queries(), *(rule["expr"] for rule in alert_rules())]
    texts.append((ROOT / "tests" / "daemon" / "alert_cases.yml").read_text())
    named = {name for text in texts for name in PROMQL_METRIC.findall(text)}
    assert named, "no metric found"
    assert named - known == set(), f"not exported by daemon/metrics.py: {named - known}"
    selected = {name for text in texts for name in SELECTOR.findall(text)}
    assert {name for name in selected if not name.startswith("pezzottify_")} <= PROMETHEUS_OWN


def test_the_dashboard_covers_the_operations_metrics() -> None:
    used = {name for q in dashboard_queries() for name in PROMQL_METRIC.findall(q)}
    wanted = {
        "pezzottify_download_queue_size",  # queue by status
        "pezzottify_download_processed_total",  # throughput
        "pezzottify_download_failures_total",  # failures by type
        "pezzottify_download_capacity_used",
        "pezzottify_background_job_executions_total",  # job runs
        "pezzottify_http_request_duration_seconds_bucket",  # HTTP latency
        "pezzottify_actor_restarts_total",
        "pezzottify_download_stale_in_progress",
        "pezzottify_download_paused",
    }
    assert wanted - used == set()
    assert all(
        p["datasource"]["uid"] == "${datasource}" for p in dashboard()["panels"] if "targets" in p
    )


def test_every_alert_says_what_to_do() -> None:
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_compose_builds_the_image_mounts_the_volumes_and_checks_health(tmp_path: Path) -> None:
    service = compose_service()
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
        ROOT / "Dockerfile"
    )
    health = service["healthcheck"]
    command = health["test"]
    assert command[:3] == ["CMD", "python", "-c"]  # the image has Python, not curl
    assert "http://127.0.0.1:3001/health" in command[3]
    compile(command[3], "healthcheck", "exec")
    assert "python" in (ROOT / "Dockerfile").read_text().split("\n", 5)[3]  # FROM python:…
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace is not None and int(grace.group(1)) >= DEFAULT_SHUTDOWN + 10

    # Each volume is mounted on a folder the image makes and gives to its user.
    env = service["environment"]
    mounts = dict(v.split(":")[::-1] for v in service["volumes"])
    assert set(mounts) == {
        "/var/lib/pezzottify",
        env["PEZZOTTIFY_MEDIA_PATH"],
        env["PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__DIR"],
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    chown = re.search(r"chown pezzottify ([^\n]+)", dockerfile)
    assert chown is not None and set(mounts) <= set(chown.group(1).split())
    assert '--db-dir", "/var/lib/pezzottify"' in dockerfile

    # The variables are ones the server knows, with values it accepts.
    (tmp_path / "media").mkdir()
    environ = {**env, "PEZZOTTIFY_MEDIA_PATH": str(tmp_path / "media")}
    config = load_config(["--db-dir", str(tmp_path)], environ)
    assert config.job("backup").enabled
    assert config.job("backup").dir == Path(env["PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__DIR"])


def test_the_capacity_limit_beside_the_used_capacity_is_exported(tmp_path: Path) -> None:
    config = Config(
        db_dir=tmp_path, media_path=tmp_path, downloader_url="http://127.0.0.1:9",
        download_manager=DownloadManagerConfig(max_albums_per_hour=4, max_albums_per_day=30),
    )  # fmt: skip
    root = open_test_root(config)
    try:
        sample = root.metrics.registry.get_sample_value
        assert sample("pezzottify_download_capacity_limit", {"period": "hour"}) == 4
        assert sample("pezzottify_download_capacity_limit", {"period": "day"}) == 30
    finally:
        close_root(root)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make promtool` installs it (Debian's prometheus)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.process
def test_the_alert_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.process
def test_the_alerts_fire_when_they_should_and_not_otherwise(tmp_path: Path) -> None:
    """tests/daemon/alert_cases.yml, on the rules without their annotations (promtool would
    otherwise want each rendered text spelled out in the cases)."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ROOT / "tests" / "daemon" / "alert_cases.yml", tmp_path / "cases.yml")
    tested = promtool("test", "rules", str(tmp_path / "cases.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.process
def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, Grafana's variables given values, as a recording rule for promtool."""
    grafana = {"$__rate_interval": "5m", "$instance": ".*"}
    queries = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    rules = []
    for n, query in enumerate(queries):
        for variable, value in grafana.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{n}", "expr": query})
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    checked = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
