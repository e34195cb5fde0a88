"""The training job end to end on CPU: every launch path, exact resume, MLflow, the non-finite policy.

Each test runs the real entry point (`launch/pretrain.py` under python, torchrun or the deepspeed
launcher) on real shards written by the sharding job, and reads back what a user would: the MLflow
run, the checkpoints and the exported encoder.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from launch.training.config import load_pretrain_config
from launch.training.optim import Schedule
from model.asymdsd import AsymDSD
from model.config import mask_counts
from model.export import load_encoder
from tests.conftest import ROOT, s3_storage
from tests.launch.conftest import (
    DEMO,
    PRETRAIN,
    free_port,
    job_env,
    launch,
    launcher,
    python_pretrain,
    small_run,
)

SECRET = "SUPERSECRET-4242"


pytestmark = pytest.mark.slow  # every test launches DeepSpeed training in subprocesses


def mlflow_uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def run_id_of(output: str) -> str:
    found = re.findall(r"MLflow run ([0-9a-f]{32})", output)
    assert found, output[-3000:]
    return found[-1]


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for m in client.get_metric_history(run_id, key):
        out.setdefault(m.step, []).append(m.value)
    return out


def student_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["module"]


def test_single_process_run_logs_everything_to_mlflow(pretrain_shards, tmp_path):
    out = tmp_path / "run"
    result = launch(python_pretrain(*small_run(
        pretrain_shards, out, "train.max_steps=4", "data.num_workers=1", "mlflow.system_metrics=true",
        "mlflow.system_metrics_interval_s=0.5", f"data.datasets.0.storage_options.secret_access_key={SECRET}",
        f"data.datasets.0.storage_options.key={SECRET}")), tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id_of(result.output))
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.encoder.dim"] == "96" and params["train.global_batch"] == "8"
    assert params["derived.steps_per_epoch"] == "6" and params["derived.total_steps"] == "24"  # 48 shapes / 8
    assert params["deepspeed.zero_optimization.stage"] == "0"
    assert params["train.precision"] == "auto" and params["derived.precision"] == "fp32"  # auto on a CPU
    assert run.data.tags["world_size"] == "1" and len(run.data.tags["manifest_digests"]) == 64

    losses = history(client, run.info.run_id, "loss/total")
    assert sorted(losses) == [1, 2, 3, 4] and all(0 < v[0] < 20 for v in losses.values())
    assert set(history(client, run.info.run_id, "loss/patch")) == {1, 2, 3, 4}
    lr = history(client, run.info.run_id, "opt/lr")
    assert lr[1] == [pytest.approx(1e-7)] and lr[4][0] > lr[2][0]  # warm-up over 6 steps, logged per step
    speed = history(client, run.info.run_id, "throughput/samples_per_s")
    wait = history(client, run.info.run_id, "data/wait_fraction")
    assert all(v[0] > 0 for v in speed.values()) and all(0 <= v[0] <= 1 for v in wait.values())
    assert "opt/grad_norm" in run.data.metrics and "teacher/momentum" in run.data.metrics
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)

    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    for name in ("config/pretrain.yaml", "config/deepspeed.json", "data/dataset-0.json", "encoder/encoder.safetensors"):
        assert (local / name).is_file(), name
    texts = [p.read_bytes() for p in local.rglob("*") if p.is_file()]
    assert not any(SECRET.encode() in t for t in texts)
    assert SECRET not in str(run.data.params) + str(run.data.tags)

    encoder, cfg, meta = load_encoder(out / "export")
    assert cfg.name == "tiny" and meta["mlflow_run_id"] == run.info.run_id and meta["step"] == 4
    last = out / "checkpoints" / "step00000004"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step00000004"
    teacher = torch.load(last / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["asymdsd"]["teacher"]
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, teacher[f"encoder.{name}"]), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step00000002", "step00000004"]


def test_kill_and_resume_latest_repeats_the_loss_sequence(pretrain_shards, tmp_path):
    """An uninterrupted run vs one SIGKILLed after a checkpoint and resumed: identical losses (CPU, fp32)."""
    steps = ["train.max_steps=8", "checkpoint.keep_last=2"]
    whole = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "whole", *steps)), tmp_path)
    assert whole.returncode == 0, whole.output[-3000:]

    out = tmp_path / "killed"
    cmd = python_pretrain("--resume", "latest", *small_run(pretrain_shards, out, *steps))
    proc = subprocess.Popen(cmd, env=job_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not (latest.is_file() and latest.read_text().strip() >= "step00000004"):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the job ended"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = launch(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "resumed from" in resumed.output

    client = MlflowClient(mlflow_uri(tmp_path))
    a, b = run_id_of(whole.output), run_id_of(resumed.output)
    assert a != b
    for key in ("loss/total", "loss/cls", "loss/patch", "opt/lr"):
        expected, got = history(client, a, key), history(client, b, key)
        assert sorted(got) == list(range(1, 9)), key  # one run, continued: every step is there
        for step, values in got.items():  # steps logged before the kill and again after resuming
            assert values == [expected[step][0]] * len(values), (key, step, values, expected[step])
    final_a = load_file(str(tmp_path / "whole" / "export" / "encoder.safetensors"))
    final_b = load_file(str(out / "export" / "encoder.safetensors"))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.parametrize("how", ["torchrun", "deepspeed"])
def test_two_ranks_equal_one_rank_with_gradient_accumulation(pretrain_shards, tmp_path, how):
    """Same global batches: 2 ranks x 4 samples vs 1 rank x 2 micro-batches of 4 -> same weights.

    The monitor's features are split over the ranks in seeded chunks: both probe to the same accuracies.
    """
    probe = (f"monitor.sets=[{{name: synthetic, dataset: {{kind: shards, path: {pretrain_shards}, test_fraction: 0.34, "
             f"max_points: 512}}, input: {{num_points: 256, num_patches: 16, patch_size: 16}}}}]")
    common = ["train.max_steps=3", "checkpoint.every_steps=3", probe]
    one = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "one", "train.micro_batch=4", *common)),
                 tmp_path)
    assert one.returncode == 0, one.output[-3000:]
    port = str(free_port())
    prefix = ([launcher("torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port]
              if how == "torchrun" else [launcher("deepspeed"), "--num_gpus", "2", "--master_port", port])
    two = launch([*prefix, PRETRAIN, "--config", python_pretrain()[3],
                  *small_run(pretrain_shards, tmp_path / "two", *common)], tmp_path)
    assert two.returncode == 0, two.output[-3000:]

    w1, w2 = (student_weights(tmp_path / d / "checkpoints" / "step00000003") for d in ("one", "two"))
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-5, worst
    t1, t2 = (load_file(str(tmp_path / d / "export" / "encoder.safetensors")) for d in ("one", "two"))
    assert max((t1[k] - t2[k]).abs().max().item() for k in t1) < 1e-5
    client = MlflowClient(mlflow_uri(tmp_path))
    l1, l2 = (history(client, run_id_of(r.output), "loss/total") for r in (one, two))
    assert all(l1[s][0] == pytest.approx(l2[s][0], rel=1e-5) for s in (1, 2, 3))
    for key in ("targets/cls/marginal_entropy", "targets/patch/marginal_entropy", "targets/patch/entropy"):
        m1, m2 = (history(client, run_id_of(r.output), key) for r in (one, two))  # over the global batch
        assert all(m1[s][0] == pytest.approx(m2[s][0], rel=1e-5) for s in (1, 2, 3)), key
    assert client.get_run(run_id_of(two.output)).data.tags["world_size"] == "2"
    for protocol in ("svm", "knn"):
        p1, p2 = (history(client, run_id_of(r.output), f"monitor/synthetic/{protocol}") for r in (one, two))
        assert sorted(p1) == [0, 3] and p1 == p2, (protocol, p1, p2)


def test_two_nodes_without_ssh_on_loopback(pretrain_shards, tmp_path):
    """The Kubernetes form: every node runs `deepspeed --no_ssh --node_rank R` itself."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-0 slots=1\nnode-1 slots=1\n")
    port = str(free_port())
    args = small_run(pretrain_shards, tmp_path / "run", "train.max_steps=3")
    procs = [subprocess.Popen([launcher("deepspeed"), "--no_ssh", "--hostfile", str(hostfile), "--node_rank", str(r),
                               "--master_addr", "127.0.0.1", "--master_port", port, PRETRAIN,
                               "--config", python_pretrain()[3], *args],
                              env=job_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id_of(outputs[0]))
    assert run.data.tags["world_size"] == "2" and run.info.status == "FINISHED"
    assert sorted(history(client, run.info.run_id, "loss/total")) == [1, 2, 3]


def test_non_finite_losses_are_skipped_then_stop_the_job(pretrain_shards, tmp_path):
    """A huge learning rate breaks the weights at step 1; steps 2 and 3 are skipped and the job stops at 3.

    Every skipped step, the last one too, has its line and its log line under the same number as the stop.
    """
    out = tmp_path / "run"
    result = launch(python_pretrain(*small_run(pretrain_shards, out, "optim.lr=1e30", "optim.lr_start=1e30",
                                               "train.max_nonfinite_steps=2", "optim.grad_clip=0")), tmp_path)
    assert result.returncode == 2, result.output[-3000:]
    lines = [line for line in result.output.splitlines() if line.startswith(("[pretrain] step", "error:"))]
    expected = [
        "[pretrain] step 1/24 loss ",
        "[pretrain] step 2: non-finite loss or gradients, step skipped (1 in a row, 1 in all)",
        "[pretrain] step 2/24 loss nan ",
        "[pretrain] step 3: non-finite loss or gradients, step skipped (2 in a row, 2 in all)",
        "[pretrain] step 3/24 loss nan ",
        "error: 2 non-finite steps in a row (train.max_nonfinite_steps) at step 3: lower optim.lr or check the data",
    ]
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines
    client = MlflowClient(mlflow_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("asymdsd-demo").experiment_id])
    assert run.info.status == "FAILED"
    assert history(client, run.info.run_id, "train/nonfinite_steps") == {1: [0.0], 2: [1.0], 3: [2.0]}


