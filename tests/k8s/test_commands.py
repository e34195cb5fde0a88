"""The commands in the rendered manifests, parsed by the real command-line parsers of the entry points.

Each command is first expanded the way it is at run time (the kubelet's $(VAR) expansion from the
container's environment, or the shell's for the RayJob entrypoint), then handed to the parser the
process itself would use: `sharding.shard_corpus.parse_args`, DeepSpeed's launcher parser and
`launch.pretrain.build_parser`, and MLflow's click `server` command. A renamed or removed flag, or
a config key that no longer validates, fails here.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest

from tests.k8s.manifests import (
    ROOT,
    Doc,
    container,
    container_env,
    expand,
    find,
    pod_templates,
    references,
)

COMPLETION_INDEX = "1"  # a non-zero rank: pod 0's values would hide a wrong master address
FORWARD_STOP = ["python", "-m", "launch.forward_stop"]


def parse(parser_call, argv: list[str], what: str):
    """Run an argparse parser; its exit on a bad flag becomes a failure that names the command."""
    try:
        return parser_call(argv)
    except SystemExit as err:
        pytest.fail(f"{what} rejects the manifest's arguments {argv} (exit {err.code})")


def shell_words(command: str, env: dict[str, str]) -> list[str]:
    """The argv a POSIX shell builds from `command` under `env`, without running it."""
    out = subprocess.run(["sh", "-c", f'set -- {command}; printf "%s\\0" "$@"'],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def kubelet_argv(c: Doc, env: dict[str, str]) -> list[str]:
    argv = list(c.get("command", [])) + list(c.get("args", []))
    undefined = sorted(set().union(*map(references, argv)) - set(env))
    assert not undefined, f"container {c['name']} uses undefined $(...) variables {undefined}"
    return [expand(a, env) for a in argv]


def mount_path(c: Doc, volume: str) -> str:
    return next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume)


def volume(template: Doc, name: str) -> Doc:
    return next(v for v in template["spec"]["volumes"] if v["name"] == name)


def in_repo(working_dir: str, path: str) -> Path:
    """A path the container resolves against its working directory (/app: the repository root)."""
    assert working_dir == "/app", "the image holds the repository at /app"
    return ROOT / path


# -- sharding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_sharding_entrypoint_parses_and_writes_to_s3(rendered_overlays, overlay):
    from sharding.shard_corpus import job_config, parse_args

    docs = rendered_overlays[overlay]
    rayjob = find(docs, "RayJob", "shard-mixture")
    templates = dict(pod_templates(rayjob))
    head_tpl = templates["rayClusterSpec.headGroupSpec.template"]
    head = container(head_tpl, "ray-head")
    submitter = container(templates["submitterPodTemplate"], "ray-job-submitter")
    entrypoint = rayjob["spec"]["entrypoint"]

    # K8sJobMode: the submitter's shell builds the command it submits; the head runs what it receives.
    argv = shell_words(entrypoint, container_env(docs, submitter, {}))
    assert argv == shell_words(entrypoint, container_env(docs, head, {}))
    assert argv[:3] == ["python", "-m", "sharding.shard_corpus"]
    args = parse(parse_args, argv[3:], "sharding.shard_corpus")
    assert Path(args.config) == Path("configs/data/mixture.yaml")
    cfg = job_config(argparse.Namespace(**{**vars(args), "config": str(in_repo(head["workingDir"], args.config))}))
    storage = find(docs, "ConfigMap", "storage")["data"]
    assert cfg.output == storage["SHARDS_URL"] and cfg.output.startswith("s3://")
    assert len(cfg.sources) >= 10


def test_every_mixture_source_is_on_the_raw_corpus_volume(rendered_overlays):
    """configs/data/mixture.yaml names data/raw/...; the Ray pods mount the raw-corpus volume there."""
    from sharding.config import load_sharding_config

    cfg = load_sharding_config(ROOT / "configs/data/mixture.yaml", {})
    for docs in rendered_overlays.values():
        rayjob = find(docs, "RayJob", "shard-mixture")
        for where, template in pod_templates(rayjob):
            if where == "submitterPodTemplate":
                continue
            [c] = template["spec"]["containers"]
            raw = mount_path(c, "raw-corpus")
            assert raw == f"{c['workingDir']}/data/raw", where
            assert volume(template, "raw-corpus")["persistentVolumeClaim"]["claimName"] == "raw-corpus"
            for source in cfg.sources:
                assert source.path.startswith("data/raw/"), source


def test_sharding_retries_rerun_the_same_resumable_command(rendered_overlays):
    """Whole-job retries are only safe because a rerun of the same command resumes (sharding README)."""
    for docs in rendered_overlays.values():
        spec = find(docs, "RayJob", "shard-mixture")["spec"]
        assert spec["backoffLimit"] >= 1 and spec["shutdownAfterJobFinishes"] is True
        assert "jobId" not in spec and "clusterSelector" not in spec


# -- pretraining -------------------------------------------------------------------------------------


def training_pod(docs: list[Doc]) -> tuple[Doc, Doc, Doc]:
    jobset = find(docs, "JobSet", "pretrain-b")
    [(_, template)] = pod_templates(jobset)
    return jobset, template, container(template, "deepspeed")


def pod_field_values(jobset: Doc) -> dict[str, str]:
    """What the API server fills into the downward-API fields of a JobSet pod."""
    [rjob] = jobset["spec"]["replicatedJobs"]
    return {
        "metadata.labels['jobset.sigs.k8s.io/jobset-name']": jobset["metadata"]["name"],
        "metadata.labels['jobset.sigs.k8s.io/replicatedjob-name']": rjob["name"],
        "metadata.namespace": jobset["metadata"]["namespace"],
    }


def deepspeed_command(docs: list[Doc]):
    from deepspeed.launcher import runner

    from launch.pretrain import build_parser

    jobset, template, c = training_pod(docs)
    env = {**container_env(docs, c, pod_field_values(jobset)), "JOB_COMPLETION_INDEX": COMPLETION_INDEX}
    argv = kubelet_argv(c, env)
    assert argv[:4] == [*FORWARD_STOP, "deepspeed"]  # PID 1 hands SIGTERM to the ranks (launch/forward_stop.py)
    ds = parse(runner.parse_args, argv[4:], "deepspeed")
    job = parse(build_parser().parse_args, ds.user_args, "launch/pretrain.py")
    return jobset, template, c, env, ds, job


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pretraining_command_is_a_no_ssh_deepspeed_launch_of_our_script(rendered_overlays, overlay):
    jobset, template, c, env, ds, job = deepspeed_command(rendered_overlays[overlay])
    name, [rjob] = jobset["metadata"]["name"], jobset["spec"]["replicatedJobs"]
    assert ds.no_ssh and ds.node_rank == int(COMPLETION_INDEX)
    assert ds.master_addr == f"{name}-{rjob['name']}-0-0.{name}"  # pod 0 through the JobSet's headless Service
    assert str(ds.master_port) in {str(p["containerPort"]) for p in c["ports"]}
    assert ds.user_script == "launch/pretrain.py" and in_repo(c["workingDir"], ds.user_script).is_file()
    assert ds.hostfile.startswith(mount_path(c, "hostfile") + "/")
    assert job.resume == "latest"  # every (re)start of the group continues from the newest checkpoint
    assert job.output_dir.startswith(mount_path(c, "training-runs") + "/")
    assert volume(template, "training-runs")["persistentVolumeClaim"]["claimName"] == "training-runs"
    assert mount_path(c, "dshm") == "/dev/shm" and volume(template, "dshm")["emptyDir"]["medium"] == "Memory"
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pretraining_config_and_overrides_validate_for_the_group_size(rendered_overlays, overlay):
    """The job config with the manifest's overrides loads, and its batch splits over nodes x GPUs."""
    from launch.training.config import deepspeed_config, load_pretrain_config

    _, _, c, env, _, job = deepspeed_command(rendered_overlays[overlay])
    overrides = list(job.overrides) + [f"output_dir={job.output_dir}"]
    cfg = load_pretrain_config(in_repo(c["workingDir"], job.config), overrides)
    assert cfg.data.datasets[0].url == env["SHARDS_URL"] and cfg.data.datasets[0].url.startswith("s3://")
    monitored = [s.dataset.path for s in cfg.monitor.sets]
    assert len(monitored) == 2 and all(p.startswith(env["MONITOR_DATA_URL"] + "/") for p in monitored), monitored
    assert str(cfg.checkpoint_dir()).startswith(mount_path(c, "training-runs") + "/")
    world = int(env["NNODES"]) * int(env["GPUS_PER_NODE"])
    ds_config = deepspeed_config(cfg, world)
    assert ds_config["train_batch_size"] == 1024  # the reference's global batch, on any group size
    # Every loader process keeps its own shard cache in /tmp: the volume must hold all of them.
    processes = int(env["GPUS_PER_NODE"]) * (1 + cfg.data.num_workers)
    scratch = next(v for v in training_pod(rendered_overlays[overlay])[1]["spec"]["volumes"] if v["name"] == "tmp")
    assert processes * cfg.data.read.cache_bytes <= quantity_bytes(scratch["emptyDir"]["sizeLimit"])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pods_outlast_the_preemption_grace_of_every_shipped_config(rendered_overlays, overlay):
    """SIGKILL must come after a preempted job has checkpointed and exited: the pod's grace period covers every
    shipped config's checkpoint.preemption_grace_s (the default where unset) plus a margin for the launchers."""
    from launch.training.config import load_pretrain_config

    _, template, c, _, _, _ = deepspeed_command(rendered_overlays[overlay])
    assert in_repo(c["workingDir"], FORWARD_STOP[2].replace(".", "/") + ".py").is_file()
    configs = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))
    assert len(configs) >= 3
    grace = max(load_pretrain_config(path).checkpoint.preemption_grace_s for path in configs)
    assert template["spec"]["terminationGracePeriodSeconds"] >= grace + 30


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(q[:-2]) * units[q[-2:]] if q[-2:] in units else int(q)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_generated_hostfile_describes_the_group_with_pod_0_first(rendered_overlays, overlay, tmp_path):
    """Runs the init container's script and reads its output with DeepSpeed's own hostfile parser."""
    from deepspeed.launcher.runner import fetch_hostfile

    docs = rendered_overlays[overlay]
    jobset, template, c = training_pod(docs)
    init = container(template, "hostfile")
    mount = mount_path(init, "hostfile")
    assert mount_path(c, "hostfile") == mount
    env = container_env(docs, init, pod_field_values(jobset))
    script = init["command"][-1].replace(mount, str(tmp_path))
    subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, check=True, capture_output=True)
    _, _, _, main_env, ds, _ = deepspeed_command(docs)
    hosts = fetch_hostfile(str(tmp_path / Path(ds.hostfile).relative_to(mount)))
    assert len(hosts) == int(main_env["NNODES"]) > int(COMPLETION_INDEX)
    assert set(hosts.values()) == {int(main_env["GPUS_PER_NODE"])}
    assert next(iter(hosts)) == ds.master_addr
    name, [rjob] = jobset["metadata"]["name"], jobset["spec"]["replicatedJobs"]
    assert list(hosts) == [f"{name}-{rjob['name']}-0-{i}.{name}" for i in range(len(hosts))]


