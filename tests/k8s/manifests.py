"""Rendering the kustomize overlays and reading what the kubelet and the operators would read.

`kubectl kustomize` renders offline; it is the same kustomize (v5) that `kubectl apply -k` runs,
so the tests look at exactly what a cluster would receive.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())

Doc = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(overlay: str) -> list[Doc]:
    """`kubectl kustomize k8s/overlays/<overlay>` as a list of objects."""
    out = subprocess.run([kubectl() or "kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod template) for every pod a built-in or CRD object creates."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        yield "spec.template", spec["template"]
    elif kind == "RayJob":
        cluster = spec["rayClusterSpec"]
        yield "rayClusterSpec.headGroupSpec.template", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"rayClusterSpec.workerGroupSpecs[{group['groupName']}].template", group["template"]
        if "submitterPodTemplate" in spec:
            yield "submitterPodTemplate", spec["submitterPodTemplate"]
    elif kind == "JobSet":
        for rjob in spec["replicatedJobs"]:
            yield f"replicatedJobs[{rjob['name']}].template.spec.template", rjob["template"]["spec"]["template"]


def containers(template: Doc) -> Iterator[Doc]:
    spec = template["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(template: Doc, name: str) -> Doc:
    hits = [c for c in containers(template) if c["name"] == name]
    assert len(hits) == 1, f"expected one container {name}, found {len(hits)}"
    return hits[0]


def configmap_data(docs: list[Doc], name: str) -> dict[str, str]:
    return dict(find(docs, "ConfigMap", name).get("data", {}))


def container_env(docs: list[Doc], c: Doc, field_values: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet gives container `c`, in its order of definition.

    envFrom ConfigMaps come from the rendered objects; `fieldRef` values come from `field_values`
    (keyed by fieldPath: what the API server fills in for a running pod); `$(VAR)` references in
    values are expanded against the variables defined before them, as the kubelet does. Secret
    references cannot be resolved here and are left out.
    """
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmap_data(docs, source["configMapRef"]["name"]))
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in field_values:
                raise AssertionError(f"test has no value for fieldRef {path} ({var['name']})")
            env[var["name"]] = field_values[path]
    return env


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def references(text: str) -> set[str]:
    """Names used as $(NAME) in a command, argument or env value."""
    return set(_REF.findall(text))


def expand(text: str, env: dict[str, str]) -> str:
    """Kubelet expansion: $(NAME) of a defined variable is replaced, an undefined one stays as is."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)
