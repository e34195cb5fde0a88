"""Parameter counts and training FLOPs of a model config (AsymDSD or Distillation with Contrast), per component.

    python -m model.summary --config configs/model/asymdsd_s.yaml [--json]

The model is built on the meta device, so even L is summarised instantly without allocating weights.
Training FLOPs are model/flops.py's analytic count per shape at the reference batch of 128.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn

from configuration.cli import add_print_config, print_config, run_cli
from model.config import ModelConfig, load_model_config
from model.flops import training_flops
from model.methods import build_method

REFERENCE_BATCH = 128


def count(module: nn.Module | nn.Parameter | None) -> int:
    if module is None:
        return 0
    if isinstance(module, nn.Parameter):
        return module.numel()
    return sum(p.numel() for p in module.parameters())


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    with torch.device("meta"):
        method = build_method(cfg)
    student, teacher, enc = method.student, method.teacher, method.student.encoder
    return {
        "encoder": count(enc),
        "tokenizer": count(getattr(enc, "patch_embed", None)),
        "pos_embed": count(getattr(enc, "pos_embed", None)),
        "blocks": count(getattr(enc, "blocks", None)),
        "predictor": count(getattr(student, "predictor", None)),
        "mask_token": count(getattr(student, "mask_token", None)),
        "cls_head": count(getattr(student, "cls_head", None)),
        "patch_head": count(getattr(student, "patch_head", None)),
        "student_total": count(student),
        "teacher_total": count(teacher),
    }


def training_gflops_per_shape(cfg: ModelConfig, batch_size: int = REFERENCE_BATCH) -> dict[str, float]:
    """GFLOPs of one training step per shape: the total, then each component."""
    flops = training_flops(cfg, batch_size)
    parts = {name: value / batch_size / 1e9 for name, value in flops.components().items()}
    return {"total": flops.per_shape / 1e9, **parts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/model/asymdsd_s.yaml")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_print_config(parser)
    args = parser.parse_args(argv)
    return run_cli(lambda: summarise(args))


def summarise(args: argparse.Namespace) -> int:
    cfg = load_model_config(args.config)
    if args.print_config:
        print_config(cfg)
        return 0
    counts = parameter_counts(cfg)
    gflops = training_gflops_per_shape(cfg)
    if args.json:
        print(json.dumps({"name": cfg.name, "method": cfg.method, "backbone": cfg.backbone, "mode": cfg.mode,
                          **counts, "train_gflops_per_shape": gflops}))
    else:
        variant = f"mode {cfg.mode}" if cfg.method == "asymdsd" else f"method dwc, backbone {cfg.backbone}"
        print(f"{cfg.name} ({variant})")
        for key, value in counts.items():
            print(f"  {key:<14}{value:>14,}")
        print(f"training GFLOPs per shape (batch {REFERENCE_BATCH})")
        for key, value in gflops.items():
            print(f"  {key:<18}{value:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
