"""The Kubernetes manifests (deploy/k8s), checked offline.

Each kustomization is rendered with ``kustomize build`` or ``kubectl kustomize`` where one is
installed, else assembled here following kustomize's rules for what the manifests use
(resources, namespace, images, patches); where a binary is installed the two renderings must
agree. Every object is validated against the Kubernetes API schemas (kubernetes-validate); KEDA's
objects, which those schemas do not cover, are checked field by field.
"""

from __future__ import annotations

import copy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fama.cli import settings_table
from shared import queues
from tests.test_deploy import OWN_SECRETS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "example": K8S / "overlays" / "example"}
KUBERNETES_VERSION = "1.33.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass", "PersistentVolume"}
WORKLOADS = ("Deployment", "Job")
# Read by KEDA's TriggerAuthentication only (the same password is inside REDIS_URL).
KEDA_ONLY = {"REDIS_PASSWORD"}


# --- rendering ---------------------------------------------------------------------------------


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_with_binary(path: Path) -> list[dict]:
    result = subprocess.run([*kustomize_binary(), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def merge(target: dict, patch: dict) -> dict:
    """A merge patch (RFC 7386), which is what a strategic merge patch does to maps."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def pod_specs(obj: dict) -> list[dict]:
    template = obj.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []


def assemble(path: Path) -> list[dict]:
    """kustomize build, for the fields these kustomizations use (anything else is refused)."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    assert not unknown, f"{path}: the offline renderer does not know {sorted(unknown)}"
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        target = path / resource
        if target.is_dir():
            objects += assemble(target)
        else:
            objects += [d for d in yaml.safe_load_all(target.read_text()) if d]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{path}: only patch files are supported offline: {patch}"
        body = yaml.safe_load((path / patch["path"]).read_text())
        hits = [o for o in objects if (o["kind"], o["metadata"]["name"]) == (body["kind"], body["metadata"]["name"])]
        assert len(hits) == 1, f"{path}: patch {patch['path']} matches {len(hits)} objects"
        merge(hits[0], {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")})
    for image in kustomization.get("images", []):
        for obj in objects:
            for spec in pod_specs(obj):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        tag = image.get("newTag", tag)
                        container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def by_key(objects: list[dict]) -> dict[tuple[str, str], dict]:
    keyed = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request) -> dict[tuple[str, str], dict]:
    path = KUSTOMIZATIONS[request.param]
    assembled = by_key(assemble(path))
    if kustomize_binary():
        built = by_key(render_with_binary(path))
        assert built == assembled, "kustomize renders something else than the offline renderer"
    return assembled


def of_kind(objects: dict, kind: str) -> dict[str, dict]:
    return {name: obj for (k, name), obj in objects.items() if k == kind}


def container_of(obj: dict) -> dict:
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    return container


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, command in (line.split(":", 1) for line in lines if line.strip())}


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def service_of(name: str) -> str:
    return name.partition("-")[0]


# --- what the tests check ------------------------------------------------------------------------


def test_every_process_of_the_procfile_has_a_deployment_running_it(rendered):
    deployments = of_kind(rendered, "Deployment")
    assert set(procfile()) == set(deployments), "one Deployment per process, no more"
    for name, local in procfile().items():
        command = container_of(deployments[name])["command"]
        if local[0] == "uvicorn":
            assert command[:2] == local[:2], name
            assert "--proxy-headers" in command, f"{name} sits behind a proxy"
        elif local[0] == "celery":
            assert command[:4] == local[:4] and option(command, "-Q") == option(local, "-Q"), name
            assert option(command, "-n") == option(local, "-n"), name
        else:
            assert command == local, name


def test_schedulers_run_exactly_one_replica_and_never_two_during_a_rollout(rendered):
    schedulers = {n: d for n, d in of_kind(rendered, "Deployment").items() if n.endswith("-scheduler")}
    assert set(schedulers) == {f"{s}-scheduler" for s in queues.SERVICES}
    for name, deployment in schedulers.items():
        assert deployment["spec"]["replicas"] == 1, name
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, name
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in of_kind(rendered, "ScaledObject").values()}
    assert not scaled & set(schedulers), "a scheduler is never autoscaled"


def test_apis_are_probed_on_healthz_and_readyz_and_workers_by_celery_ping(rendered):
    for name, deployment in of_kind(rendered, "Deployment").items():
        container = container_of(deployment)
        if name.endswith("-api"):
            port = container["ports"][0]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"]), name
            assert f"--port {port['containerPort']}" in " ".join(container["command"]), name
        elif name.endswith(("-worker", "-sender")):
            probe = " ".join(container["livenessProbe"]["exec"]["command"])
            node = option(container["command"], "-n").split("@")[0]
            app = option(container["command"], "-A")
            assert f"celery -A {app} inspect ping -d {node}@$HOSTNAME" in probe, name


def test_every_container_asks_for_resources_and_has_limits(rendered):
    for (kind, name), obj in rendered.items():
        if kind not in WORKLOADS:
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), f"{kind} {name}: {part}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_each_service_has_a_migration_job_applied_before_its_deployments(rendered):
    jobs = of_kind(rendered, "Job")
    assert set(jobs) == {f"{s}-migrate" for s in queues.SERVICES}
    for service in queues.SERVICES:
        job = jobs[f"{service}-migrate"]
        assert container_of(job)["command"] == ["fama", service, "migrate"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
        assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    # apply.sh: the config and the Jobs first, waits for the Jobs to complete, then the rest.
    script = (K8S / "apply.sh").read_text()
    first = script.index("kubectl apply -k \"$overlay\" -l \"$first\"")
    wait = script.index("kubectl wait --for=condition=complete")
    rest = script.index("kubectl apply -k \"$overlay\"\n")
    assert first < wait < rest
    assert "first='app.kubernetes.io/component in (config,migration)'" in script
    for (kind, _), obj in rendered.items():
        if kind in ("ConfigMap", "Secret"):
            assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "config", "applied first"


def secret_refs(obj: dict) -> set[str]:
    refs = set()
    for spec in pod_specs(obj):
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            refs |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
            refs |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})}
        refs |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    return refs


