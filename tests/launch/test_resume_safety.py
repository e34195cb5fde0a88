"""Resuming never runs code from a checkpoint, and a broken checkpoint is one `error:` line naming the file.

The slow tests resume from a copy of a real checkpoint written by a short run (ZeRO-0, -1 and -2: their state
files hold different types), after changing it as an attacker or a crash would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.launch.conftest import launch, python_pretrain, small_run

STAGES = ("zero0", "zero1", "zero2")
MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIM_STATES = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


class Payload:
    """Unpickling this runs `exec`, which writes `marker`: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_state_files_load_weights_only_with_deepspeeds_types(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from launch.training.errors import CheckpointError
    from launch.training.safe_load import load_state_file

    state = {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients,
             "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}], "w": torch.ones(4)}
    torch.save(state, tmp_path / "optim_states.pt")
    loaded = load_state_file(str(tmp_path / "optim_states.pt"))
    assert loaded["zero_stage"] is ZeroStageEnum.gradients and loaded["loss_scaler"].cur_scale == 1.0
    assert loaded["param_slice_mappings"] == state["param_slice_mappings"] and torch.equal(loaded["w"], state["w"])

    marker = tmp_path / "payload-ran"
    torch.save({**state, "extra": Payload(marker)}, tmp_path / "planted.pt")
    with pytest.raises(CheckpointError, match="planted.pt refused \\(loading it could run code\\): it names .*exec"):
        load_state_file(str(tmp_path / "planted.pt"))
    assert not marker.exists()


@pytest.fixture(scope="module")
def runs(pretrain_shards, tmp_path_factory) -> dict[str, Path]:
    """Two steps with each DeepSpeed config, checkpointed at step 2."""
    out = {}
    for stage in STAGES:
        tmp = tmp_path_factory.mktemp(stage)
        overrides = small_run(pretrain_shards, tmp / "run", f"deepspeed=configs/deepspeed/{stage}.json",
                              "train.max_steps=2", "mlflow.enabled=false")
        result = launch(python_pretrain(*overrides), tmp)
        assert result.returncode == 0, result.output[-3000:]
        out[stage] = tmp / "run" / "checkpoints"
    return out


def resume(runs: dict[str, Path], stage: str, shards: Path, tmp: Path, change=None):
    """Resume a copy of the stage's checkpoints for one more step, after `change(tag directory)`."""
    checkpoints = tmp / "checkpoints"
    shutil.copytree(runs[stage], checkpoints)
    if change is not None:
        change(checkpoints / "step00000002")
    return launch(python_pretrain("--resume", str(checkpoints), *small_run(
        shards, tmp / "run", f"deepspeed=configs/deepspeed/{stage}.json", "train.max_steps=3", "mlflow.enabled=false",
        f"checkpoint.dir={checkpoints}")), tmp)


def error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output[-3000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_every_zero_stage_resumes_weights_only(runs, pretrain_shards, tmp_path, stage):
    result = resume(runs, stage, pretrain_shards, tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    assert "resumed from" in result.output and "[pretrain] step 3/3" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("stage, name", [("zero0", MODEL_STATES), ("zero1", MODEL_STATES), ("zero2", OPTIM_STATES)])
def test_a_pickle_payload_is_refused_and_never_runs(runs, pretrain_shards, tmp_path, stage, name):
    marker = tmp_path / "payload-ran"

    def plant(tag: Path) -> None:
        state = torch.load(tag / name, map_location="cpu", weights_only=False)  # our own file, trusted here
        state["extra"] = Payload(marker)
        torch.save(state, tag / name)

    result = resume(runs, stage, pretrain_shards, tmp_path, plant)
    assert not marker.exists()
    line = error_line(result)
    assert line == (f"error: checkpoint file {tmp_path / 'checkpoints' / 'step00000002' / name} refused (loading it "
                    f"could run code): it names exec, which checkpoints never hold")


@pytest.mark.slow
@pytest.mark.parametrize("stage, name", [("zero0", MODEL_STATES), ("zero1", OPTIM_STATES)])
def test_a_truncated_state_file_is_named(runs, pretrain_shards, tmp_path, stage, name):
    def truncate(tag: Path) -> None:
        data = (tag / name).read_bytes()
        (tag / name).write_bytes(data[: len(data) // 2])

    line = error_line(resume(runs, stage, pretrain_shards, tmp_path, truncate))
    assert line.startswith(f"error: checkpoint file {tmp_path / 'checkpoints' / 'step00000002' / name} is unreadable")
