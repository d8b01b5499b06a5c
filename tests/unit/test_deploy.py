"""The Kubernetes manifests and the image, checked offline: every overlay built with
kustomize (``kubectl kustomize``) and validated against the Kubernetes schemas, and held to
what the code expects (commands, ports, health paths, settings names, topics, groups)."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mailintake_shared.settings import ENV_PREFIX, Settings
from mailintake_shared.topics import TOPIC_SPECS, Topic, topic_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"
BUILDS = ("overlays/dev", "overlays/production", "examples/external")
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor"}  # CRDs: checked below, not by the schemas
DEFAULT_PREFIX = Settings.model_fields["topic_prefix"].default


def console_scripts() -> set[str]:
    names: set[str] = set()
    for pyproject in [ROOT / "shared/pyproject.toml", *ROOT.glob("services/*/pyproject.toml")]:
        names |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return names


def kustomize(tmp_path: Path, build: str) -> list[dict[str, Any]]:
    tool = shutil.which("kubectl") or shutil.which("kustomize")
    if tool is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    tree = tmp_path / "deploy"
    shutil.copytree(DEPLOY, tree)
    example = tree / "overlays/dev/secrets.env.example"
    (tree / "overlays/dev/secrets.env").write_text(example.read_text())
    args = (
        [tool, "kustomize", str(tree / build)]
        if tool.endswith("kubectl")
        else [tool, "build", str(tree / build)]
    )
    built = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc]


@pytest.fixture(scope="module", params=BUILDS)
def manifests(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return kustomize(tmp_path_factory.mktemp("kustomize"), request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_every_resource_is_valid_for_kubernetes(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_deployments_run_what_the_code_provides(manifests: list[dict[str, Any]]) -> None:
    scripts = console_scripts()
    settings = {k: v for doc in of_kind(manifests, "ConfigMap") for k, v in doc["data"].items()}
    port = int(settings["MAILINTAKE_HTTP_PORT"])
    deployments = of_kind(manifests, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {
        f"mailintake-{s}" for s in ("config-api", "scheduler", "fetcher", "store", "watcher")
    }
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in of_kind(manifests, "PodDisruptionBudget")
    }
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][0] in scripts, container["command"]
        assert (Path(sys.executable).parent / container["command"][0]).exists()
        assert container["ports"] == [{"containerPort": port, "name": "http"}]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert set(container["resources"]) == {"requests", "limits"}
        assert name in budgets
    fetcher = next(d for d in deployments if d["metadata"]["name"] == "mailintake-fetcher")
    grace = fetcher["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings.model_fields["poll_max_seconds"].default
    (job,) = of_kind(manifests, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["mailintake-migrate"]


def test_every_setting_named_is_a_setting(manifests: list[dict[str, Any]]) -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    named = {k for doc in of_kind(manifests, "ConfigMap") for k in doc["data"]}
    named |= {k for doc in of_kind(manifests, "Secret") for k in doc.get("data", {})}
    example = (DEPLOY / "overlays/dev/secrets.env.example").read_text()
    named |= set(re.findall(r"^(MAILINTAKE_\w+)=", example, re.MULTILINE))
    assert named - known == set()
    Settings(
        **{  # and each value is one the settings accept
            k.removeprefix(ENV_PREFIX).lower(): v
            for doc in of_kind(manifests, "ConfigMap")
            for k, v in doc["data"].items()
            if k.startswith(ENV_PREFIX)
        }
    )


def test_production_trusts_the_ingress_for_client_addresses(tmp_path: Path) -> None:
    """Behind an ingress, the failed-authentication limit and the audit log need each
    client's own address: the overlay names the proxies whose X-Forwarded-For counts."""
    docs = kustomize(tmp_path, "overlays/production")
    settings = {k: v for doc in of_kind(docs, "ConfigMap") for k, v in doc["data"].items()}
    trusted = settings["MAILINTAKE_API_FORWARDED_ALLOW_IPS"].split(",")
    assert "*" not in trusted
    for entry in trusted:
        ipaddress.ip_network(entry)  # what uvicorn's proxy headers middleware accepts


def test_autoscaling_and_scraping_point_at_what_exists(manifests: list[dict[str, Any]]) -> None:
    for scaled in of_kind(manifests, "ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] == "mailintake-fetcher"
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "kafka":  # the fetchers' group on the topic they consume
                assert trigger["metadata"]["consumerGroup"] == f"{DEFAULT_PREFIX}fetcher"
                assert trigger["metadata"]["topic"] == topic_name(DEFAULT_PREFIX, Topic.POLL_DUE)
    for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == "mailintake-fetcher"
    assert (
        len(of_kind(manifests, "ScaledObject") + of_kind(manifests, "HorizontalPodAutoscaler")) == 1
    )
    for monitor in of_kind(manifests, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = of_kind(manifests, "Service")
        assert len(services) == 5
        assert all(selector.items() <= s["metadata"]["labels"].items() for s in services)
        assert all(any(p["name"] == "http" for p in s["spec"]["ports"]) for s in services)


def test_the_strimzi_topics_are_the_topics_of_the_code() -> None:
    docs = [
        d
        for d in yaml.safe_load_all((DEPLOY / "examples/strimzi/kafka-topics.yaml").read_text())
        if d
    ]
    declared = {d["spec"]["topicName"]: d["spec"]["config"] for d in docs}
    expected = {topic_name(DEFAULT_PREFIX, spec.topic): spec.configs() for spec in TOPIC_SPECS}
    assert set(declared) == set(expected)
    for name, configs in expected.items():
        assert {k: str(v) for k, v in declared[name].items() if k in configs} == configs


def test_the_examples_are_valid_for_kubernetes() -> None:
    policy = yaml.safe_load((DEPLOY / "examples/cloudnativepg/network-policy.yaml").read_text())
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    cluster = yaml.safe_load((DEPLOY / "examples/cloudnativepg/cluster.yaml").read_text())
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "mailintake"


def test_the_image_is_lint_clean_and_runs_the_services_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)
    assert "uv sync --frozen --no-dev" in dockerfile  # the lock file's versions, nothing else
    assert re.search(r"^HEALTHCHECK .*/healthz", dockerfile, re.MULTILINE | re.DOTALL)
    command = re.search(r'^CMD \["([\w-]+)"\]', dockerfile, re.MULTILINE)
    assert command is not None
    assert command.group(1) in console_scripts()


def test_the_dashboard_queries_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana/mailintake-dashboard.json").read_text())
    sources = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")]
    defined = {m for path in sources for m in re.findall(r'"(mailintake_\w+)"', path.read_text())}
    queried = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(mailintake_\w+)", target["expr"])
    }
    assert queried
    assert queried - defined == set()


def test_the_production_secret_example_names_settings_and_is_valid() -> None:
    secret = yaml.safe_load((DEPLOY / "overlays/production/secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(secret["stringData"]) <= known