def test_skipped_samples_and_read_retries_reach_the_summary_across_a_resume(pretrain_shards, tmp_path):
    """Shard 0 lives on an S3 endpoint that refuses connections: one retry per launch, then its samples are
    skipped. The counts are summed over the launches of the run (they are kept in the checkpoint)."""
    data = tmp_path / "data"
    data.mkdir()
    manifest = json.loads((pretrain_shards / "manifest.json").read_text())
    for i, entry in enumerate(manifest["shardlist"]):
        entry["url"] = "s3://bucket/" + entry["url"] if i == 0 else str(pretrain_shards / entry["url"])
    (data / "manifest.json").write_text(json.dumps(manifest))
    storage = {**s3_storage(f"http://127.0.0.1:{free_port()}"),
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    args = ["--resume", "latest", *small_run(pretrain_shards, tmp_path / "run", f"data.datasets.0.url={data}",
                                             f"data.datasets.0.storage_options={json.dumps(storage)}",
                                             "data.read.retries=1", "data.read.backoff_s=0.01")]
    first = launch(python_pretrain(*args, "train.max_steps=3"), tmp_path)
    assert first.returncode == 0, first.output[-3000:]
    done = re.search(r"\[pretrain\] done: 3 steps, final loss \S+, (\d+) samples skipped, 1 shard read retries,",
                     first.output)
    assert done and 0 < int(done.group(1)) < 16, first.output[-3000:]
    second = launch(python_pretrain(*args, "train.max_steps=6"), tmp_path)
    assert second.returncode == 0, second.output[-3000:]
    assert "resumed from" in second.output
    assert re.search(r"\[pretrain\] done: 6 steps, final loss \S+, 16 samples skipped, 2 shard read retries,",
                     second.output), second.output[-3000:]


@pytest.mark.parametrize("ds", ["zero0", "zero1", "zero2"])
def test_bf16_autocast_keeps_fp32_weights_and_the_ema_reads_them(pretrain_shards, tmp_path, ds):
    """After one bf16 step the teacher is exactly lerp(initial, fp32 student, 1 - m): no low-precision copy is read."""
    overrides = small_run(pretrain_shards, tmp_path / ds, f"deepspeed=configs/deepspeed/{ds}.json",
                          "train.precision=bf16", "train.max_steps=1", "checkpoint.every_steps=1")
    result = launch(python_pretrain(*overrides), tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id_of(result.output))
    assert run.data.params["train.precision"] == "bf16" and run.data.params["derived.precision"] == "bf16"
    assert 0 < run.data.metrics["opt/grad_norm"] < 1e3 and 0 < run.data.metrics["loss/total"] < 20

    cfg = load_pretrain_config(DEMO, overrides)
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights: teacher == student at step 0
    initial = dict(AsymDSD(cfg.model).teacher.named_parameters())
    momentum = Schedule(cfg, steps_per_epoch=6).at(0).distill.momentum
    checkpoint = tmp_path / ds / "checkpoints" / "step00000001"
    student = student_weights(checkpoint)
    teacher = torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["asymdsd"]["teacher"]
    assert all(w.dtype == torch.float32 for w in student.values())
    moved = 0
    for name, start in initial.items():
        assert torch.equal(teacher[name], torch.lerp(start.detach(), student[name], 1.0 - momentum)), name
        moved += not torch.equal(student[name], start)
    assert moved > len(initial) // 2  # the step really changed the student


def probe(mode: str, shards: Path, tmp: Path, stage: int) -> dict:
    """Facts from tests/launch/trainer_probe.py, which drives the trainer step by step in its own process."""
    script = str(ROOT / "tests" / "launch" / "trainer_probe.py")
    result = launch([sys.executable, script, mode, str(shards), str(tmp / "out"), str(stage)], tmp)
    assert result.returncode == 0, result.output[-3000:]
    return json.loads(result.output.split("FACTS ", 1)[1].splitlines()[0])


@pytest.mark.parametrize("stage", [0, 1])
def test_overflowed_loss_scaled_step_is_skipped_and_counted(pretrain_shards, tmp_path, stage):
    """fp16's dynamic loss scale, driven through the real trainer and engine (with and without ZeRO)."""
    facts = probe("loss_scaling", pretrain_shards, tmp_path, stage)
    assert facts["overflow_applied"] is False and facts["overflow_left_everything"] is True
    assert facts["optimizer_state_after_overflow"] == 0  # no Adam moments, no step count
    assert facts["nonfinite_total"] == 1 and facts["scale_after_overflow"] == 2.0**126
    assert facts["streak_after_overflow"] == 0  # the scale calibrating itself does not move towards a stop
    assert facts["floor_applied"] is False and facts["scale_at_floor"] == 2.0**127
    assert facts["streak_at_floor"] == 1 and facts["total_at_floor"] == 2  # at the floor it counts like NaN
    assert facts["clean_applied"] is True and facts["nonfinite_streak"] == 0
    assert facts["scale_after_clean"] == 2.0**10 and facts["clean_steps"] == 1
    assert facts["weights_moved"] and facts["max_weight_difference"] == 0.0  # unscaled exactly
    assert facts["grad_norm"] == pytest.approx(facts["reference_grad_norm"], rel=1e-6)


@pytest.mark.parametrize("stage", [0, 2])
def test_bf16_matmuls_run_in_bf16_inside_the_engine_over_fp32_weights(pretrain_shards, tmp_path, stage):
    """DeepSpeed's engine switches off an autocast opened around it: the student must still run in bf16."""
    facts = probe("autocast", pretrain_shards, tmp_path, stage)
    assert facts["applied"] is True
    assert facts["student_matmuls"] == ["torch.bfloat16"] and facts["teacher_matmuls"] == ["torch.bfloat16"]
    assert facts["weight_dtypes"] == ["torch.float32"]


def test_compiled_training_follows_the_eager_run(pretrain_shards, tmp_path):
    """`train.compile=true` through the engine, checkpoints and export: same losses as eager within 1e-5."""
    runs = {}
    for name, compile_ in (("eager", "false"), ("compiled", "true")):
        result = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / name, "train.max_steps=2",
                                                   f"train.compile={compile_}")), tmp_path)
        assert result.returncode == 0, result.output[-3000:]
        runs[name] = history(MlflowClient(mlflow_uri(tmp_path)), run_id_of(result.output), "loss/total")
    assert sorted(runs["compiled"]) == [1, 2]
    for step, (value,) in runs["eager"].items():
        assert runs["compiled"][step][0] == pytest.approx(value, rel=1e-5, abs=1e-5), step
    eager, compiled = (load_file(str(tmp_path / n / "export" / "encoder.safetensors")) for n in ("eager", "compiled"))
    assert eager.keys() == compiled.keys()
    assert max((eager[k] - compiled[k]).abs().max().item() for k in eager) < 1e-5


