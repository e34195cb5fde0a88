"""Encoder exports: the same weights give the same bytes, and they load back as written."""

from __future__ import annotations

import torch

from model.export import CONFIG, METADATA, WEIGHTS, build_encoder, export_encoder, load_encoder


def test_exports_of_the_same_weights_are_byte_identical(tmp_path, tiny_model_config):
    torch.manual_seed(0)
    encoder = build_encoder(tiny_model_config)
    meta = {"step": 40, "mlflow_run_id": "abc", "manifest_digests": ["d1", "d2"]}
    exports = [export_encoder(encoder, tiny_model_config, tmp_path / str(i), meta) for i in range(12)]
    for name in (WEIGHTS, CONFIG, METADATA):
        assert len({(e / name).read_bytes() for e in exports}) == 1, name
    loaded, cfg, loaded_meta = load_encoder(exports[0])
    assert cfg == tiny_model_config and loaded_meta == meta
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in encoder.state_dict().items())
