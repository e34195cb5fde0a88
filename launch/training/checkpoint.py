"""Checkpoints that resume exactly: DeepSpeed engine state + everything that lives outside the engine.

A checkpoint tag `step00001234/` holds the engine's own files (module, ZeRO-partitioned optimizer state),
and in the client state the teacher (fp32 weights and centering buffers), the optimizer step, the
pipeline's `LoaderState` (seed, epoch, samples consumed), the non-finite counters, the fp16 loss scale,
the counts of skipped samples and shard read retries, and the MLflow run id. Schedules are functions of
the step and model randomness is reseeded from the samples, so this is all a bit-exact continuation needs.
Each tag also carries `teacher/`, the teacher encoder exported as safetensors (`model.export`), so any
checkpoint can be evaluated without DeepSpeed.

Every rank must call `save` (DeepSpeed writes partitioned state per rank and hangs otherwise); the
`latest` file is written by DeepSpeed after the tag is complete, so a job killed mid-save resumes
from the previous tag. Resuming reads every state file weights-only (`launch.training.safe_load`), so a
checkpoint cannot run code. A `--resume` that names no complete checkpoint (found before the engine
starts) and a state file that is truncated, corrupt or refused are each a `CheckpointError` naming it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from launch.training.config import CheckpointConfig
from launch.training.distributed import DistEnv, rank0_decides
from launch.training.errors import CheckpointError

TAG_PATTERN = re.compile(r"^step(\d{8,})$")
TEACHER_EXPORT = "teacher"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


@dataclass
class ClientState:
    step: int  # optimizer steps completed
    loader: dict[str, Any]  # pipeline.order.LoaderState.to_dict() at that step
    teacher: dict[str, Any]  # Teacher.state_dict(): EMA weights and centres
    mlflow_run_id: str | None = None
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    loss_scale: dict[str, Any] | None = None  # launch.training.precision.DynamicLossScale state (fp16 runs)
    samples_skipped: int = 0  # over all ranks: samples replaced because their shard was unusable
    read_retries: int = 0  # over all ranks: shard reads retried after a transient error
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"asymdsd": {k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str) -> ClientState:
        if not data or not isinstance(data.get("asymdsd"), dict):
            raise CheckpointError(f"{where} is not an asymdsd pretraining checkpoint (no 'asymdsd' client state)")
        try:
            return cls(**data["asymdsd"])
        except TypeError as err:
            raise CheckpointError(f"{where}: the 'asymdsd' client state does not match this version ({err})") from None


class Checkpointer:
    """Saves and loads the run's checkpoints in `directory`: when they are due, the engine's and ours."""

    def __init__(self, cfg: CheckpointConfig, directory: Path, engine, env: DistEnv) -> None:
        self.cfg, self.directory, self.engine, self.env = cfg, directory, engine, env
        self.last_save = time.monotonic()
        from launch.training.safe_load import install_weights_only  # DeepSpeed: imported once the engine exists

        install_weights_only(engine)

    def due(self, step: int, last_step: int) -> bool:
        """Every `every_steps`, every `every_minutes` (rank 0's clock decides for all) and at the last step."""
        c = self.cfg
        due = step == last_step or (c.every_steps > 0 and step % c.every_steps == 0)
        if c.every_minutes > 0:
            due |= rank0_decides(time.monotonic() - self.last_save >= 60 * c.every_minutes, self.env.device)
        return due

    def save(self, state: ClientState, export_teacher: Callable[[Path], Path]) -> Path:
        """All ranks: the engine's files and `state` under the step's tag; rank 0 exports the teacher into it."""
        tag = tag_for(state.step)
        self.engine.save_checkpoint(str(self.directory), tag=tag, client_state=state.to_dict())
        if self.env.is_main:
            export_teacher(self.directory / tag / TEACHER_EXPORT)
        barrier()
        if self.env.is_node_main:
            prune(self.directory, self.cfg.keep_last)
        self.last_save = time.monotonic()
        return self.directory / tag

    def load(self, load_dir: Path, tag: str) -> ClientState:
        """The engine's state (module, optimizer) of `load_dir/tag` loaded in place, and our client state."""
        path, client = self.engine.load_checkpoint(str(load_dir), tag=tag, load_module_strict=True,
                                                   load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise CheckpointError(f"checkpoint {load_dir / tag} could not be loaded")
        state = ClientState.from_dict(client, str(load_dir / tag))
        if self.env.is_main:
            print(f"[pretrain] resumed from {load_dir / tag} at step {state.step}", flush=True)
        return state


def resolve_resume(arg: str, checkpoint_dir: Path) -> tuple[Path, str] | None:
    """(directory, tag) to load for `--resume latest|PATH`; None when `latest` finds nothing yet.

    `latest` on an empty directory starts fresh, so the same command serves the first launch and every
    restart of a cluster job. An explicit path that is not a checkpoint is an error, and so is a `latest`
    file that names no complete tag.
    """
    if arg == "latest":
        latest = checkpoint_dir / "latest"
        return _latest_tag(checkpoint_dir) if latest.is_file() else None
    path = Path(arg)
    if (path / "latest").is_file():
        return _latest_tag(path)
    if path.is_dir() and TAG_PATTERN.match(path.name):
        return _complete(path.parent, path.name)
    reason = ("neither a checkpoint directory (with a 'latest' file) nor a tag directory" if path.exists()
              else "no such file or directory")
    raise CheckpointError(f"--resume {arg}: {reason}; give a checkpoint directory or a tag directory like "
                          f".../checkpoints/step00001000")


def _latest_tag(checkpoint_dir: Path) -> tuple[Path, str]:
    latest = checkpoint_dir / "latest"
    tag = latest.read_text().strip()
    if not tag:
        raise CheckpointError(f"{latest} is empty: it should name a tag like step00001000 (or resume from a tag by "
                              f"its path: --resume {checkpoint_dir}/stepNNNNNNNN)")
    if not TAG_PATTERN.match(tag):
        raise CheckpointError(f"{latest} names {tag[:80]!r}, which is not a tag like step00001000")
    if not (checkpoint_dir / tag).is_dir():
        raise CheckpointError(f"{latest} names {tag}, but {checkpoint_dir / tag} does not exist")
    return _complete(checkpoint_dir, tag)


def _complete(checkpoint_dir: Path, tag: str) -> tuple[Path, str]:
    """(checkpoint_dir, tag), once the tag's directory holds the engine's model states file."""
    if not any((checkpoint_dir / tag).glob("*model_states.pt")):
        raise CheckpointError(f"checkpoint {checkpoint_dir / tag} is incomplete: it holds no *model_states.pt file")
    return checkpoint_dir, tag


def prune(checkpoint_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` tags (never the one `latest` points to); returns the deleted."""
    latest_file = checkpoint_dir / "latest"
    latest = latest_file.read_text().strip() if latest_file.is_file() else None
    tags = sorted((p for p in checkpoint_dir.iterdir() if p.is_dir() and TAG_PATTERN.match(p.name)),
                  key=lambda p: int(TAG_PATTERN.match(p.name).group(1)))
    doomed = [p for p in tags[:-keep_last] if p.name != latest] if keep_last else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)  # other nodes sharing the volume may prune the same tag
    return doomed


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