def test_observing_the_targets_changes_no_training_number(pretrain_shards, tmp_path):
    """Three steps of two micro-batches with the target statistics gathered and three without: identical."""
    facts = probe("observe", pretrain_shards, tmp_path, 0)
    observed, plain = facts["observed"], facts["plain"]
    assert facts["grad_accum"] == 2 and len(plain["losses"]) == 3
    assert observed["losses"] == plain["losses"] and facts["same_weights"] is True
    assert plain["rows"] == [None] * 3
    cfg = load_pretrain_config(DEMO, [])
    masked = cfg.model.patchify.global_patches - mask_counts(cfg.model.patchify.global_patches,
                                                             cfg.model.masking).num_visible
    crops = 8 * cfg.model.num_global_crops  # both micro-batches of the global batch of 8
    assert observed["rows"] == [{"cls": crops, "patch": crops * cfg.model.masking.num_masks * masked}] * 3


def test_target_decomposition_is_logged_at_logged_steps_and_the_alarm_tags_the_run(pretrain_shards, tmp_path):
    """log_every=2 over 5 steps: targets/* at steps 2, 4 and 5. An alarm floor of ln K (every marginal entropy
    is below it) with a patience of 2 fires at step 4, once per head, with one warning line each and a tag."""
    result = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "run", "train.max_steps=5",
                                               "train.log_every=2", "monitor.collapse.min_marginal_fraction=1.0",
                                               "monitor.collapse.patience=2")), tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    client = MlflowClient(mlflow_uri(tmp_path))
    run = client.get_run(run_id_of(result.output))
    for head in ("cls", "patch"):
        values = {m: history(client, run.info.run_id, f"targets/{head}/{m}") for m in ("entropy", "marginal_entropy", "kl")}
        loss = history(client, run.info.run_id, f"loss/{head}")
        assert all(sorted(v) == [2, 4, 5] for v in values.values()) and sorted(loss) == [2, 4, 5], head
        for step in (2, 4, 5):
            (entropy,), (marginal,), (kl,) = (values[m][step] for m in ("entropy", "marginal_entropy", "kl"))
            assert 0 < entropy < math.log(512) and 0 < marginal < math.log(512), (head, step, entropy, marginal)
            assert kl == pytest.approx(loss[step][0] - entropy, rel=1e-6)
    warnings = [line for line in result.output.splitlines() if line.startswith("[pretrain] warning:")]
    assert [w.split(":")[1] for w in warnings] == [" cls targets look collapsed at step 4",
                                                   " patch targets look collapsed at step 4"], warnings
    assert all("since step 2" in w and "ln K = 6.24" in w for w in warnings), warnings
    tag = run.data.tags["collapse_alarm"]
    assert tag.startswith("cls: marginal entropy ") and "; patch: marginal entropy " in tag, tag
    assert tag.count("< 1 ln K = 6.24 since step 2") == 2, tag
