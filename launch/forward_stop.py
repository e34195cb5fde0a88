"""A training container's PID 1: `python -m launch.forward_stop deepspeed ... launch/pretrain.py ...`.

Kubernetes stops a pod by sending SIGTERM to PID 1 alone. The `deepspeed` command has no handler for it
(as PID 1 the kernel then drops the signal), and DeepSpeed's per-node launcher, signalled, SIGKILLs the
ranks 30 s later. This process runs the launcher command and passes SIGTERM or SIGINT to the training
ranks only (the first processes below it with RANK in their environment; DataLoader workers below them
ignore it), also to ranks that start after the signal; the ranks then checkpoint and exit
(`launch.training.preemption`) and the launchers exit after them.

It exits with the launcher's code, except that a launcher that exits 0 after a forwarded signal becomes
128 + the signal number (143 for SIGTERM): a pod whose job was stopped must not count as succeeded,
or its Job would complete and the JobSet would not restart it from the checkpoint.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

import psutil

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_S = 0.2


def ranks(root: psutil.Process) -> list[psutil.Process]:
    """The training ranks below `root`: on each path down, the first process with RANK in its environment."""
    found = []
    for child in root.children():
        try:
            found.extend([child] if "RANK" in child.environ() else ranks(child))
        except psutil.Error:  # gone, or not ours to read
            pass
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m launch.forward_stop COMMAND [ARG ...]", file=sys.stderr)
        return 2
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    launcher = subprocess.Popen(argv)
    me, signalled = psutil.Process(), set()
    while launcher.poll() is None:
        if received:
            for rank in ranks(me):
                if rank.pid not in signalled:
                    signalled.add(rank.pid)
                    try:
                        rank.send_signal(received[0])
                    except psutil.NoSuchProcess:
                        pass
        time.sleep(POLL_S)
    code = launcher.returncode
    if code < 0:  # the launcher itself died of a signal: the shell's convention
        return 128 - code
    return 128 + received[0] if received and code == 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
