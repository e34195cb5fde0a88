"""What a pretraining job records in MLflow: config, derived sizes, metrics, the encoder, system metrics.

Global rank 0 opens the run (or reopens the checkpoint's run on resume) and writes to it; every node's
local rank 0 attaches a system-metrics monitor with its own node id. The run id is broadcast so every
rank can put it into checkpoints. With `mlflow.enabled: false` nothing is logged and the id is None.
"""

from __future__ import annotations

from pathlib import Path

from configuration.redact import redact
from launch.tracking import NodeSystemMetrics, Tracker, flatten, git_commit, tracking_uri
from launch.training.config import PretrainConfig
from launch.training.distributed import DistEnv, broadcast_object
from pipeline.manifest import Manifest


class RunLog:
    def __init__(self, cfg: PretrainConfig, env: DistEnv, manifests: list[Manifest], ds_config: dict,
                 derived: dict[str, str], resume_run_id: str | None, step: int) -> None:
        """Open (or, with `resume_run_id`, reopen at `step`) the run; `derived` are the sizes computed for it."""
        self.tracker: Tracker | None = None
        self.system_metrics: NodeSystemMetrics | None = None
        self.run_id: str | None = None
        if not cfg.mlflow.enabled:
            return
        uri = tracking_uri(cfg.mlflow.tracking_uri, cfg.output_dir)
        if env.is_main:
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            tags = {"world_size": str(env.world_size), "device": env.device.type,
                    "manifest_digests": ",".join(m.digest for m in manifests), "config_name": cfg.name}
            commit = git_commit()
            if commit:
                tags["git_commit"] = commit
            self.tracker = Tracker(uri, cfg.mlflow.experiment, resume_run_id, cfg.mlflow.run_name, tags)
            public = redact(cfg.model_dump(mode="json"))
            if self.tracker.resumed:
                self.tracker.log_dict(public, f"config/pretrain-resumed-at-step{step}.yaml")
                self.tracker.set_tags({"resumed_at_step": str(step)})
            else:
                self.tracker.log_params(flatten(public))
                self.tracker.log_dict(public, "config/pretrain.yaml")
                self.tracker.log_dict(redact(ds_config), "config/deepspeed.json")
                for i, m in enumerate(manifests):
                    self.tracker.log_dict({"url": m.url, "digest": m.digest, "num_shards": len(m.shards),
                                           "num_samples": m.num_samples}, f"data/dataset-{i}.json")
                self.tracker.log_params({f"derived.{k}": v for k, v in derived.items()})
        self.run_id = broadcast_object(self.tracker.run_id if self.tracker else None)
        if cfg.mlflow.system_metrics and env.is_node_main:
            self.system_metrics = NodeSystemMetrics(uri, self.run_id, env.node_rank,
                                                    cfg.mlflow.system_metrics_interval_s)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.tracker is not None:
            self.tracker.set_tags(tags)

    def log_encoder(self, export_dir: Path) -> None:
        if self.tracker is not None:
            self.tracker.log_dir(export_dir, "encoder")

    def finish(self, status: str) -> None:
        if self.system_metrics is not None:
            self.system_metrics.stop()
        if self.tracker is not None:
            self.tracker.finish(status)