def test_each_workload_mounts_only_its_own_services_secret(rendered):
    checked = 0
    for (kind, name), obj in rendered.items():
        if kind in WORKLOADS:
            assert secret_refs(obj) == {f"{service_of(name)}-secrets"}, f"{kind} {name}"
            checked += 1
    assert checked == len(procfile()) + 3


def test_each_services_secret_holds_its_own_secrets_as_compose_gives_them(rendered):
    secrets = of_kind(rendered, "Secret")
    assert set(secrets) == {f"{s}-secrets" for s in queues.SERVICES}
    for service in queues.SERVICES:
        keys = set(secrets[f"{service}-secrets"].get("stringData", {})) | set(secrets[f"{service}-secrets"].get("data", {}))
        extra = keys - OWN_SECRETS[service] - {"REDIS_URL"} - KEDA_ONLY
        assert not extra, f"{service} would hold {sorted(extra)}"
        needed = {"REDIS_URL", "JWT_SECRET", f"{service.upper()}_DATABASE_URL", f"{service.upper()}_ENCRYPTION_KEYS",
                  "DIRECTORY_EVENT_KEYS", "REFERRALS_EVENT_KEYS", "NOTIFICATIONS_EVENT_KEYS"}
        assert needed <= keys, f"{service} lacks {sorted(needed - keys)}"
    assert "CONTACT_TRANSIT_KEYS" not in secrets["directory-secrets"]["stringData"], "the directory never opens a contact"
    assert "CONTACT_TRANSIT_KEYS" in secrets["notifications-secrets"]["stringData"]


def test_config_and_secrets_set_only_settings_the_services_read(rendered):
    """A misspelt key would silently fall back to a default."""
    known = {row[0] for row in settings_table()} | {"FORWARDED_ALLOW_IPS"}
    (config,) = of_kind(rendered, "ConfigMap").values()
    assert not set(config["data"]) - known, sorted(set(config["data"]) - known)
    assert config["data"]["FAMA_ENV"] == "production"
    for name, secret in of_kind(rendered, "Secret").items():
        unknown = set(secret["stringData"]) - known - KEDA_ONLY
        assert not unknown, f"{name}: {sorted(unknown)}"
    for (kind, name), obj in rendered.items():
        if kind in WORKLOADS:
            assert {"configMapRef": {"name": "fama-config"}} in container_of(obj)["envFrom"], name


def test_each_worker_scales_on_its_own_queue_with_kedas_redis_list_scaler(rendered):
    (config,) = of_kind(rendered, "ConfigMap").values()
    prefix = config["data"].get("REDIS_KEY_PREFIX", "")
    expected = {f"{s}-worker": queues.events_queue(s) for s in queues.SERVICES}
    expected["notifications-sender"] = queues.NOTIFICATIONS_SEND
    deployments, scaled = of_kind(rendered, "Deployment"), of_kind(rendered, "ScaledObject")
    auths, secrets = of_kind(rendered, "TriggerAuthentication"), of_kind(rendered, "Secret")
    targets = {o["spec"]["scaleTargetRef"]["name"]: o for o in scaled.values()}
    assert set(targets) == set(expected), "one ScaledObject per worker"
    for worker, queue in expected.items():
        assert option(container_of(deployments[worker])["command"], "-Q") == queue, worker
        (trigger,) = targets[worker]["spec"]["triggers"]
        assert trigger["type"] in ("redis", "redis-sentinel"), worker
        assert trigger["metadata"]["listName"] == f"{prefix}{queue}", f"{worker} watches another list"
        assert int(trigger["metadata"]["listLength"]) > 0
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == f"{service_of(worker)}-secrets", f"{worker} reads another service's secret"
            assert ref["key"] in secrets[ref["name"]]["stringData"], ref
        assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password"}


