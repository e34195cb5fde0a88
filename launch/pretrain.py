"""Pretrain AsymDSD: `python launch/pretrain.py --config configs/pretrain/demo.yaml [KEY=VALUE ...]`.

The same script runs under every launcher:

    python launch/pretrain.py --config C                          # one process, CPU or one GPU
    deepspeed --num_gpus 8 launch/pretrain.py --config C          # one node
    torchrun --nproc_per_node 8 launch/pretrain.py --config C
    deepspeed --hostfile H launch/pretrain.py --config C          # many nodes over SSH
    deepspeed --no_ssh --hostfile H --node_rank R --master_addr A launch/pretrain.py --config C   # Kubernetes

Overrides are dotted config keys (`train.max_steps=100 model.encoder.drop_path=0.2`). The config is
validated, and its directories, data and checkpoint checked (`launch.training.preflight`), before any
process group or model work starts; a problem found then or later in a checkpoint is one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Launchers run this file as a script, which puts launch/ first on sys.path; the project root must be
# importable instead (also without an editable install, e.g. in the container image). Imported as
# `launch.pretrain` (the console script), the path is left alone.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from configuration.cli import add_print_config, print_config, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch/pretrain.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="job YAML (configs/pretrain/*.yaml)")
    p.add_argument("--resume", metavar="latest|PATH",
                   help="'latest': continue from the newest checkpoint in checkpoint.dir if there is one (else start"
                        " fresh); PATH: a checkpoint directory or one tag directory in it")
    p.add_argument("--output-dir", help="shorthand for the override output_dir=DIR")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # from launchers
    add_print_config(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=10")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from launch.training.errors import JOB_ERRORS

    return run_cli(lambda: pretrain(args), errors=JOB_ERRORS)


def pretrain(args: argparse.Namespace) -> int:
    from launch.training.config import load_pretrain_config
    from launch.training.preflight import preflight

    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    cfg = load_pretrain_config(args.config, overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    inputs = preflight(cfg, args.resume)
    from launch.training.distributed import init_distributed
    from launch.training.trainer import Pretrainer, significant

    env = init_distributed(cfg.train.device)
    result = Pretrainer(cfg, env, inputs).run()  # what depends on the world size is checked in there
    loss = "-" if result.last_loss is None else significant(result.last_loss)
    if env.is_main and result.preempted:
        print(f"[pretrain] stopped early: {result.steps} steps, last logged loss {loss}, MLflow run "
              f"{result.mlflow_run_id}; run the same command with --resume latest to continue", flush=True)
    elif env.is_main:
        print(f"[pretrain] done: {result.steps} steps, final loss {loss}, {result.samples_skipped} "
              f"samples skipped, {result.read_retries} shard read retries, encoder export {result.export_dir}, "
              f"MLflow run {result.mlflow_run_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
