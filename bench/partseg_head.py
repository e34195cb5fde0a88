"""Part-segmentation head benchmark: our split first linear vs concatenating the global feature to every point.

The head's input is [a point's upsampled feature, its shape's global feature]; the official code broadcasts
the global half to every point and runs one linear on the concatenation. We split that linear,
W [x, g] = W_x x + (W_g g)[shape], so the global half runs once per shape and no (points, 2C) tensor is
formed. Same weights, same maths; this times forward + backward of the whole head both ways.

    python -m bench.partseg_head --config configs/model/asymdsd_s.yaml --shapes 16 --points 2048

The last printed line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import add_json_option, benchmark_main, forward_backward_ms
from launch.evaluation.encoders import random_encoder
from launch.evaluation.segmentation import PartSegmenter, split_first_linear
from model.config import load_model_config
from model.features import model_input


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/model/asymdsd_s.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", type=int, default=16, help="shapes per batch (the reference's batch: 16)")
    parser.add_argument("--points", type=int, default=2048, help="points per shape")
    parser.add_argument("--parts", type=int, default=50, help="part classes (ShapeNetPart: 50)")
    parser.add_argument("--steps", type=int, default=5)
    add_json_option(parser)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = load_model_config(args.config)
    torch.manual_seed(0)
    model = PartSegmenter(random_encoder(cfg, 0), 16, args.parts, model_input(cfg, args.points)).to(device)
    local_dim = [m for m in model.upsample if isinstance(m, torch.nn.Linear)][-1].out_features
    local = torch.randn(args.shapes * args.points, local_dim, device=device)
    glob = torch.randn(args.shapes, model.head[0].in_features - local_dim, device=device, requires_grad=True)
    shape_of_point = torch.arange(args.shapes, device=device).repeat_interleave(args.points)

    def concatenated(x: torch.Tensor) -> torch.Tensor:
        return model.head(torch.cat([x, glob[shape_of_point]], dim=-1))

    def split(x: torch.Tensor) -> torch.Tensor:
        return model.head[1:](split_first_linear(model.head, x, glob, shape_of_point))

    model.eval()  # BatchNorm on running statistics and no dropout: both ways see the same function
    with torch.no_grad():
        err = (concatenated(local) - split(local)).abs().max().item()
    results = {"config": cfg.name, "device": str(device), "shapes": args.shapes, "points": args.points,
               "local_dim": local_dim, "global_dim": glob.shape[1], "max_abs_diff": err}
    local.requires_grad_(True)
    for name, fn in (("concatenated", concatenated), ("split_linear", split)):
        ms, peak = forward_backward_ms(fn, local, args.steps, device)
        results[f"{name}_ms"] = round(ms, 2)
        results[f"{name}_peak_mib"] = round(peak, 1)
    results["speedup"] = round(results["concatenated_ms"] / results["split_linear_ms"], 3)
    return results


def show(results: dict) -> None:
    print(f"{results['config']} part-segmentation head, {results['shapes']} shapes x {results['points']} points,"
          f" [{results['local_dim']} local, {results['global_dim']} global], {results['device']}")
    print(f"  concatenated (reference): {results['concatenated_ms']:9.2f} ms/step"
          f"  peak {results['concatenated_peak_mib']} MiB")
    print(f"  split linear (ours):      {results['split_linear_ms']:9.2f} ms/step"
          f"  peak {results['split_linear_peak_mib']} MiB")
    print(f"  speedup x{results['speedup']}   max |diff| {results['max_abs_diff']:.2e}")


main = benchmark_main(parse_args, measure, show)


if __name__ == "__main__":
    sys.exit(main())
