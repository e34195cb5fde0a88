"""Find duplicate shapes in a sharded dataset and copies of evaluation test shapes; optionally exclude them.

    python -m sharding.dedup /data/shards/mixture                                  # report only
    python -m sharding.dedup /data/shards/mixture --test-set modelnet40_h5:/data/modelnet40_ply_hdf5_2048 \\
        --test-set scanobjectnn:/data/h5_files.zip --exclude duplicate test-set
    python -m sharding.dedup --config configs/data/mixture.yaml       # the job's output, `dedup:` and credentials

Writes `dedup/report.json` (every duplicate group and test-set match) beside the manifest, and rewrites
`manifest.json` with the exclusions (`--exclude`), which the training loader skips. The same stage runs
after sharding when the job config has `dedup:`. Exit code 2 (one `error:` line) on a bad flag or config,
1 when the dataset or a test set cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from configuration import ConfigError, format_validation_error
from configuration.cli import run_cli
from configuration.redact import redact_urls
from sharding.config import DedupConfig, ShardingConfig, TestSetConfig, load_sharding_config
from sharding.dedup.dataset import DedupError, open_dataset
from sharding.dedup.run import REPORT, deduplicate
from sharding.dedup.sidecar import SidecarError
from sharding.manifest import ManifestError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sharding.dedup", description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", help="dataset directory or URL (holding manifest.json and fingerprints/); "
                   "default: the --config job's output")
    p.add_argument("--config", help="the sharding job's YAML: its `dedup:` section (flags below override it), "
                   "its output and that output's storage_options")
    p.add_argument("--tolerance", type=float, help="descriptor distance under which shapes are the same")
    p.add_argument("--test-set", action="append", default=[], metavar="KIND:PATH",
                   help="an evaluation set (scanobjectnn, modelnet40_h5, shapenetpart, objaverse_lvis, shards)")
    p.add_argument("--exclude", nargs="*", choices=["duplicate", "test-set"],
                   help="exclude these from training (default: none, report only)")
    return p.parse_args(argv)


def dedup_config(args: argparse.Namespace, job: ShardingConfig | None) -> DedupConfig:
    """The job's `dedup:` section (or the defaults) with the flags over it."""
    base = (job.dedup if job else None) or DedupConfig()
    update = {}
    if args.tolerance is not None:
        update["tolerance"] = args.tolerance
    if args.exclude is not None:
        update["exclude"] = args.exclude
    if args.test_set:
        update["test_sets"] = [*base.test_sets, *map(test_set_spec, args.test_set)]
    try:
        return DedupConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "flags", DedupConfig, "dedup config")) from None


def test_set_spec(spec: str) -> dict:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ConfigError(f"--test-set must be KIND:PATH, got {spec!r}")
    try:
        return TestSetConfig.model_validate({"kind": kind, "path": path}).model_dump()
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"--test-set {spec}", TestSetConfig, "test set")) from None


def run(args: argparse.Namespace) -> int:
    job = load_sharding_config(args.config) if args.config else None
    cfg = dedup_config(args, job)
    dataset = args.dataset or (job.output if job else None)
    if not dataset:
        raise ConfigError("no dataset: give its directory or URL, or a --config with `output:`")
    try:
        out, manifest = open_dataset(dataset, job.storage_options if job else None)
        updated = deduplicate(out, manifest, cfg)
    except (OSError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        known = isinstance(err, (DedupError, SidecarError, ManifestError))  # their messages name the file
        print(redact_urls(f"error: {err}" if known else f"error: {type(err).__name__}: {err}"), file=sys.stderr)
        return 1
    out.publish_json(updated.to_json(), "manifest.json")
    counts = updated.deduplication.excluded  # always set by deduplicate
    print(f"done: {updated.total_excluded} of {updated.total_samples} samples excluded "
          f"({', '.join(f'{n} {r}' for r, n in sorted(counts.items())) or 'none asked'}); report "
          f"{redact_urls(out.path(REPORT))}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
