"""Every input error of the training command, from a bad override to a missing dataset: one `error:` line, exit 2.

These fail before any process group starts, so the command prints nothing else: no DeepSpeed start-up
lines, no traceback from a rank.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import free_port, s3_storage
from tests.launch.conftest import launch, python_pretrain
from tests.launch.test_preflight import fake_dataset


def the_error(tmp_path, *args: str) -> str:
    result = launch(python_pretrain(*args), tmp_path, timeout=120)
    lines = result.output.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output[-3000:]
    return lines[0]


@pytest.fixture
def job(tmp_path) -> list[str]:
    """Overrides of a job on a 400-sample dataset (a manifest without shards: nothing gets to read them)."""
    return [f"data.datasets.0.url={fake_dataset(tmp_path / 'data', 400)}", f"output_dir={tmp_path / 'run'}"]


def test_a_bad_yaml_value_in_an_override(tmp_path, job):
    line = the_error(tmp_path, *job, "train.max_steps=[1")
    assert line.startswith("error: override train.max_steps: value '[1' is not valid YAML (line 1, column 3:")


def test_a_missing_dataset_names_the_sharding_command(tmp_path):
    line = the_error(tmp_path, f"data.datasets.0.url={tmp_path / 'none'}", f"output_dir={tmp_path / 'run'}")
    assert f"manifest not found: {tmp_path / 'none'}/manifest.json" in line
    assert f"python -m sharding.shard_corpus --config configs/data/<corpus>.yaml --output {tmp_path / 'none'}" in line


def test_an_unreachable_s3_endpoint_is_named_in_bounded_time(tmp_path, job):
    endpoint = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    line = the_error(tmp_path, *job, "data.datasets.0.url=s3://bucket/shards",
                     f"data.datasets.0.storage_options={json.dumps(s3_storage(endpoint))}")
    assert time.monotonic() - start < 30  # python and torch start-up included; the check itself is < 5 s
    assert f"S3 endpoint {endpoint} is unreachable" in line


def test_a_global_batch_larger_than_the_corpus(tmp_path, job):
    line = the_error(tmp_path, *job, "train.global_batch=100000")
    assert "train.global_batch=100000 is more than the corpus holds: an epoch has 400 samples" in line


def test_a_checkpoint_dir_that_is_a_file(tmp_path, job):
    (tmp_path / "file").write_text("")
    line = the_error(tmp_path, *job, f"checkpoint.dir={tmp_path / 'file'}")
    assert line == f"error: checkpoint.dir={tmp_path / 'file'} is a file, not a directory"


def test_resume_from_a_missing_path(tmp_path, job):
    line = the_error(tmp_path, "--resume", str(tmp_path / "nope"), *job)
    assert line.startswith(f"error: --resume {tmp_path / 'nope'}: no such file or directory")


def test_resume_from_an_empty_latest_file(tmp_path, job):
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "step00000002").mkdir(parents=True)
    (checkpoints / "latest").write_text("")
    line = the_error(tmp_path, "--resume", "latest", *job)
    assert line.startswith(f"error: {checkpoints / 'latest'} is empty")
