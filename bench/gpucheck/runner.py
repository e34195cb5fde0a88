"""Each part of the check runs as its own process group, against a deadline, its output in a log file.

A part past its time is killed with its whole process group (DataLoader workers, compile workers), so
nothing it started keeps the GPU or the cores; a part that would start with too little time left is
not started. Either way its `Outcome` says so: nothing is dropped silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Outcome:
    status: str  # ok | failed | timed_out | skipped | not_available
    seconds: float = 0.0
    returncode: int | None = None
    reason: str | None = None
    log: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Clock:
    """The whole check's time budget."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


@dataclass
class Running:
    """A started part: finish it with `wait`."""

    process: subprocess.Popen
    log: Path
    started: float
    limit_s: float

    def wait(self) -> Outcome:
        """Wait until the part ends or its time is up; then end whatever is left of its process group."""
        try:
            code = self.process.wait(timeout=max(self.limit_s - (time.monotonic() - self.started), 0.0))
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            self.process.wait()
            return Outcome("timed_out", time.monotonic() - self.started, reason=f"killed after {self.limit_s:.0f} s",
                           log=str(self.log))
        _kill_group(self.process)  # workers it left behind
        seconds = time.monotonic() - self.started
        if code == 0:
            return Outcome("ok", seconds, 0, log=str(self.log))
        return Outcome("failed", seconds, code, reason=last_lines(self.log), log=str(self.log))


def start(argv: list[str], log: Path, limit_s: float, cwd: Path, env: dict[str, str]) -> Running:
    """Start `argv` in a new session (its own process group), stdout and stderr into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Running(process, log, time.monotonic(), limit_s)


def run(argv: list[str], log: Path, limit_s: float, cwd: Path, env: dict[str, str]) -> Outcome:
    return start(argv, log, limit_s, cwd, env).wait()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_lines(log: Path, count: int = 5) -> str:
    """The end of a log, for the report of a failed part."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return "\n".join(lines[-count:])
