"""Every rendered object against the schema the API server would check it with.

Built-in kinds use the Kubernetes OpenAPI schemas shipped in `kubernetes-validate`, strictly
(unknown fields are errors, as with `kubectl apply --validate=strict`). RayJob and JobSet use the
openAPIV3Schema of their CRDs (KubeRay v1.7.0, JobSet v0.12.0; schemas/ holds the extracts), made
strict the same way, plus the checks their operators' admission code adds. The pod templates
inside the custom resources are also checked as core PodTemplates, the schema the operators
create pods from.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s.manifests import Doc, find, pod_templates

KUBERNETES_VERSION = "1.32.0"  # the API version of the kubectl the tests render with
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("ray.io/v1", "RayJob"): "rayjob-ray.io-v1.json",
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): "jobset-jobset.x-k8s.io-v1alpha2.json",
}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYJOB_NAME = 47  # KubeRay MaxRayJobNameLength: the RayCluster name gets a suffix


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected where the API server would prune or refuse them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    data = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    schema = strict(data["openAPIV3Schema"])
    # metadata is validated by the API server's ObjectMeta rules, not the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(schema)


def schema_errors(doc: Doc) -> list[str]:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(*key).iter_errors(doc)]
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    return []


def test_every_object_matches_its_schema(rendered_overlays):
    problems = [f"{overlay}: {d['kind']} {d['metadata']['name']}: {e}"
                for overlay, docs in rendered_overlays.items() for d in docs for e in schema_errors(d)]
    assert not problems, "\n".join(problems)


def test_pod_templates_inside_custom_resources_are_valid_pod_templates(rendered_overlays):
    problems = []
    for overlay, docs in rendered_overlays.items():
        for d in docs:
            if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS:
                continue
            for where, template in pod_templates(d):
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                           "template": template}
                try:
                    kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as err:
                    problems.append(f"{overlay}: {d['kind']} {where}: {'.'.join(map(str, err.path))}: {err.message}")
    assert not problems, "\n".join(problems)


def _merge(target: Any, patch: Any) -> None:
    for k, v in patch.items():
        if isinstance(v, list):
            for t, p in zip(target[k], v):
                _merge(t, p)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


@pytest.mark.parametrize("kind, mistake, expected", [
    ("RayJob", {"spec": {"rayClusterSpec": {"workerGroupSpecs": [{"replica": 2}]}}}, "'replica' was unexpected"),
    ("RayJob", {"spec": {"rayClusterSpec": {"workerGroupSpecs": [{"rayStartParams": {"num-cpus": 8}}]}}},
     "8 is not of type 'string'"),
    ("JobSet", {"spec": {"failurePolicy": {"maxRestart": 3}}}, "'maxRestart' was unexpected"),
    ("Deployment", {"spec": {"template": {"spec": {"containers": [{"resource": {}}]}}}}, "resource"),
    ("StatefulSet", {"spec": {"replicas": "1"}}, "'1' is not of type 'integer'"),
])
def test_the_schema_check_catches_typical_mistakes(rendered_overlays, kind, mistake, expected):
    """A misspelt field or a number written as a string fails, in built-in and custom kinds alike."""
    doc = copy.deepcopy(find(rendered_overlays["dev"], kind))
    assert not schema_errors(doc)
    _merge(doc, mistake)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), errors


def test_rayjobs_pass_kuberay_admission_rules(rendered_overlays):
    """The rules KubeRay's validation code applies on top of the CRD schema (v1.7.0 utils/validation.go)."""
    for docs in rendered_overlays.values():
        for d in (d for d in docs if d["kind"] == "RayJob"):
            name, spec = d["metadata"]["name"], d["spec"]
            assert len(name) <= MAX_RAYJOB_NAME and DNS1035.match(name), name
            assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode" and spec["entrypoint"].strip()
            assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0
            cluster = spec["rayClusterSpec"]
            assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
            for group in cluster["workerGroupSpecs"]:
                assert group["template"]["spec"]["containers"]
                assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_jobsets_restart_the_whole_group_from_dns_named_pods(rendered_overlays):
    for docs in rendered_overlays.values():
        for d in (d for d in docs if d["kind"] == "JobSet"):
            spec = d["spec"]
            assert spec["network"]["enableDNSHostnames"] is True
            assert spec["failurePolicy"]["maxRestarts"] > 0 and "rules" not in spec["failurePolicy"]
            for rjob in spec["replicatedJobs"]:
                job = rjob["template"]["spec"]
                # A failed pod fails its Job at once, which is what triggers the JobSet-wide restart.
                assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
                host = f"{d['metadata']['name']}-{rjob['name']}-0-{job['completions'] - 1}"
                assert len(host) <= 63 and DNS1035.match(host), host