def test_every_api_has_a_service_reaching_its_pods(rendered):
    services, deployments = of_kind(rendered, "Service"), of_kind(rendered, "Deployment")
    assert set(services) == {f"{s}-api" for s in queues.SERVICES}
    for name, service in services.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        port_names = {p["name"] for p in container_of(deployments[name])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, name


# --- schemas -------------------------------------------------------------------------------------


KEDA = {
    "ScaledObject": {"required": {"scaleTargetRef", "triggers"},
                     "allowed": {"scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                                 "cooldownPeriod", "idleReplicaCount", "fallback", "advanced"}},
    "TriggerAuthentication": {"required": set(), "allowed": {"secretTargetRef", "env", "hashiCorpVault",
                                                             "podIdentity", "azureKeyVault"}},
}
REDIS_TRIGGER_METADATA = {"address", "addresses", "host", "hosts", "port", "ports", "listName", "listLength",
                          "activationListLength", "databaseIndex", "enableTLS", "sentinelMaster", "usernameFromEnv",
                          "passwordFromEnv", "addressFromEnv", "hostFromEnv", "portFromEnv"}


def check_keda(obj: dict) -> list[str]:
    """KEDA's CRDs are not in kubernetes-validate's schemas: the fields FAMA uses, checked by hand."""
    kind, spec = obj["kind"], obj.get("spec", {})
    problems = []
    if obj["apiVersion"] != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {obj['apiVersion']}")
    if not obj.get("metadata", {}).get("name"):
        problems.append("no name")
    rules = KEDA[kind]
    problems += [f"missing {f}" for f in rules["required"] - set(spec)]
    problems += [f"unknown field {f}" for f in set(spec) - rules["allowed"]]
    if kind == "ScaledObject":
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            problems.append(f"replica bounds {low}..{high}")
        if not spec.get("scaleTargetRef", {}).get("name"):
            problems.append("scaleTargetRef has no name")
        for trigger in spec.get("triggers", []):
            metadata = trigger.get("metadata", {})
            if not all(isinstance(v, str) for v in metadata.values()):
                problems.append("trigger metadata values must be strings")
            problems += [f"unknown redis trigger field {f}" for f in set(metadata) - REDIS_TRIGGER_METADATA]
            if not {"listName", "listLength"} <= set(metadata):
                problems.append("a redis list trigger needs listName and listLength")
    else:
        for ref in spec.get("secretTargetRef", []):
            if set(ref) != {"parameter", "name", "key"}:
                problems.append(f"secretTargetRef {ref}")
    return problems


def test_every_object_is_valid_for_kubernetes(rendered):
    import kubernetes_validate  # dev dependency: pip install kubernetes-validate

    kinds = set()
    for (kind, name), obj in rendered.items():
        kinds.add(kind)
        if obj["apiVersion"].startswith("keda.sh/"):
            assert check_keda(obj) == [], f"{kind} {name}"
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{kind} {name}: {exc.message} at {list(exc.path)}") from exc
    assert {"Deployment", "Job", "Service", "ConfigMap", "Secret", "ScaledObject", "TriggerAuthentication"} <= kinds


def test_the_validators_refuse_a_broken_manifest(rendered):
    """The checks above can fail: a misspelt field, a missing listName."""
    import kubernetes_validate

    deployment = copy.deepcopy(of_kind(rendered, "Deployment")["directory-api"])
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(of_kind(rendered, "ScaledObject")["directory-worker"])
    del scaled["spec"]["triggers"][0]["metadata"]["listName"]
    scaled["spec"]["minReplica"] = 1
    assert len(check_keda(scaled)) == 2


def test_the_example_overlay_sets_the_namespace_and_the_image():
    objects = by_key(assemble(KUSTOMIZATIONS["example"]))
    for (kind, name), obj in objects.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "fama-example", f"{kind} {name}"
        for spec in pod_specs(obj):
            assert {c["image"] for c in spec["containers"]} == {"registry.example.org/fama:1.0.0"}, name
    assert objects[("ScaledObject", "notifications-sender")]["spec"]["maxReplicaCount"] == 12
    assert objects[("ConfigMap", "fama-config")]["data"]["REDIS_KEY_PREFIX"] == "fama:", "the base's settings are kept"
