"""The MLflow server started with the manifest's own arguments answers the names pods use.

A real `mlflow server` on loopback, run with the rendered Deployment's arguments except the
stores (SQLite and a local directory stand in for PostgreSQL and S3) and the listening address.
Requests carry the Host headers the cluster would send: the training pods' MLFLOW_TRACKING_URI,
the Service's full DNS name, and the kubelet's probes, which use the pod IP.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from tests.conftest import free_port
from tests.k8s.manifests import container, container_env, expand, find, pod_templates

LOCAL_STAND_INS = ("--backend-store-uri=", "--artifacts-destination=", "--host=", "--port=", "--workers=")


def status(port: int, path: str, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


pytestmark = pytest.mark.slow  # starts a real MLflow server


@pytest.fixture(scope="module")
def server(rendered_overlays, tmp_path_factory):
    docs = rendered_overlays["dev"]
    deployment = find(docs, "Deployment", "mlflow")
    c = container(deployment["spec"]["template"], "mlflow")
    namespace = deployment["metadata"]["namespace"]
    env = container_env(docs, c, {"metadata.namespace": namespace})
    args = [expand(a, env) for a in c["args"]]
    assert args[0] == "server"
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    argv = [a for a in args if not a.startswith(LOCAL_STAND_INS)] + [
        f"--backend-store-uri=sqlite:///{tmp}/mlflow.db", f"--artifacts-destination={tmp}/artifacts",
        "--host=127.0.0.1", f"--port={port}", "--workers=1"]
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", *argv], cwd=tmp, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=log,
                                env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if status(port, "/health", "localhost") == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
            yield port, namespace
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

API = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_training_pods_tracking_uri_is_served(rendered_overlays, server):
    port, _ = server
    jobset = find(rendered_overlays["dev"], "JobSet", "pretrain-b")
    [(_, template)] = pod_templates(jobset)
    uri = next(e["value"] for e in container(template, "deepspeed")["env"] if e["name"] == "MLFLOW_TRACKING_URI")
    assert status(port, API, urlparse(uri).netloc) == 200


def test_full_service_name_and_port_forward_are_served(server):
    port, namespace = server
    assert status(port, API, f"mlflow.{namespace}.svc.cluster.local:5000") == 200
    assert status(port, API, "localhost:5000") == 200


def test_other_hosts_are_refused_but_probes_on_the_pod_ip_pass(server):
    port, _ = server
    assert status(port, API, "attacker.example:5000") == 403
    assert status(port, API, "mlflow.other-namespace.svc.cluster.local:5000") == 403
    assert status(port, "/health", "10.12.0.7:5000") == 200