# -- MLflow ------------------------------------------------------------------------------------------


def mlflow_server_params(docs: list[Doc]) -> tuple[dict, Doc, dict[str, str]]:
    from mlflow.cli import cli

    deployment = find(docs, "Deployment", "mlflow")
    c = container(deployment["spec"]["template"], "mlflow")
    env = container_env(docs, c, {"metadata.namespace": deployment["metadata"]["namespace"]})
    argv = kubelet_argv(c, env)
    assert argv[:2] == ["mlflow", "server"]
    try:
        ctx = cli.commands["server"].make_context("mlflow server", argv[2:])
    except click.UsageError as err:
        pytest.fail(f"`mlflow server` rejects the manifest's arguments {argv}: {err}")
    return ctx.params, c, env


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_mlflow_server_uses_postgres_and_proxied_s3_artifacts(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    params, c, env = mlflow_server_params(docs)
    store = urlparse(params["backend_store_uri"])
    assert store.scheme == "postgresql" and store.password is None  # the password comes from PGPASSWORD
    postgres = find(docs, "Service", "mlflow-postgres")
    assert (store.hostname, store.port) == ("mlflow-postgres", postgres["spec"]["ports"][0]["port"])
    assert params["artifacts_destination"].startswith("s3://") and params["serve_artifacts"]
    assert env["PGPASSFILE"].startswith(mount_path(c, "pgpass") + "/")


def test_pgpass_init_container_writes_a_file_libpq_accepts(rendered_overlays, tmp_path):
    """Runs the init container's script on a password with the characters pgpass must escape."""
    docs = rendered_overlays["dev"]
    template = find(docs, "Deployment", "mlflow")["spec"]["template"]
    init = container(template, "pgpass")
    secret_dir, pgpass_dir = tmp_path / "secret", tmp_path / "pgpass"
    secret_dir.mkdir(), pgpass_dir.mkdir()
    (secret_dir / "password").write_text("pa:ss\\word")
    assert volume(template, "postgres-password")["secret"]["secretName"] == "mlflow-postgres"
    script = (init["command"][-1].replace(mount_path(init, "postgres-password"), str(secret_dir))
              .replace(mount_path(init, "pgpass"), str(pgpass_dir)))
    subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, check=True)
    written = pgpass_dir / Path(container_env(docs, container(template, "mlflow"), {
        "metadata.namespace": "ns"})["PGPASSFILE"]).name
    assert written.read_text() == "*:*:*:*:pa\\:ss\\\\word\n"
    assert written.stat().st_mode & 0o077 == 0  # libpq ignores a pgpass file others can read


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_training_pods_reach_mlflow_under_an_allowed_host(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    params, c, _ = mlflow_server_params(docs)
    allowed = params["allowed_hosts"].split(",")
    service = find(docs, "Service", "mlflow")
    _, _, _, env, _, _ = deepspeed_command(docs)
    uri = urlparse(env["MLFLOW_TRACKING_URI"])
    assert uri.netloc in allowed  # MLflow compares the Host header exactly, port included
    assert (uri.hostname, uri.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    namespace = service["metadata"]["namespace"]
    assert f"mlflow.{namespace}.svc.cluster.local:5000" in allowed
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
