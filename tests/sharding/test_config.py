"""The job's config on the command line: YAML plus flags, errors as one `error:` line and exit code 2,
`--print-config`. Nothing here shards anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from configuration import ConfigError
from sharding.config import SourceConfig, load_sharding_config
from sharding.shard_corpus import main

SECRET = "s3cr3t-never-printed"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_misspelt_key_is_exit_code_2_with_the_key_and_a_suggestion(tmp_path, capsys):
    config = write_config(tmp_path / "bad.yaml", "sources: [{kind: synthetic, path: '3'}]\nshard_sise: 5\n"
                                                 "dtype: float64\n")
    assert main(["--config", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid sharding config ({config}")
    assert "shard_sise: unknown key" in err and "did you mean 'shard_size'?" in err
    assert "dtype: Input should be 'float32' or 'float16' (got 'float64')" in err
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--source", "synthetic:3", "--shard-size", "0"], "shard_size: Input should be greater than or equal to 1"),
        (["--source", "synthetic3"], "--source must be KIND:PATH, got 'synthetic3'"),
        (["--output", "OUT"], "no sources: give --source KIND:PATH"),
        (["--source", "synthetic:3", "--source", "synthetic:4"], "sources share the name(s) ['synthetic']"),
        (["--config", "nowhere.yaml"], "sharding config: file 'nowhere.yaml' not found"),
    ],
    ids=["flag-value", "source-flag", "no-sources", "name-clash", "no-file"],
)
def test_config_errors_are_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_no_output_is_an_error(capsys):
    assert main(["--source", "synthetic:3"]) == 2
    assert capsys.readouterr().err == "error: no output: give --output DIR_OR_URL or `output:` in the config\n"


def test_print_config_prints_the_resolved_job_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path / "job.yaml", yaml.safe_dump({
        "sources": [{"kind": "synthetic", "name": "held", "path": "5", "options": {"split": "test"},
                     "storage_options": {"secret": SECRET}}],
        "shard_size": 3,
        "storage_options": {"key": "AKIA", "secret": SECRET, "client_kwargs": {"endpoint_url": "http://s3"}},
    }))
    out = tmp_path / "out"
    argv = ["--config", str(config), "--source", "synthetic:7", "--output", str(out), "--num-points", "128",
            "--time-limit", "0.5", "--print-config"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and "AKIA" not in printed
    cfg = yaml.safe_load(printed)
    assert [(s["name"], s["kind"], s["path"]) for s in cfg["sources"]] == [("held", "synthetic", "5"),
                                                                           ("", "synthetic", "7")]
    assert (cfg["output"], cfg["shard_size"], cfg["num_points"], cfg["time_limit_s"]) == (str(out), 3, 128, 0.5)
    assert cfg["dtype"] == "float32" and cfg["max_failure_ratio"] == 0.01  # defaults are shown too
    assert cfg["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": {"endpoint_url": "http://s3"}}
    assert not out.exists()


@pytest.mark.parametrize("output", ["out: with a colon", "null", "8", "#hash", "s3://bucket/prefix"])
def test_flag_values_reach_the_config_unchanged(output):
    cfg = load_sharding_config(None, {"output": output, "max_failure_ratio": 1e-05, "shard_size": None})
    assert (cfg.output, cfg.max_failure_ratio, cfg.shard_size) == (output, 1e-05, 1000)


def test_flag_sources_come_after_the_files_and_leave_the_hash_of_the_rest(tmp_path):
    config = write_config(tmp_path / "job.yaml", "sources: [{kind: synthetic, path: '3'}]\noutput: here\n")
    extra = SourceConfig(kind="generic", path="/data/meshes")
    cfg = load_sharding_config(config, {}, [extra])
    assert [s.kind for s in cfg.sources] == ["synthetic", "generic"]
    moved = load_sharding_config(config, {"output": "elsewhere"}, [extra])
    assert moved.config_hash() == cfg.config_hash()  # where shards go does not change what they hold
    assert load_sharding_config(config, {"num_points": 64}, [extra]).config_hash() != cfg.config_hash()


def test_the_library_raises_config_error(tmp_path):
    config = write_config(tmp_path / "job.yaml", "sources: [{kind: synthetic, path: '3', opitons: {}}]\n")
    with pytest.raises(ConfigError, match=r"sources\.0\.opitons: unknown key .*did you mean 'options'\?"):
        load_sharding_config(config)
