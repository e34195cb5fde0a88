"""The pretrained encoder as plain files: safetensors weights + the model config + provenance.

What evaluation and fine-tuning need is the teacher's point encoder, not the
DeepSpeed checkpoint: an export directory holds

    encoder.safetensors   the backbone's state dict (fp32, batch-norm statistics included), no pickle anywhere
    model.yaml            the full `ModelConfig` that built it
    export.json           provenance: step, epoch, MLflow run and store, dataset manifest digest, ...
    signature.json        the encoder's inputs and output, in MLflow's model-signature format

and `load_encoder` rebuilds the module from those alone, without DeepSpeed or the training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from configuration import read_mapping
from model.backbone import Backbone
from model.backbones import build_backbone, token_width
from model.config import ModelConfig, load_model_config

WEIGHTS = "encoder.safetensors"
CONFIG = "model.yaml"
METADATA = "export.json"
SIGNATURE = "signature.json"


def signature(cfg: ModelConfig) -> dict[str, str]:
    """What the backbone's `forward` reads and returns, as MLflow writes a tensor signature.

    `mlflow.models.ModelSignature.from_dict` reads it back. Free sizes are -1: crops C, patches P or
    points N, and tokens (P, plus one CLS token first where the ViT has one; one per point otherwise).
    """
    def tensor(name: str, shape: list[int], dtype: str = "float32") -> dict:
        return {"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}, "name": name}

    if cfg.backbone == "vit":
        inputs = [tensor("neighborhoods", [-1, -1, cfg.patchify.patch_size, 3]), tensor("centers", [-1, -1, 3])]
    else:
        inputs = [tensor("points", [-1, -1, 3]), tensor("num_points", [-1], "int64")]
    outputs = [tensor("tokens", [-1, -1, token_width(cfg)])]
    return {"inputs": json.dumps(inputs), "outputs": json.dumps(outputs), "params": None}


def export_encoder(encoder: Backbone, cfg: ModelConfig, out_dir: str | os.PathLike,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write the four files atomically enough for readers: each file is renamed into place.

    The same weights, config and metadata give the same bytes. The safetensors header holds one metadata
    entry: safetensors keeps metadata in a hash map, which writes several entries in a random order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in encoder.state_dict().items()}
    _atomic(out / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    _atomic(out / CONFIG, lambda p: p.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)))
    _atomic(out / METADATA, lambda p: p.write_text(json.dumps(metadata or {}, indent=2, sort_keys=True) + "\n"))
    _atomic(out / SIGNATURE, lambda p: p.write_text(json.dumps(signature(cfg), indent=2, sort_keys=True) + "\n"))
    return out


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[Backbone, ModelConfig, dict[str, Any]]:
    """(encoder in eval mode, its model config, the export metadata) from an export directory.

    A malformed `model.yaml` or `export.json` (a YAML tag included) is a `ConfigError` that names the file.
    """
    root = Path(path)
    if not (root / WEIGHTS).is_file():
        raise FileNotFoundError(f"{root} is not an encoder export: {WEIGHTS} is missing")
    cfg = load_model_config(root / CONFIG)
    encoder = build_backbone(cfg)
    state = load_file(str(root / WEIGHTS), device=str(device))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{root / WEIGHTS} does not match {root / CONFIG}: missing {missing}, unexpected {unexpected}")
    meta_path = root / METADATA
    meta = read_mapping(meta_path) if meta_path.is_file() else {}
    return encoder.to(device).eval(), cfg, meta


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
