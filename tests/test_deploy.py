"""deploy/: Kubernetes manifests checked against the Kubernetes API's own types (the `kubernetes`
client's models are generated from the OpenAPI schema: field names, types, required fields), the
KubeRay RayService's fields, and the Dockerfile (built only where docker has an engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes.client as k8s
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KINDS = {  # (apiVersion, kind) -> the model of that object
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}
PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,),
              "datetime": (str,), "date": (str,)}


def check(value, type_name: str, where: str) -> None:
    """Every field known to the schema with the schema's type, recursively (unknown fields are
    what `kubectl apply` rejects or silently drops)."""
    if m := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            check(item, m.group(1), f"{where}[{i}]")
        return
    if m := re.fullmatch(r"(?:dict|Dict)[\[(]str, (.+)[\])]", type_name):
        assert isinstance(value, dict), f"{where}: expected a mapping"
        for key, item in value.items():
            check(item, m.group(1), f"{where}.{key}")
        return
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(value, bool))
        assert ok, f"{where}: {value!r} is not {type_name}"
        return
    model = getattr(k8s, type_name)
    assert isinstance(value, dict), f"{where}: expected a {type_name} mapping"
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, item in value.items():
        assert key in by_json, f"{where}: {type_name} has no field {key!r}"
        check(item, model.openapi_types[by_json[key]], f"{where}.{key}")


def validate(doc: dict, model: str, where: str):
    check(doc, model, where)
    # The generated constructors refuse missing required fields and bad enum values.
    return k8s.ApiClient()._ApiClient__deserialize(doc, model)


def manifests():
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield path.name, doc


def test_every_manifest_matches_the_kubernetes_schema():
    seen = set()
    for name, doc in manifests():
        if doc["kind"] == "RayService":
            continue
        model = KINDS[(doc["apiVersion"], doc["kind"])]
        validate(doc, model, name)
        seen.add(doc["kind"])
    assert seen == {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim"}


def test_the_schema_check_catches_mistakes():
    doc = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of `resources`
    with pytest.raises(AssertionError, match="no field 'resource'"):
        validate(doc, "V1Deployment", "deployment.yaml")
    doc = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    del doc["spec"]["selector"]  # required
    with pytest.raises(ValueError, match="selector"):
        validate(doc, "V1Deployment", "deployment.yaml")


def test_objects_fit_together():
    docs = {doc["kind"]: doc for _, doc in manifests()}
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    container = pod["containers"][0]
    threads = int(container["args"][container["args"].index("--threads") + 1])
    assert int(container["resources"]["requests"]["cpu"]) == threads, "CPU request should equal engine threads"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


# KubeRay v1 RayService (ray-operator/apis/ray/v1/rayservice_types.go, raycluster_types.go): the
# fields this manifest may use, so a typo is caught without the CRD at hand.
RAYSERVICE_SPEC = {"serveConfigV2", "rayClusterConfig", "upgradeStrategy", "serveService",
                   "excludeHeadPodFromServeSvc", "deploymentUnhealthySecondThreshold",
                   "serviceUnhealthySecondThreshold", "rayClusterDeletionDelaySeconds"}
RAYCLUSTER_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling",
                   "autoscalerOptions", "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "suspend"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template",
                "scaleStrategy", "numOfHosts", "idleTimeoutSeconds", "suspend"}
SERVE_APP = {"name", "route_prefix", "import_path", "args", "runtime_env", "deployments", "external_scaler_enabled"}


def test_rayservice_fields_and_serve_config():
    from ray.serve.schema import ServeDeploySchema

    (doc,) = [d for _, d in manifests() if d["kind"] == "RayService"]
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    assert set(spec) <= RAYSERVICE_SPEC
    cluster = spec["rayClusterConfig"]
    assert set(cluster) <= RAYCLUSTER_SPEC
    assert set(cluster["headGroupSpec"]) <= HEAD_GROUP
    validate(cluster["headGroupSpec"]["template"], "V1PodTemplateSpec", "headGroupSpec.template")
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        validate(group["template"], "V1PodTemplateSpec", f"workerGroupSpecs.{group['groupName']}")
    assert all(isinstance(v, str) for v in cluster["headGroupSpec"]["rayStartParams"].values())
    import ray
    assert cluster["rayVersion"] == ray.__version__
    # serveConfigV2 is Ray Serve's own config: checked by Ray's schema, and its entry point exists.
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    (app,) = serve_config["applications"]
    assert set(app) <= SERVE_APP
    from slmkit.scale import ray_serve

    module, _, name = app["import_path"].partition(":")
    assert module == ray_serve.__name__
    built = getattr(ray_serve, name)(app["args"])
    assert built._bound_deployment.name == app["deployments"][0]["name"]


def test_dockerfile_builds():
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed on this machine")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("docker has no running engine here (docker info fails)")
    root = DEPLOY.parent
    subprocess.run(["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", "slmkit:test", str(root)], check=True)
