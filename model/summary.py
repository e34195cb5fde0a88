"""Parameter counts of an AsymDSD model config, per component.

    python -m model.summary --config configs/model/asymdsd_s.yaml [--json]

The model is built on the meta device, so even L is summarised instantly without allocating weights.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn

from model.asymdsd import Student, Teacher
from model.config import ConfigError, ModelConfig, load_model_config


def count(module: nn.Module | nn.Parameter | None) -> int:
    if module is None:
        return 0
    if isinstance(module, nn.Parameter):
        return module.numel()
    return sum(p.numel() for p in module.parameters())


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    with torch.device("meta"):
        student = Student(cfg)
        teacher = Teacher(cfg, student)
    enc = student.encoder
    return {
        "encoder": count(enc),
        "tokenizer": count(enc.patch_embed),
        "pos_embed": count(enc.pos_embed),
        "blocks": count(enc.blocks),
        "predictor": count(getattr(student, "predictor", None)),
        "mask_token": count(getattr(student, "mask_token", None)),
        "cls_head": count(getattr(student, "cls_head", None)),
        "patch_head": count(getattr(student, "patch_head", None)),
        "student_total": count(student),
        "teacher_total": count(teacher),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/model/asymdsd_s.yaml")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        cfg = load_model_config(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    counts = parameter_counts(cfg)
    if args.json:
        print(json.dumps({"name": cfg.name, "mode": cfg.mode, **counts}))
    else:
        print(f"{cfg.name} (mode {cfg.mode})")
        for key, value in counts.items():
            print(f"  {key:<14}{value:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
