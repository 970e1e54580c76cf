"""The Prometheus config, alert rules and Grafana dashboard in deploy/ are valid, fire when they
should (promtool's own rule tests) and name only metrics the services really expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.support import metric_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fama-operations.json"
METRIC = re.compile(r"\b(?:fama|http)_[a-z_]+\b")
# What ops asked to be alerted on (issue 17).
REQUIRED_ALERTS = {"FamaOutboxBacklogOld", "FamaOutboxBacklogGrowing", "FamaQueueLengthHigh", "FamaRemindersOverdue",
                   "FamaReminderSendFailures", "FamaEventsRefused", "FamaCallbackErrors", "FamaServiceDown"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run `make tools` (Debian package prometheus)"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Every metric name the three services' /metrics declare, plus Prometheus's own ``up``."""
    return {"up"} | {name for service in ("directory", "referrals", "notifications") for name in metric_names(service)}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_promtool_accepts_the_alert_rules_and_the_scrape_config():
    checked = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout


def test_alerts_fire_on_failures_and_stay_quiet_when_healthy():
    result = promtool("test", "rules", str(ROOT / "tests" / "ops" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_ops_asked_for_exists_with_a_severity_and_a_summary():
    alerts = {rule["alert"]: rule for rule in rules()}
    assert REQUIRED_ALERTS <= alerts.keys()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_alerts_name_only_metrics_the_services_expose(exposed):
    named = {m for rule in rules() for m in METRIC.findall(rule["expr"])}
    assert named, "no metric found in the alert rules"
    assert named - exposed == set()


def test_the_dashboard_is_json_whose_queries_are_promql_over_exposed_metrics(exposed, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    queries = dashboard_queries()
    assert len(queries) >= 15
    named = {m for q in queries for m in METRIC.findall(q)}
    assert named - exposed == set()
    # What the brief asked ops to see is on the dashboard.
    for wanted in ("fama_outbox_unrelayed", "fama_outbox_oldest_unrelayed_age_seconds", "fama_outbox_unconfirmed",
                   "fama_inbox_lag_seconds_bucket", "fama_queue_length", "fama_reminders_overdue",
                   "fama_reminders_overdue_oldest_age_seconds", "fama_reminder_failures_total", "fama_opt_outs_total",
                   "fama_callbacks_total", "fama_events_refused_total"):
        assert wanted in named, wanted
    # Each query parses as PromQL: promtool checks them as recording rules.
    records = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": q}
                                                           for i, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(records))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_each_api_where_compose_runs_it():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in ("directory", "referrals", "notifications"):
        command = compose[f"{service}-api"]["command"]
        assert targets[service] == [f"{service}-api:{command[command.index('--port') + 1]}"]
