"""Encoder exports: the same weights give the same bytes, and they load back as written."""

from __future__ import annotations

import json

import torch

from model.backbones import build_backbone
from model.export import CONFIG, METADATA, SIGNATURE, WEIGHTS, export_encoder, load_encoder


def test_exports_of_the_same_weights_are_byte_identical(tmp_path, tiny_model_config):
    torch.manual_seed(0)
    encoder = build_backbone(tiny_model_config)
    meta = {"step": 40, "mlflow_run_id": "abc", "manifest_digests": ["d1", "d2"]}
    exports = [export_encoder(encoder, tiny_model_config, tmp_path / str(i), meta) for i in range(12)]
    for name in (WEIGHTS, CONFIG, METADATA, SIGNATURE):
        assert len({(e / name).read_bytes() for e in exports}) == 1, name
    loaded, cfg, loaded_meta = load_encoder(exports[0])
    assert cfg == tiny_model_config and loaded_meta == meta
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in encoder.state_dict().items())


def test_the_signature_describes_what_the_encoder_reads_and_returns(tmp_path, tiny_model_config):
    """MLflow reads `signature.json` back, and the encoder takes and gives tensors of the shapes it states."""
    from mlflow.models import ModelSignature

    from model.patchify import Patches

    export = export_encoder(build_backbone(tiny_model_config), tiny_model_config, tmp_path)
    sig = ModelSignature.from_dict(json.loads((export / SIGNATURE).read_text()))
    (neighborhoods, centers), (tokens,) = sig.inputs.inputs, sig.outputs.inputs
    encoder, cfg, _ = load_encoder(export)
    shape = [3 if s == -1 else s for s in neighborhoods.shape]
    patches = Patches(centers=torch.randn(*[3 if s == -1 else s for s in centers.shape]),
                      neighborhoods=torch.randn(*shape), center_idx=torch.zeros(3, 3, dtype=torch.long),
                      patch_idx=torch.zeros(shape[:3], dtype=torch.long))
    out = encoder(patches)
    assert out.shape == (3, 1 + 3, tokens.shape[-1]) and str(out.dtype) == f"torch.{tokens.type}"
    assert (neighborhoods.name, centers.name, tokens.name) == ("neighborhoods", "centers", "tokens")
