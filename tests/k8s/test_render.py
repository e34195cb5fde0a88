"""The overlays render, land in their namespace, and the `sizing` values reach every field they size."""

from __future__ import annotations

import yaml

from tests.k8s.manifests import K8S, OVERLAYS, container, find, pod_templates

CLUSTER_SCOPED = {"Namespace"}
EXPECTED_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment",
                  "StatefulSet", "NetworkPolicy", "RayJob", "JobSet"}


def test_both_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_object_is_in_the_overlay_namespace(rendered_overlays):
    for overlay, docs in rendered_overlays.items():
        namespace = find(docs, "Namespace")["metadata"]["name"]
        assert namespace != "default"
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                assert d["metadata"].get("namespace") == namespace, f"{overlay}: {d['kind']} {d['metadata']['name']}"
        assert {d["kind"] for d in docs} == EXPECTED_KINDS, overlay


def test_the_namespace_enforces_the_restricted_pod_security_standard(rendered_overlays):
    for docs in rendered_overlays.values():
        labels = find(docs, "Namespace")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_sizing_is_a_local_variable_and_is_not_applied(rendered_overlays):
    for docs in rendered_overlays.values():
        assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sizing"]


def _sizing(overlay: str) -> dict[str, str]:
    """The overlay's `sizing` literals, read from its kustomization file."""
    kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    gen = next(g for g in kust["configMapGenerator"] if g["name"] == "sizing")
    return dict(item.split("=", 1) for item in gen["literals"])


def test_sharding_worker_group_follows_the_sizing_variables(rendered_overlays):
    for overlay, docs in rendered_overlays.items():
        size = _sizing(overlay)
        group = find(docs, "RayJob", "shard-mixture")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        workers = int(size["SHARD_WORKERS"])
        assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (workers, workers, workers)
        worker = container(group["template"], "ray-worker")
        assert group["rayStartParams"]["num-cpus"] == size["SHARD_WORKER_CPUS"]
        assert str(worker["resources"]["limits"]["cpu"]) == size["SHARD_WORKER_CPUS"]
        assert str(worker["resources"]["requests"]["memory"]) == size["SHARD_WORKER_MEMORY"]


def test_training_group_follows_the_sizing_variables(rendered_overlays):
    for overlay, docs in rendered_overlays.items():
        size = _sizing(overlay)
        jobset = find(docs, "JobSet", "pretrain-b")
        job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
        nodes = int(size["TRAIN_NODES"])
        assert (job["completions"], job["parallelism"], job["completionMode"]) == (nodes, nodes, "Indexed")
        [(_, template)] = pod_templates(jobset)
        for name in ("hostfile", "deepspeed"):
            env = {e["name"]: e.get("value") for e in container(template, name)["env"]}
            assert env["NNODES"] == size["TRAIN_NODES"] and env["GPUS_PER_NODE"] == size["GPUS_PER_NODE"]
        gpus = container(template, "deepspeed")["resources"]
        assert str(gpus["limits"]["nvidia.com/gpu"]) == str(gpus["requests"]["nvidia.com/gpu"]) == size["GPUS_PER_NODE"]
        shm = next(v for v in template["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm == {"medium": "Memory", "sizeLimit": size["TRAIN_SHM"]}
