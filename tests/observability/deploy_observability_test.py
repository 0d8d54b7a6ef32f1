"""deploy/observability against a live samplerd and promtool: every series a rule, panel or variable uses is one a
real server exposes (with the labels the expression relies on), the rules parse and pass their unit tests, the
dashboard's queries parse, the PrometheusRule carries exactly the rules file's groups, and the ServiceMonitor
scrapes the Service deploy/k8s defines.

    SAMPLERD_BIN=build/service/samplerd /usr/bin/python3 -m pytest -q tests/observability/deploy_observability_test.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml

import samplerd as sd
from conftest import ROOT

OBS = os.path.join(ROOT, "deploy", "observability")
RULES = os.path.join(OBS, "alerts.rules.yml")
DASHBOARD = os.path.join(OBS, "grafana-dashboard.json")
# Labels Prometheus attaches at scrape time, and the histogram's bucket label.
SCRAPE_LABELS = {"job", "instance", "le"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$job": ".*"}


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(open(RULES))["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.load(open(DASHBOARD))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def exposed_series(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, from Prometheus text format."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        assert m, f"unparseable exposition line: {line!r}"
        labels = {kv.split("=", 1)[0] for kv in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*="[^"]*")', m.group(3) or "")}
        series.setdefault(m.group(1), set()).update(labels)
    return series


@pytest.fixture(scope="module")
def exposition(samplerd) -> str:
    """/metrics after accepted steps, a rejected step and a SIGHUP reload, so every labelled series exists."""
    with sd.Client(samplerd.target) as client:
        s = client.session(profile="fixed")
        s.step(np.linspace(-3, 3, 256, dtype=np.float32))
        with pytest.raises(sd.StepError):
            s.step(np.linspace(-3, 3, 256, dtype=np.float32), params={"top_p": 1.5})
    samplerd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = samplerd.get("/metrics").decode()
        if re.search(r'samplerd_config_reloads_total\{result="success"\} 1', text):
            return text
        time.sleep(0.1)
    raise AssertionError("the SIGHUP reload never showed in samplerd_config_reloads_total")


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_series_used_is_exposed_with_its_labels(exposition, source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    series = exposed_series(exposition)
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\b(samplerd_[a-z0-9_]+)\b", expr))
        assert names, f"an expression uses no samplerd series: {expr}"
        used |= names
        labels_here = set().union(*(series.get(n, set()) for n in names)) | SCRAPE_LABELS
        for name in names:
            assert name in series, f"{source}: {name} is not in a live server's /metrics ({expr})"
        for name, matchers in re.findall(r"\b(samplerd_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!~]", matchers):
                assert label in series[name] | SCRAPE_LABELS, f"{source}: {name} has no label {label} ({expr})"
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels_here, f"{source}: no series of {sorted(names)} has label {label} ({expr})"
    if source == "dashboard":  # the panels the issue asks for
        for name in [
            "samplerd_steps_total",
            "samplerd_step_errors_total",
            "samplerd_step_core_seconds_bucket",
            "samplerd_active_streams",
            "samplerd_max_streams",
            "samplerd_pending_request_bytes",
            "samplerd_max_pending_request_bytes",
            "samplerd_request_bytes_total",
            "samplerd_config_reloads_total",
        ]:
            assert name in used, f"no dashboard panel shows {name}"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed (Debian's prometheus package; scripts/install-deps.sh installs it)"
    return path


def test_rules_pass_promtool_check_and_unit_tests():
    for args in (["check", "rules", "alerts.rules.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([promtool(), *args], cwd=OBS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_dashboard_queries_parse(tmp_path):
    """Each panel query, with Grafana's variables filled in, as a recording rule promtool must accept."""
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue  # a Grafana variable query, not PromQL
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout


def test_prometheusrule_carries_the_rules_file():
    obj = yaml.safe_load(open(os.path.join(OBS, "prometheus-operator", "prometheusrule.yaml")))
    assert obj["kind"] == "PrometheusRule"
    assert obj["spec"]["groups"] == yaml.safe_load(open(RULES))["groups"]


def test_servicemonitor_scrapes_the_samplerd_service():
    monitor = yaml.safe_load(open(os.path.join(OBS, "prometheus-operator", "servicemonitor.yaml")))
    service = yaml.safe_load(open(os.path.join(ROOT, "deploy", "k8s", "base", "service.yaml")))
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
