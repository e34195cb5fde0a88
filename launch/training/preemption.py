"""Stopping well when preempted: on SIGTERM or SIGINT every rank finishes its step, checkpoints and exits 0.

The signal only sets a flag. After every optimizer step the ranks combine their flags in one tiny
all-reduce (`agreed`), so a signal that reaches some ranks, or reaches them during different steps,
stops all of them after the same step; the trainer then writes a checkpoint at that step, which
`--resume latest` continues exactly like any other. Further signals change nothing (SIGKILL still
ends a process at once). From the signal (on ranks that were not signalled: from the agreement) a
watchdog gives the process `checkpoint.preemption_grace_s` to exit; past that it prints why, dumps
every thread's stack and exits with `STOP_TIMEOUT_EXIT`, before the scheduler's SIGKILL. `latest` then
still names a complete checkpoint: DeepSpeed writes it after the engine's files.

Who sends the signal to the ranks:
- `python launch/pretrain.py` (one process): the signal itself; a terminal's Ctrl-C is SIGINT.
- `torchrun`: on SIGTERM/SIGINT it sends SIGTERM to every rank's process group and SIGKILLs them after
  `--shutdown-timeout` seconds (default 30), then exits 1 whatever the ranks did: pass
  `--shutdown-timeout` longer than the grace period.
- `deepspeed` on one node or with `--no_ssh` (`deepspeed.launcher.runner`) neither handles nor forwards
  SIGTERM: it dies and the per-node launcher and the ranks run on. That launcher
  (`deepspeed.launcher.launch`), signalled itself, sends SIGTERM to one rank's process tree after the
  other, waiting up to 30 s for each before it SIGKILLs it (not configurable), then exits 1; Ctrl-C
  reaches all of them at once. With the agreement one signalled rank is enough, but the stop must fit in
  those 30 s.
- Kubernetes sends SIGTERM to the container's PID 1 only. The `deepspeed` command as PID 1 has no
  handler, so the kernel drops the signal and the pod is SIGKILLed at the end of its grace period. The
  JobSet in k8s/ therefore runs the launcher under `launch.forward_stop`, which hands the signal to the
  ranks alone, and gives the pods a `terminationGracePeriodSeconds` above this grace period.

DataLoader workers ignore these signals (`pipeline.loader`): launchers that signal whole process trees
would otherwise kill them in the middle of a step.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from launch.training.distributed import DistEnv, any_true

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_TIMEOUT_EXIT = 124  # the process did not finish stopping within the grace period (as timeout(1) exits)
MLFLOW_STATUS = "KILLED"
"""The MLflow status of a preempted run: MLflow's status for a run stopped from outside before its end.

FINISHED would present a partial run as complete and FAILED would report an error that did not happen;
the run carries the tag `preempted_at_step`, and a resumed job sets it back to RUNNING and finishes it.
"""


class Watchdog:
    """Ends the process `grace_s` after `arm()`, so that a stop that hangs exits non-zero instead of waiting for SIGKILL.

    The thread is started up front: `arm` runs in a signal handler, where starting a thread could deadlock.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.armed_at: float | None = None
        self._armed = threading.Event()
        threading.Thread(target=self._watch, name="stop-watchdog", daemon=True).start()

    def arm(self) -> None:
        """Start the clock; later calls keep the first start."""
        if self.armed_at is None:
            self.armed_at = time.monotonic()
            self._armed.set()

    def _watch(self) -> None:
        self._armed.wait()
        time.sleep(max(0.0, self.armed_at + self.grace_s - time.monotonic()))
        os.write(2, f"[pretrain] error: still running {self.grace_s:g} s after the stop signal "
                    f"(checkpoint.preemption_grace_s): exiting with code {STOP_TIMEOUT_EXIT}; `latest` names the "
                    f"newest complete checkpoint. Where each thread was:\n".encode())
        faulthandler.dump_traceback(all_threads=True)
        os._exit(STOP_TIMEOUT_EXIT)


class Preemption:
    """Turns SIGTERM/SIGINT into a stop after the current step that every rank agrees on (installed on creation)."""

    def __init__(self, grace_s: float, env: DistEnv) -> None:
        self.env = env
        self.received: str | None = None  # the first stop signal this rank got
        self.stopping = False
        self.watchdog = Watchdog(grace_s)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        self.watchdog.arm()
        where = f" on rank {self.env.rank}" if self.env.world_size > 1 else ""
        # os.write, not print: a handler may run inside a print of the main thread, which print would re-enter.
        os.write(1, f"[pretrain] {self.received}{where}: stopping after the step in progress with a checkpoint, "
                    f"within checkpoint.preemption_grace_s={self.watchdog.grace_s:g} s\n".encode())

    def agreed(self) -> bool:
        """Whether any rank got a stop signal: one all-reduce, which every rank makes after every step."""
        self.stopping = any_true(self.received is not None, self.env.device)
        if self.stopping:
            self.watchdog.arm()  # a rank that was not signalled counts from here
        return self.stopping

    def report(self, step: int, checkpoint: Path) -> None:
        """Rank 0's line once the stop's checkpoint is written."""
        if self.env.is_main:
            print(f"[pretrain] preempted: checkpoint {checkpoint} written at step {step}, "
                  f"{time.monotonic() - self.watchdog.armed_at:.1f} s after the stop signal; exiting",
                  flush=True)
