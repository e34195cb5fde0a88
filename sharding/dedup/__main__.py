"""Find duplicate shapes in a sharded dataset and copies of evaluation test shapes; optionally exclude them.

    python -m sharding.dedup /data/shards/mixture                                  # report only
    python -m sharding.dedup /data/shards/mixture --test-set modelnet40_h5:/data/modelnet40_ply_hdf5_2048 \\
        --test-set scanobjectnn:/data/h5_files.zip --exclude duplicate test-set
    python -m sharding.dedup s3://bucket/shards/objaverse --config configs/data/mixture.yaml  # its `dedup:`

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
from sharding.config import DedupConfig, TestSetConfig, load_sharding_config
from sharding.dedup.run import REPORT, deduplicate
from sharding.manifest import ManifestError, parse_document
from sharding.storage import Output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sharding.dedup", description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset directory or URL (holding manifest.json and fingerprints/)")
    p.add_argument("--config", help="sharding job YAML whose `dedup:` section to use; flags below override it")
    p.add_argument("--tolerance", type=float, help="descriptor distance under which shapes are the same")
    p.add_argument("--test-set", action="append", default=[], metavar="KIND:PATH",
                   help="an evaluation set (scanobjectnn, modelnet40_h5, shapenetpart, objaverse_lvis, shards)")
    p.add_argument("--exclude", nargs="*", choices=["duplicate", "test-set"],
                   help="exclude these from training (default: none, report only)")
    return p.parse_args(argv)


def dedup_config(args: argparse.Namespace) -> DedupConfig:
    base = (load_sharding_config(args.config).dedup if args.config else None) or DedupConfig()
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
    cfg = dedup_config(args)
    try:
        out = Output(args.dataset)
        manifest = parse_document(out.read_bytes("manifest.json"), out.path("manifest.json"))
        updated = deduplicate(out, manifest, cfg, lambda line: print(line, file=sys.stderr))
    except (OSError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        print(redact_urls(f"error: {type(err).__name__ if not isinstance(err, ManifestError) else 'manifest'}: "
                          f"{err}"), file=sys.stderr)
        return 1
    out.publish_json(updated.to_json(), "manifest.json")
    counts = updated.deduplication.excluded if updated.deduplication else {}
    print(f"done: {updated.total_excluded} of {updated.total_samples} samples excluded "
          f"({', '.join(f'{n} {r}' for r, n in sorted(counts.items())) or 'none asked'}); report "
          f"{redact_urls(out.path(REPORT))}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
