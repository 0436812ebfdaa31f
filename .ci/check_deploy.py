#!/usr/bin/env python3
"""Checks deploy/ and the Dockerfile with the real tools, as far as this machine allows.

Run by .ci/run (with PyYAML and kubernetes-validate pinned in its venv, and kubectl on PATH):

- Kubernetes: `kubectl kustomize` renders the base and the prometheus-operator overlay; every
  object is validated against the Kubernetes schemas by kubernetes-validate (--strict), on the
  oldest and newest versions below; the Deployment keeps to Pod Security "restricted", pins its
  image, has probes, requests and limits, and a grace period longer than the shutdown grace;
  the ServiceMonitor selects the Service by its labels and a port it has.
- The PrometheusRule of the overlay is alerts.yml: the checked-in file is what generate.sh
  writes now, and its rendered `spec.groups` equal alerts.yml's `groups`.
- Compose: the file parses; its services are the stack's five, images pinned, build targets
  present in the Dockerfile, every file it mounts exists.
- The Dockerfile and .dockerignore: a dependency layer (cargo-chef), OCI labels, a non-root
  user in the final stages, target/ and .git kept out of the context, and no development
  target in the rolesync image (no config/default.toml: serve must fail without a target).
- The Grafana dashboard: at least 8 panels, the datasource a variable every panel uses.

Docker cannot run here, so no image is built: the structure is what is checked.
Exit status 1 with every problem listed, 0 when all hold.
"""

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "prometheus-operator"
# The oldest Kubernetes version still commonly run, and kubernetes-validate's newest.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def kustomize(path: Path) -> list[dict]:
    out = run(["kubectl", "kustomize", str(path)])
    if out.returncode != 0:
        problem(f"kubectl kustomize {path.relative_to(ROOT)} failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(path: Path, docs: list[dict]) -> None:
    builtin = [d for d in docs if "monitoring.coreos.com" not in d.get("apiVersion", "")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(builtin, f)
    for version in K8S_VERSIONS:
        out = run(["kubernetes-validate", "--strict", "--quiet", "-k", version, f.name])
        if out.returncode != 0:
            problem(
                f"kubernetes-validate ({version}) refuses {path.relative_to(ROOT)}:\n"
                f"{out.stdout.strip()}\n{out.stderr.strip()}"
            )
    Path(f.name).unlink()


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        problem(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def check_base(docs: list[dict]) -> None:
    kinds = {d["kind"] for d in docs}
    for kind in [
        "Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
        "ServiceAccount", "NetworkPolicy",
    ]:
        if kind not in kinds:
            problem(f"base: no {kind}")
    dep = one(docs, "Deployment")
    if not dep:
        return
    spec = dep["spec"]
    if spec.get("replicas") != 2:
        problem("Deployment: replicas is not 2")
    pod = spec["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem("pod securityContext: runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem("pod securityContext: seccompProfile is not RuntimeDefault")
    if not pod.get("topologySpreadConstraints"):
        problem("Deployment: no topologySpreadConstraints")
    (c,) = pod["containers"]
    image = c.get("image", "")
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag or tag == "latest":
        problem(f"Deployment: image {image!r} is not pinned by version")
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False:
        problem("container: allowPrivilegeEscalation is not false")
    if csc.get("readOnlyRootFilesystem") is not True:
        problem("container: readOnlyRootFilesystem is not true")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        problem("container: capabilities.drop is not [ALL]")
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
        if probe not in c:
            problem(f"container: no {probe}")
    res = c.get("resources", {})
    for side in ["requests", "limits"]:
        for r in ["cpu", "memory"]:
            if r not in res.get(side, {}):
                problem(f"container: no resources.{side}.{r}")
    tmp_mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    if not tmp_mounts or "emptyDir" not in vols.get(tmp_mounts[0]["name"], {}):
        problem("container: uploads spool to /tmp, which is not an emptyDir")
    # The grace period covers the service's own shutdown grace.
    cm = one(docs, "ConfigMap")
    toml_text = next(iter(cm.get("data", {}).values()), "") if cm else ""
    try:
        grace = tomllib.loads(toml_text).get("server", {}).get("shutdown_grace_secs", 20)
    except tomllib.TOMLDecodeError as e:
        problem(f"ConfigMap: rolesync.toml does not parse: {e}")
        grace = 20
    if pod.get("terminationGracePeriodSeconds", 30) <= grace:
        problem(
            f"Deployment: terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')}"
            f" is not longer than server.shutdown_grace_secs {grace}"
        )


def check_overlay(docs: list[dict]) -> None:
    svc = one(docs, "Service")
    sm = one(docs, "ServiceMonitor")
    rule = one(docs, "PrometheusRule")
    if svc and sm:
        labels = svc["metadata"].get("labels", {})
        wanted = sm["spec"]["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in wanted.items()):
            problem(f"ServiceMonitor selects {wanted}, the Service has {labels}")
        ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in ports:
                problem(f"ServiceMonitor scrapes port {ep.get('port')!r}; the Service has {ports}")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    if rule and rule.get("spec", {}).get("groups") != alerts["groups"]:
        problem("PrometheusRule: spec.groups differ from deploy/prometheus/alerts.yml")
    # The checked-in PrometheusRule is what the generator writes now.
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "prometheusrule.yaml"
        gen = run(["bash", str(OVERLAY / "generate.sh"), str(out)])
        if gen.returncode != 0:
            problem(f"generate.sh failed: {gen.stderr.strip()}")
        elif out.read_text() != (OVERLAY / "prometheusrule.yaml").read_text():
            problem(
                "deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml is stale: "
                "run its generate.sh"
            )


def dockerfile_stages(text: str) -> dict[str, str]:
    """Stage name -> the stage's text."""
    stages: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            name = m.group(1) or f"stage{len(stages)}"
            stages[name] = ""
        if name:
            stages[name] += line + "\n"
    return stages


def check_dockerfile() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    stages = dockerfile_stages(text)
    if "cargo chef cook" not in text:
        problem("Dockerfile: no dependency layer (cargo chef cook)")
    for label in ["org.opencontainers.image.title", "org.opencontainers.image.version",
                  "org.opencontainers.image.revision"]:
        if label not in text:
            problem(f"Dockerfile: no {label} label")
    final = list(stages)[-1] if stages else ""
    for stage in {final, "emulator"}:
        users = re.findall(r"^USER\s+(\S+)", stages.get(stage, ""), re.MULTILINE)
        if not users or users[-1].split(":")[0] in {"0", "root"}:
            problem(f"Dockerfile: stage {stage!r} does not run as a non-root user")
    # The rolesync image must name no target: a config file holding the development [target]
    # (config/default.toml) passed as --config would count as configured, and the image would
    # start against the emulator address instead of failing clearly.
    if re.search(r"default\.toml", stages.get(final, "")):
        problem("Dockerfile: the rolesync image ships or uses config/default.toml (a development [target])")
    for line in text.splitlines():
        if re.match(r"^FROM\s+\S+:latest\b", line):
            problem(f"Dockerfile: unpinned base image: {line}")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needed in ["target/", ".git/"]:
        if needed not in ignore:
            problem(f".dockerignore: {needed} is not ignored")
    return set(stages)


def check_compose(stages: set[str]) -> None:
    path = DEPLOY / "compose.yaml"
    compose = yaml.safe_load(path.read_text())
    services = compose.get("services", {})
    expected = {"rolesync", "postgres", "emulator", "prometheus", "grafana"}
    if set(services) != expected:
        problem(f"compose: services {sorted(services)}, expected {sorted(expected)}")
    for name, svc in services.items():
        image = svc.get("image", "")
        if ":" not in image or image.endswith(":latest"):
            problem(f"compose: service {name} image {image!r} is not pinned by version")
        build = svc.get("build")
        if build:
            if (path.parent / build["context"] / build.get("dockerfile", "Dockerfile")).exists() is False:
                problem(f"compose: service {name} builds from a missing Dockerfile")
            if build.get("target") not in stages:
                problem(f"compose: service {name} builds target {build.get('target')!r}, not a Dockerfile stage")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith(".") and not (path.parent / src).exists():
                problem(f"compose: service {name} mounts {src}, which does not exist")
    if services.get("rolesync", {}).get("build", {}).get("target") != "runtime":
        problem("compose: rolesync is not built from the Dockerfile's runtime stage")
    prom_mounts = " ".join(services.get("prometheus", {}).get("volumes", []))
    if "alerts.yml" not in prom_mounts:
        problem("compose: Prometheus is not loaded with alerts.yml")
    graf_mounts = " ".join(services.get("grafana", {}).get("volumes", []))
    for needed in ["provisioning/datasources", "provisioning/dashboards", "rolesync.json"]:
        if needed not in graf_mounts:
            problem(f"compose: Grafana does not mount {needed}")
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = [s["job_name"] for s in prom.get("scrape_configs", [])]
    if "rolesync" not in jobs:
        problem("deploy/prometheus/prometheus.yml: no scrape job named rolesync (the alerts expect it)")


def check_dashboard() -> None:
    dash = json.loads((DEPLOY / "grafana" / "rolesync.json").read_text())
    panels = dash.get("panels", [])
    if len(panels) < 8:
        problem(f"dashboard: {len(panels)} panels, at least 8 wanted")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problem("dashboard: no datasource variable")
    for p in panels:
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"dashboard: panel {p.get('title')!r} does not use the datasource variable")
        if not p.get("targets"):
            problem(f"dashboard: panel {p.get('title')!r} has no query")


def main() -> int:
    base = kustomize(BASE)
    validate(BASE, base)
    check_base(base)
    overlay = kustomize(OVERLAY)
    validate(OVERLAY, overlay)
    check_overlay(overlay)
    stages = check_dockerfile()
    check_compose(stages)
    check_dashboard()
    if problems:
        for p in problems:
            print(f"deploy check: {p}", file=sys.stderr)
        return 1
    print(f"deploy check: ok (base {len(base)} objects, overlay {len(overlay)} objects, "
          f"Kubernetes {', '.join(K8S_VERSIONS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
