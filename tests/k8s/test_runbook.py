"""docs/cluster.md: its commands parse with the entry points' parsers, its manifest check runs on
real shards, and its apply steps cover every object of the overlays."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.k8s.manifests import ROOT

RUNBOOK = (ROOT / "docs" / "cluster.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", RUNBOOK, flags=re.DOTALL)


def commands(prefix: str) -> list[list[str]]:
    """Every command in the runbook's bash blocks that starts with `prefix`, continuations joined."""
    found = []
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix):
                found.append(shlex.split(line))
    return found


def test_sharding_commands_parse():
    from sharding.shard_corpus import job_config, parse_args

    found = commands("python -m sharding.shard_corpus")
    assert len(found) >= 2
    for argv in found:
        args = parse_args(argv[3:])
        if args.config:
            args.config = str(ROOT / args.config)
        assert job_config(args).output


def test_pretraining_command_parses_with_deepspeed_and_our_parser():
    from deepspeed.launcher import runner

    from launch.pretrain import build_parser
    from launch.training.config import load_pretrain_config

    [argv] = commands("deepspeed ")
    ds = runner.parse_args(argv[1:])
    assert ds.no_ssh and ds.user_script == "launch/pretrain.py"
    job = build_parser().parse_args(ds.user_args)
    assert job.resume == "latest"
    load_pretrain_config(ROOT / job.config, [*job.overrides, f"output_dir={job.output_dir}"])


def test_throughput_benchmark_command_parses():
    """bench.train_throughput builds its parser inside main(): its --help lists the flags it takes."""
    from launch.training.config import load_pretrain_config

    [argv] = commands("python -m bench.train_throughput")
    flags = argv[3:]
    usage = subprocess.run([sys.executable, "-m", argv[2], "--help"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout
    for flag in (a for a in flags if a.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b(?!-)", usage), f"{flag} is not a flag of {argv[2]}"
    config = flags[flags.index("--config") + 1]
    load_pretrain_config(ROOT / config, [a for a in flags if "=" in a and not a.startswith("-")])


def test_mlflow_download_command_parses():
    import click
    from mlflow.cli import cli

    [argv] = [c[1:] for c in commands("MLFLOW_TRACKING_URI=")]
    assert argv[:3] == ["mlflow", "artifacts", "download"]
    try:
        cli.commands["artifacts"].commands["download"].make_context("download", argv[3:])
    except click.UsageError as err:
        pytest.fail(f"mlflow artifacts download rejects {argv}: {err}")


def test_apply_steps_cover_every_component(rendered_overlays):
    applied = set(re.findall(r"kubectl apply -k k8s/overlays/prod -l app\.kubernetes\.io/component=(\w+)", RUNBOOK))
    for overlay, docs in rendered_overlays.items():
        components = {d["metadata"].get("labels", {}).get("app.kubernetes.io/component") for d in docs}
        assert components == applied == {"common", "tracking", "sharding", "pretraining"}, overlay


@pytest.mark.slow
def test_manifest_check_runs_on_real_shards(local_ray, tmp_path):
    """The runbook's verification snippet, on shards the real sharder writes (locally, not on S3)."""
    from sharding.shard_corpus import main as shard_corpus

    out = tmp_path / "shards"
    assert shard_corpus(["--source", "synthetic:24", "--output", str(out), "--shard-size", "8",
                         "--num-points", "256", "--no-progress"]) == 0
    [snippet] = [b for b in bash_blocks() if "load_manifest" in b]
    script = snippet.split("<<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]
    result = subprocess.run([sys.executable, "-", str(out)], input=script, cwd=ROOT, text=True,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 shards, 24 samples, 0 of 24 inputs failed")
    assert re.search(r"synthetic\s+24 samples\s+0 failed", result.stdout)
