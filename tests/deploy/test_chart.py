"""The Helm chart: `helm lint --strict` and `helm template | kubeconform -strict` (Kubernetes 1.34
schemas) for the default values and the production example, plus what the schemas cannot see:
the gateway's config renders into a file the gateway loads, the Prometheus Operator resources
carry the alert rules promtool accepts, and the chart's own checks refuse broken values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import config as config_mod
from tests.deploy.tools import CHART, KUBE_VERSION, TOOLS, helm_env, run, tool

PRODUCTION = CHART / "ci" / "production-values.yaml"
SCHEMAS = TOOLS / "kubernetes-schemas"
CASES = {"default": [], "production": ["-f", str(PRODUCTION)]}


def _template(tmp_path: Path, values: list[str], check: bool = True) -> Any:
    return run([tool("helm"), "template", "tg", str(CHART), "--kube-version", KUBE_VERSION, *values],
               env=helm_env(tmp_path), check=check)


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(case: str, tmp_path: Path) -> None:
    out = run([tool("helm"), "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), *CASES[case]],
              env=helm_env(tmp_path))
    assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_template_kubeconform_strict(case: str, tmp_path: Path) -> None:
    if not (SCHEMAS / f"v{KUBE_VERSION}-local-strict").is_dir():
        pytest.fail(f"kubeconform schemas missing in {SCHEMAS}; run `bash deploy/tools/up`", pytrace=False)
    rendered = _template(tmp_path, CASES[case]).stdout
    location = str(SCHEMAS) + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/" \
        "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    # ServiceMonitor and PrometheusRule are CRDs without schemas here: checked below instead.
    out = run([tool("kubeconform"), "-strict", "-summary", "-output", "text",
               "-kubernetes-version", KUBE_VERSION, "-schema-location", location,
               "-skip", "ServiceMonitor,PrometheusRule", "-"],
              stdin=rendered.encode())
    assert "Invalid: 0, Errors: 0" in out.stdout, out.stdout
    kinds = {d["kind"] for d in _docs(rendered)}
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    if case == "production":
        expected |= {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"}
    assert expected <= kinds, f"missing {expected - kinds}"


def test_default_config_is_one_the_gateway_loads(tmp_path: Path) -> None:
    docs = _docs(_template(tmp_path, []).stdout)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = config_mod.load(path, env={})
    assert cfg.bus.kind == "kafka"
    assert cfg.spool.mode == "off", "no spool unless spool.enabled"
    deploy = next(d for d in docs
                  if d["kind"] == "Deployment" and d["metadata"]["name"] == "tg-telemetry-gateway")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"otlp-grpc": cfg.server.grpc_port, "otlp-http": cfg.server.http_port,
                     "admin": cfg.admin.port}
    workers = next(e for e in container["env"] if e["name"] == "TG_SERVER__WORKERS")
    assert workers["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"] + 15
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_production_config_is_one_the_gateway_loads(tmp_path: Path) -> None:
    """The production example's config (TLS at the edge, Kafka SASL_SSL) under the gateway's own
    loader, with the environment its Secrets give the pod."""
    docs = _docs(_template(tmp_path, ["-f", str(PRODUCTION)]).stdout)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    deploy = next(d for d in docs
                  if d["kind"] == "Deployment" and d["metadata"]["name"] == "tg-telemetry-gateway")
    env_names = {e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    cfg = config_mod.load(path, env={"TG_AUTH__API_KEYS": "{some-key: acme}"})
    k = cfg.bus.kafka
    assert (k.security_protocol, k.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert k.sasl_password_env in env_names, "the password variable the config names is set from a Secret"
    assert cfg.server.tls.cert_file == "/etc/telemetry-gateway/tls/tls.crt"
    assert cfg.server.tls.reload_interval_s == 300
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "spool")
    assert "ephemeral" in volume, "a spool volume of its own per pod"
    mount = next(m for m in deploy["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == "spool")
    assert (cfg.spool.mode, cfg.spool.dir) == ("on_failure", mount["mountPath"])


def test_production_rules_and_monitors(tmp_path: Path) -> None:
    docs = _docs(_template(tmp_path, CASES["production"]).stdout)
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    run([tool("promtool"), "check", "rules", str(rules_file)])
    text = rules_file.read_text()
    assert "telemetry-gateway.example" not in text and "git.example.com" in text, "runbookBaseUrl not applied"
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"admin", "metrics"}
    jobs = {d["metadata"]["labels"].get(monitor["spec"]["jobLabel"]) for d in docs if d["kind"] == "Service"}
    assert {"telemetry-gateway", "telemetry-gateway-pipelines"} <= jobs
    sinks = sorted(d["metadata"]["name"] for d in docs
                   if d["kind"] == "Deployment" and "pipelines" in d["metadata"]["name"])
    assert sinks == ["tg-telemetry-gateway-pipelines-elasticsearch", "tg-telemetry-gateway-pipelines-jaeger",
                     "tg-telemetry-gateway-pipelines-prometheus"]
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    dashboards = [d for d in docs
                  if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard")]
    assert len(dashboards) == 2


@pytest.mark.parametrize(("values", "message"), [
    (["--set", "pipelines.sinks.jaeger.enabled=true", "--set", "pipelines.sinks.jaeger.replicas=7"],
     "exceeds the topics' partitions"),
    (["--set", "gateway.terminationGracePeriodSeconds=10"], "must exceed preStopSleepSeconds + drainSeconds"),
    (["--set", "tls.enabled=true"], "tls.enabled needs tls.secretName"),
])
def test_chart_refuses_broken_values(values: list[str], message: str, tmp_path: Path) -> None:
    out = _template(tmp_path, values, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
