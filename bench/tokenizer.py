"""Tokenizer benchmark: our split first linear vs the reference's [point, pooled] concatenation.

After each mini-PointNet stage the max-pooled patch descriptor is concatenated to every point and fed
to a linear layer. We split that linear instead, W [x, g] = W_x x + W_g g, so the pooled half runs
once per patch rather than once per point and no (.., K, 2C) tensor is formed. Same weights, same
maths; this measures forward + backward time (and peak CUDA memory) of both on identical input.

    python -m bench.tokenizer --config configs/model/asymdsd_b.yaml --device cuda --patches 16384

The last printed line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import add_json_option, benchmark_main, forward_backward_ms
from model.config import load_model_config
from model.encoder import PointPatchEmbed


def concat_embed(embed: PointPatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """The reference formulation with the same modules: materialise [x, pooled] per point."""
    pooled = None
    for stage in embed.stages:
        if pooled is not None:
            x = torch.cat([x, pooled.expand_as(x)], dim=-1)
        x = stage.layers(x)
        pooled = x.amax(dim=-2, keepdim=True)
    return pooled.squeeze(-2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/model/asymdsd_s.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--patches", type=int, default=2048, help="patches per call (B * crops * P)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    add_json_option(parser)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    cfg = load_model_config(args.config)
    torch.manual_seed(0)
    embed = PointPatchEmbed(cfg.tokenizer, cfg.encoder.dim, cfg.encoder.norm_eps).to(device)
    x = torch.randn(args.patches, cfg.patchify.patch_size, 3, device=device)
    with torch.no_grad():
        err = (embed._embed(x) - concat_embed(embed, x)).abs().max().item()
    results = {"config": cfg.name, "device": str(device), "dtype": dtype, "patches": args.patches,
               "patch_size": cfg.patchify.patch_size, "max_abs_diff": err}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        for name, fn in (("concat_reference", lambda t: concat_embed(embed, t)), ("split_linear", embed._embed)):
            ms, peak = forward_backward_ms(fn, x, args.steps, device)
            results[f"{name}_ms"] = round(ms, 2)
            results[f"{name}_peak_mib"] = round(peak, 1)
    results["speedup"] = round(results["concat_reference_ms"] / results["split_linear_ms"], 3)
    return results


def show(results: dict) -> None:
    print(f"{results['config']} tokenizer, {results['patches']} patches x {results['patch_size']} pts,"
          f" {results['device']} {results['dtype']}")
    print(f"  concat (reference): {results['concat_reference_ms']:9.2f} ms/step"
          f"  peak {results['concat_reference_peak_mib']} MiB")
    print(f"  split linear (ours): {results['split_linear_ms']:8.2f} ms/step"
          f"  peak {results['split_linear_peak_mib']} MiB")
    print(f"  speedup x{results['speedup']}   max |diff| {results['max_abs_diff']:.2e}")


main = benchmark_main(parse_args, measure, show)


if __name__ == "__main__":
    sys.exit(main())
