"""`python -m bench.gpu_check`: the CPU smoke check runs every part and reports it; the parts' plumbing."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import THREAD_VARIABLES
from bench.gpucheck import placement, pytest_output, runner
from bench.gpucheck.check import Check
from bench.gpucheck.settings import FULL
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    """The smoke check's JSON report and Markdown (a few minutes on 2 cores, one compiled configuration)."""
    out = tmp_path_factory.mktemp("gpu-check")
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def steps_by_config(report: dict) -> dict[tuple[str, bool], dict]:
    return {(e["precision"], e["compile"]): e for e in report["model_step"]}


@pytest.mark.slow
def test_smoke_runs_the_tests_and_every_model_step_configuration(smoke):
    report, _ = smoke
    assert report["mode"] == "smoke" and report["environment"]["status"] == "ok"
    tests = report["cuda_tests"]["result"]
    assert report["cuda_tests"]["status"] == "ok" and tests["finished"]
    assert tests["failed"] == tests["errors"] == 0 and tests["not_run"] == 0
    assert tests["selected"] >= 11 and tests["passed"] + tests["skipped"] == tests["selected"]
    assert "tests/model/test_cuda.py" in tests["files"]
    steps = steps_by_config(report)
    for key in (("fp32", False), ("bf16", False), ("fp32", True)):
        result = steps[key]["result"]
        assert steps[key]["status"] == "ok", steps[key]
        assert result["shapes_per_s"] > 0 and result["first_step_s"] > 0 and result["mfu"] is None  # no peak on CPU
        assert (result["precision"], result["compile"]) == key
    assert steps[("fp16", False)]["status"] == steps[("fp16", True)]["status"] == "not_available"
    assert steps[("bf16", True)]["status"] == "skipped"
    assert {e["part"] for e in report["not_run"]} == {
        "model_step/tiny/fp16/eager", "model_step/tiny/fp16/compiled", "model_step/tiny/bf16/compiled"}


@pytest.mark.slow
def test_smoke_trains_on_shards_made_without_ray_and_places_patchify(smoke):
    report, markdown = smoke
    assert report["shards"]["status"] == "ok" and report["shards"]["result"]["samples"] == 64
    training = report["training"]["result"]
    assert report["training"]["status"] == "ok" and training["precision"] == "fp32"
    assert training["shapes_per_s"] > 0 and 0 <= training["data_wait_fraction"] <= 1
    patchify = report["patchify"]["result"]
    assert patchify["same_neighbour_sets_crops"] == patchify["crops_total"] == 16 * 6
    assert report["patchify_placement"]["decision"] in ("loader", "gpu")
    for heading in ("## CUDA tests", "| model | precision | mode |", "**Decision:", "Rule: Patchify stays"):
        assert heading in markdown


def test_every_part_is_a_module_run_from_the_project_root(tmp_path, monkeypatch):
    """Each benchmark starts as `python -m bench.<name>` in the project root (no installed package needed,
    only PYTHONPATH for the wheels), and its parser takes the arguments the check passes."""
    for name in THREAD_VARIABLES:  # importing a one-core benchmark sets them; keep them out of later tests
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    started: list[tuple[list[str], Path]] = []
    monkeypatch.setattr(runner, "run", lambda argv, log, limit, cwd, env: started.append((argv, cwd)) or
                        runner.Outcome("ok"))
    check = Check(FULL, tmp_path)
    try:
        check.model_step(FULL.first_steps[0])
        check.patchify()
        check.training(have_shards=True)
    finally:
        shutil.rmtree(check.work, ignore_errors=True)
    assert [argv[:3] for argv, _ in started] == [[sys.executable, "-m", f"bench.{name}"] for name in
                                                 ("model_step", "patchify_placement", "train_throughput")]
    assert {cwd for _, cwd in started} == {ROOT}
    for argv, _ in started:
        importlib.import_module(argv[2]).parse_args(argv[3:])


def test_pytest_output_of_a_run_cut_short():
    output = """collecting ... collected 9 items / 5 deselected / 4 selected

tests/model/test_cuda.py::test_a PASSED [ 25%]
tests/model/test_cuda.py::test_b[bf16] FAILED [ 50%]
tests/model/test_cuda.py::test_c SKIPPED (needs a CUDA device) [ 75%]
"""
    parsed = pytest_output.parse(output)
    assert (parsed["passed"], parsed["failed"], parsed["skipped"], parsed["errors"]) == (1, 1, 1, 0)
    assert parsed["selected"] == 4 and parsed["not_run"] == 1 and not parsed["finished"]
    assert parsed["failures"] == [{"test": "tests/model/test_cuda.py::test_b[bf16]", "message": ""}]
    finished = output + """tests/model/test_cuda.py::test_d ERROR [100%]
=========================== short test summary info ============================
FAILED tests/model/test_cuda.py::test_b[bf16] - AssertionError: ('cls', 5.2, 5.3)
ERROR tests/model/test_cuda.py::test_d - RuntimeError: CUDA error
============== 1 failed, 1 passed, 1 skipped, 1 error in 3.20s ===============
"""
    parsed = pytest_output.parse(finished)
    assert parsed["finished"] and parsed["not_run"] == 0 and parsed["errors"] == 1
    assert parsed["failures"][0]["message"] == "AssertionError: ('cls', 5.2, 5.3)"


def test_pytest_output_of_a_collection_error():
    parsed = pytest_output.parse("""collected 0 items / 1 error

ERROR tests/model/test_cuda.py - ModuleNotFoundError: No module named 'pydantic'
=============================== 1 error in 0.40s ===============================
""")
    assert parsed["errors"] == 1 and parsed["failures"][0]["test"] == "tests/model/test_cuda.py"


def test_a_part_past_its_time_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    outcome = runner.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], tmp_path / "part.log", 1.0,
                         tmp_path, dict(os.environ))
    assert outcome.status == "timed_out" and outcome.seconds < 10
    time.sleep(0.2)
    assert not running(int(pid_file.read_text()))  # the background child went with the group


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed here waits for whichever process reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failed_part_reports_the_end_of_its_log(tmp_path):
    outcome = runner.run([sys.executable, "-c", "raise SystemExit('bad config')"], tmp_path / "part.log", 30.0,
                         tmp_path, dict(os.environ))
    assert (outcome.status, outcome.returncode, outcome.reason) == ("failed", 1, "bad config")


def test_placement_rule():
    # S-like pace on a 16-core machine: the loader needs 0.8 cores, far below 0.75 x 15
    easy = placement.decide(500.0, 1.6, 0.75, 0.05, 16)
    assert easy["decision"] == "loader" and easy["loader_cores_needed"] == pytest.approx(0.8)
    assert easy["gpu_time_share_if_on_gpu"] == pytest.approx(0.025)
    # a pace the loader cannot follow on 4 cores: 2.4 cores needed, 2.25 allowed
    assert placement.decide(1500.0, 1.6, 0.75, 0.05, 4)["decision"] == "gpu"
