"""Preemption: a stop signal becomes a checkpoint at a step every rank agrees on, a clean exit and an exact resume.

The quick tests send real signals to forked processes (the handlers never touch the test process): ranks
agreeing over a real gloo group, the watchdog, and the forwarding PID 1 of the Kubernetes pods on a
stand-in process tree. The slow ones stop the real training command and resume it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from launch.training.preemption import STOP_TIMEOUT_EXIT
from tests.conftest import ROOT, free_port
from tests.launch.conftest import PRETRAIN, job_env, launch, launcher, python_pretrain, small_run
from tests.launch.test_pretrain import history, mlflow_uri, run_id_of

FORK = multiprocessing.get_context("fork")


# -- ranks agree -------------------------------------------------------------------------------------

def train_until_stopped(rank: int, world: int, port: int, signal_at: dict[int, int], results) -> None:
    """A stand-in training loop on one rank: SIGTERM to itself at step `signal_at[rank]`, stop when agreed."""
    import torch
    import torch.distributed as dist

    from launch.training.distributed import DistEnv
    from launch.training.preemption import Preemption

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    preemption = Preemption(60.0, DistEnv(rank, world, rank, world, torch.device("cpu")))
    for step in range(1, 11):
        if signal_at.get(rank) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        if preemption.agreed():
            break
    results[rank] = (step, preemption.received, preemption.watchdog.armed_at is not None)


def run_ranks(world: int, signal_at: dict[int, int]) -> dict[int, tuple[int, str | None, bool]]:
    results, port = FORK.Manager().dict(), free_port()
    procs = [FORK.Process(target=train_until_stopped, args=(r, world, port, signal_at, results)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * world
    return dict(results)


def test_one_process_without_a_group_stops_after_the_signalled_step():
    assert run_ranks(1, {0: 4}) == {0: (4, "SIGTERM", True)}


@pytest.mark.parametrize("signal_at, stop", [({1: 3}, 3), ({0: 5, 2: 2}, 2), ({}, 10)])
def test_every_rank_stops_after_the_first_step_any_rank_was_signalled_in(signal_at, stop):
    results = run_ranks(3, signal_at)
    assert {r: step for r, (step, _, _) in results.items()} == {0: stop, 1: stop, 2: stop}
    signalled = {r for r, step in signal_at.items() if step <= stop}  # rank 0 of the second case stops first
    assert {r: got for r, (_, got, _) in results.items()} == {r: "SIGTERM" if r in signalled else None for r in range(3)}
    assert all(armed == bool(signal_at) for _, _, armed in results.values())  # every rank's watchdog counts


# -- the watchdog ------------------------------------------------------------------------------------

def stop_that_hangs(grace_s: float) -> None:
    import torch

    from launch.training.distributed import DistEnv
    from launch.training.preemption import Preemption

    Preemption(grace_s, DistEnv(0, 1, 0, 1, torch.device("cpu")))
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # a checkpoint that does not get written


def test_a_stop_that_outlasts_the_grace_period_is_ended_with_a_message(capfd):
    child = FORK.Process(target=stop_that_hangs, args=(0.5,))
    start = time.monotonic()
    child.start()
    child.join(20)
    assert child.exitcode == STOP_TIMEOUT_EXIT and time.monotonic() - start < 5
    err = capfd.readouterr().err
    assert "[pretrain] error: still running 0.5 s after the stop signal (checkpoint.preemption_grace_s)" in err
    assert "in stop_that_hangs" in err  # the stack shows where it hung


def test_the_watchdog_waits_for_a_signal():
    def unsignalled() -> None:
        from launch.training.preemption import Watchdog

        Watchdog(0.1)
        time.sleep(0.5)

    child = FORK.Process(target=unsignalled)
    child.start()
    child.join(10)
    assert child.exitcode == 0


# -- the pods' PID 1 ---------------------------------------------------------------------------------

FAKE_RANK = """
import os, signal, subprocess, sys, time
log, code, worker = sys.argv[1], int(sys.argv[2]), None
def stop(signum, frame):
    if worker is not None:
        worker.kill()
    open(log, "a").write(f"rank {os.environ['RANK']} got {signum}\\n")
    sys.exit(code)
signal.signal(signal.SIGTERM, stop)
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                           "signal.signal(signal.SIGTERM, lambda s, f: open(%r, 'a').write('worker got it\\\\n')); "
                           "time.sleep(30)" % log])
open(log, "a").write(f"rank {os.environ['RANK']} ready\\n")
time.sleep(30)
"""

FAKE_LAUNCHER = """
import os, signal, subprocess, sys, time
log, code, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
signal.signal(signal.SIGTERM, lambda s, f: open(log, "a").write("launcher got it\\n"))
ranks = []
for rank in range(2):
    time.sleep(rank * delay)
    ranks.append(subprocess.Popen([sys.executable, "-c", %r, log, code], env={**os.environ, "RANK": str(rank)}))
