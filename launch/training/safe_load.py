"""Checkpoint files read without running code: torch's weights-only unpickler, with DeepSpeed's few types allowed.

DeepSpeed reads its state files with `torch.load(weights_only=False)`, which runs whatever a pickle in them
asks for; a checkpoint directory on a shared volume is not trusted that far. `WeightsOnlyCheckpointEngine`
replaces the engine's checkpoint engine: saving is DeepSpeed's, loading rebuilds only tensors, plain
containers and `ALLOWED`, the three classes DeepSpeed's ZeRO-1/2 optimizer files hold (the module states
file holds none). A file that names anything else is refused, as is one that is truncated or corrupt,
with a `CheckpointError` that names it. (Importing this module imports DeepSpeed.)
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

from configuration import ConfigError
from launch.training.errors import CheckpointError

ALLOWED = (LossScaler, ZeroStageEnum, fragment_address)
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error: ([^\n]*)")


def load_state_file(path: str, map_location: Any = None) -> Any:
    """The contents of one checkpoint state file, loaded with `weights_only=True` and `ALLOWED`."""
    try:
        with torch.serialization.safe_globals(list(ALLOWED)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        named, said = _REFUSED_GLOBAL.search(text), _UNPICKLER_ERROR.search(text)
        what = (f"it names {named.group(1)}, which checkpoints never hold" if named
                else said.group(1) if said else " ".join(text.split()))
        raise CheckpointError(f"checkpoint file {path} refused (loading it could run code): {what}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"checkpoint file {path} is unreadable (truncated or corrupt?): {reason}") from None


class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine with `load_state_file` as its load."""

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_state_file(path, map_location)


def install_weights_only(engine) -> None:
    """Make `engine` (a DeepSpeedEngine) read its checkpoints through `WeightsOnlyCheckpointEngine`."""
    if type(engine.checkpoint_engine) is not TorchCheckpointEngine:
        raise ConfigError(f"deepspeed.checkpoint: DeepSpeed's {type(engine.checkpoint_engine).__name__} is not "
                          f"supported; only its torch checkpoint engine can be made to load weights-only")
    engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)
