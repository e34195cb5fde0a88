"""Draw a few shapes' pictures from an exported encoder, and a run's loss curves; optionally log them to MLflow.

    python -m launch.pictures --encoder runs/demo/checkpoints/<tag>/teacher --synthetic --samples 0 1 2 \
        --out pictures/ [--run-id RUN]
    python -m launch.pictures --encoder DIR --shards data/shards/synthetic --samples 5 --out pictures/
    python -m launch.pictures --run-id RUN --out pictures/          # loss curves only
    python -m launch.pictures --run-id RUN --out pictures/ --format png pdf svg   # vector files too

Per shape: `sample<i>_crops.png`, `sample<i>_masks.png` (models that mask), `sample<i>_attention.png`
(encoders with a CLS token). With `--run-id`, `loss_curves.png` from the run's `loss/*` and learning-rate
history, and every picture is also logged to that run under `pictures/`. `--format` adds PDF and/or SVG
files of each picture (each one logged too).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from configuration.extras import install_hint
from launch.pictures.output import FORMATS, save_figure
from launch.pictures.training import loss_curves_figure, loss_history_from_mlflow


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launch.pictures", description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", help="encoder export directory (encoder.safetensors + model.yaml)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--shards", help="dataset directory or manifest.json (local or s3://) to take shapes from")
    source.add_argument("--synthetic", action="store_true", help="generate the shapes with the synthetic source")
    parser.add_argument("--samples", type=int, nargs="+", default=[0], help="shape indices (default: 0)")
    parser.add_argument("--split", default="train", help="manifest split of --shards (default: train)")
    parser.add_argument("--synthetic-seed", type=int, default=0, help="synthetic corpus seed (default: 0)")
    parser.add_argument("--num-points", type=int, default=16384, help="points per synthetic shape (default: 16384)")
    parser.add_argument("--global-points", type=int, help="points per global crop (default: 16 per patch)")
    parser.add_argument("--local-points", type=int, help="points per local crop (default: 16 per patch)")
    parser.add_argument("--block", type=int, default=-1, help="encoder block of the attention map (default: last)")
    parser.add_argument("--seed", type=int, default=0, help="crop / mask / subsample seed; shape i uses seed + i")
    parser.add_argument("--out", required=True, help="directory for the picture files")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["png"], dest="formats",
                        help="file formats of every picture (default: png)")
    parser.add_argument("--run-id", help="MLflow run: draw its loss curves and log every picture to it")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)
    if (args.shards or args.synthetic) and args.encoder is None:
        parser.error("--shards / --synthetic need --encoder")
    if args.encoder is not None and not (args.shards or args.synthetic):
        parser.error("--encoder needs a shape source: --shards DIR or --synthetic")
    if args.encoder is None and args.run_id is None:
        parser.error("nothing to draw: give --encoder (shape pictures) and/or --run-id (loss curves)")
    if args.synthetic and importlib.util.find_spec("trimesh") is None:
        parser.error(f"--synthetic builds meshes with trimesh, which is not installed: {install_hint('sharding')} "
                     "(or take shapes from --shards)")
    return args


def draw_shapes(args: argparse.Namespace) -> list[Path]:
    from launch.pictures.sample import crop_spec, sample_figures
    from launch.pictures.shapes import shard_shape, synthetic_shape
    from model.export import load_encoder

    encoder, cfg, _ = load_encoder(args.encoder)
    spec = crop_spec(cfg, args.global_points, args.local_points)
    written = []
    for index in args.samples:
        if args.synthetic:
            shape = synthetic_shape(index, args.synthetic_seed, args.num_points)
        else:
            shape = shard_shape(args.shards, index, args.split)
        for kind, fig in sample_figures(shape, encoder, cfg, spec, args.seed + index, args.block).items():
            written += save_figure(fig, args.out, f"sample{index}_{kind}", args.run_id, args.tracking_uri,
                                   args.formats)
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The run's history first: a wrong run id fails before any picture is drawn or logged.
    history = None if args.run_id is None else loss_history_from_mlflow(args.run_id, tracking_uri=args.tracking_uri)
    written = draw_shapes(args) if args.encoder is not None else []
    if history is not None:
        fig = loss_curves_figure(history, title=f"Pretraining curves of run {args.run_id}")
        written += save_figure(fig, args.out, "loss_curves", args.run_id, args.tracking_uri, args.formats)
    for path in written:
        print(f"[pictures] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