codes = [p.wait() for p in ranks]
open(log, "a").write(f"rank 1 exit {codes[1]}\\n")
sys.exit(max(codes))
"""


@pytest.mark.parametrize("rank_code, expected", [(0, 128 + signal.SIGTERM), (3, 3)])
def test_pid1_hands_the_signal_to_the_ranks_only(tmp_path, rank_code, expected):
    """Ranks get SIGTERM, also one that starts after it; the launcher and the ranks' own children do not.

    Rank 1 starts 1.5 s after rank 0, after the signal: it stops in its handler, or, if the signal comes
    before Python has installed it, dies of it (a rank that has not started training has nothing to save).
    """
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    env["PYTHONPATH"] = str(ROOT)
    pid1 = subprocess.Popen([sys.executable, "-m", "launch.forward_stop", sys.executable, "-c",
                             FAKE_LAUNCHER % textwrap.dedent(FAKE_RANK), str(log), str(rank_code), "1.5"],
                            cwd=ROOT, env=env)
    deadline = time.monotonic() + 20
    while "rank 0 ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and pid1.poll() is None
        time.sleep(0.05)
    pid1.send_signal(signal.SIGTERM)
    assert pid1.wait(20) == expected
    lines = set(log.read_text().splitlines())
    assert {"rank 0 ready", "rank 0 got 15"} <= lines and not {"launcher got it", "worker got it"} & lines, lines
    assert lines - {"rank 0 ready", "rank 0 got 15"} in ({"rank 1 exit -15"},
                                                        {"rank 1 ready", "rank 1 got 15", f"rank 1 exit {rank_code}"})


# -- the training command ----------------------------------------------------------------------------

def start(cmd: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=job_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def read_until(proc: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return
        assert time.monotonic() < deadline, "".join(seen[-50:])
    raise AssertionError(f"ended before {pattern!r}:\n" + "".join(seen[-50:]))


def stop_line(output: str) -> int:
    found = re.search(r"\[pretrain\] preempted: checkpoint (\S+) written at step (\d+), [\d.]+ s after", output)
    assert found, output[-3000:]
    assert Path(found.group(1)).name == f"step{int(found.group(2)):08d}"
    return int(found.group(2))


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_the_resume_repeats_the_losses(pretrain_shards, tmp_path):
    """SIGTERM to the whole process group (rank and DataLoader worker, as torchrun and Ctrl-C send it) after step
    2: the job checkpoints the step it reaches and exits 0; `--resume latest` then logs every later step once,
    each loss equal to the uninterrupted run's (CPU, fp32)."""
    steps = ["train.max_steps=8", "checkpoint.every_steps=0"]
    whole = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "whole", *steps)), tmp_path)
    assert whole.returncode == 0, whole.output[-3000:]

    out = tmp_path / "stopped"
    cmd = python_pretrain("--resume", "latest", *small_run(pretrain_shards, out, "data.num_workers=1", *steps))
    proc, seen = start(cmd, tmp_path), []
    read_until(proc, r"^\[pretrain\] step 2/8 ", seen)
    os.killpg(proc.pid, signal.SIGTERM)
    seen.append(proc.communicate(timeout=120)[0])
    output = "".join(seen)
    assert proc.returncode == 0, output[-3000:]
    assert "[pretrain] SIGTERM: stopping after the step in progress with a checkpoint" in output
    stopped = stop_line(output)
    assert 2 <= stopped < 8 and not (out / "export").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step{stopped:08d}"
    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id_of(output))
    assert run.info.status == "KILLED" and run.data.tags["preempted_at_step"] == str(stopped)

    resumed = launch(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert f"resumed from {out / 'checkpoints' / f'step{stopped:08d}'} at step {stopped}" in resumed.output
    assert run_id_of(resumed.output) == run.info.run_id and client.get_run(run.info.run_id).info.status == "FINISHED"
    expected, got = history(client, run_id_of(whole.output), "loss/total"), history(client, run.info.run_id, "loss/total")
    assert got == {step: [values[0]] for step, values in expected.items()} and sorted(got) == list(range(1, 9))


@pytest.mark.slow
def test_kubernetes_form_a_signal_to_one_pod_stops_both_at_the_same_step(pretrain_shards, tmp_path):
    """Two `deepspeed --no_ssh` nodes on loopback, each under the pods' PID 1; SIGTERM reaches node 0 only.

    Node 1's rank learns of it through the agreement; both stop after the same step, node 0 exits 143 (its
    Job must fail so that the JobSet restarts the group) and node 1 exits 0."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-0 slots=1\nnode-1 slots=1\n")
    port = str(free_port())
    args = small_run(pretrain_shards, tmp_path / "run", "train.max_steps=12", "checkpoint.every_steps=0")
    nodes = [start([sys.executable, "-m", "launch.forward_stop", launcher("deepspeed"), "--no_ssh", "--hostfile",
                    str(hostfile), "--node_rank", str(r), "--master_addr", "127.0.0.1", "--master_port", port,
                    PRETRAIN, "--config", python_pretrain()[3], *args], tmp_path) for r in (0, 1)]
    seen: list[str] = []
    read_until(nodes[0], r"^\[pretrain\] step 2/12 ", seen)
    nodes[0].send_signal(signal.SIGTERM)
    outputs = ["".join(seen) + nodes[0].communicate(timeout=120)[0], nodes[1].communicate(timeout=120)[0]]
    assert [n.returncode for n in nodes] == [128 + signal.SIGTERM, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "[pretrain] SIGTERM on rank 0: stopping after the step in progress" in outputs[0]
    assert "SIGTERM" not in outputs[1]
    stopped = stop_line(outputs[0])
    assert 2 <= stopped < 12
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == f"step{stopped:08d}"
    run = MlflowClient(mlflow_uri(tmp_path)).get_run(run_id_of(outputs[0]))
    assert run.info.status == "KILLED" and run.data.tags["preempted_at_step"] == str(stopped)
    assert sorted(history(MlflowClient(mlflow_uri(tmp_path)), run.info.run_id, "loss/total")) == list(
        range(1, stopped + 1))
