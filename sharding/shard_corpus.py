"""Turn raw shape corpora into WebDataset shards of surface-sampled point clouds, with Ray.

    python -m sharding.shard_corpus --config configs/data/shapenet.yaml --output /data/shards/shapenet
    python -m sharding.shard_corpus --source synthetic:2000 --source generic:/data/my_meshes --output out/
    python -m sharding.shard_corpus --source synthetic:2000 --output out/ --in-process     # no Ray at all
    ray job submit --working-dir . -- python -m sharding.shard_corpus --config configs/data/mixture.yaml ...
    ray submit configs/ray/cluster.yaml sharding/shard_corpus.py -- --config configs/data/mixture.yaml ...

Without a cluster (no --ray-address, no RAY_ADDRESS) a local Ray instance is started; with --in-process
the shard tasks run one after another in this process and Ray is never imported (machines without
Ray, small corpora): the shards and manifest are byte for byte those of a Ray run. Re-running the
same command resumes: finished shards are skipped and the final manifest equals an uninterrupted
run's. With `dedup:` in the config, duplicates and copies of evaluation test shapes are found (and,
as asked, excluded) before the manifest is published (sharding.dedup). Exits 1 when more than
--max-failure-ratio of the inputs failed, or (one `error:` line) when the output cannot be opened, a
source cannot be listed or the dedup stage fails; 2 (one `error:` line) on a bad config or flag;
--print-config prints the resolved job and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a file (`ray submit ... sharding/shard_corpus.py`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from configuration import ConfigError  # noqa: E402
from configuration.cli import add_print_config, print_config, run_cli  # noqa: E402
from configuration.redact import redact_urls  # noqa: E402
from sharding.config import ShardingConfig, SourceConfig, load_sharding_config  # noqa: E402
from sharding.dedup.run import deduplicate  # noqa: E402
from sharding.manifest import (  # noqa: E402
    SAMPLE_FORMAT,
    SampleFormat,
    ShardEntry,
    ShardManifest,
    SourceCounts,
    SplitCounts,
)
from sharding.plan import Plan, build_plan, failure_record  # noqa: E402
from sharding.sources import parse_source  # noqa: E402
from sharding.storage import Output  # noqa: E402
from sharding.writer import ShardJob, build_shard  # noqa: E402

TOOL_VERSION = "asymdsd-scale sharding 1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sharding.shard_corpus", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML job config (configs/data/*.yaml); flags below override it")
    p.add_argument("--source", action="append", default=[], metavar="KIND:PATH",
                   help="add a source, e.g. modelnet40:/data/ModelNet40.zip or synthetic:1000 (repeatable)")
    p.add_argument("--output", help="output directory or URL (local path or s3://bucket/prefix)")
    p.add_argument("--shard-size", type=int, help="samples per shard (default 1000)")
    p.add_argument("--num-points", type=int, help="surface samples per mesh (default 16384)")
    p.add_argument("--dtype", choices=["float32", "float16"], help="stored point dtype (default float32)")
    p.add_argument("--max-failure-ratio", type=float, help="fail the job above this ratio (default 0.01)")
    p.add_argument("--time-limit", type=float, dest="time_limit_s", help="seconds per shape (default 120)")
    p.add_argument("--max-faces", type=int, help="reject meshes with more faces (default 5,000,000)")
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: RAY_ADDRESS, else start a local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--max-in-flight", type=int, default=0, help="shard tasks queued at once (default 2x CPUs)")
    p.add_argument("--in-process", action="store_true",
                   help="no Ray: run the shard tasks one after another in this process (same shards and manifest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    add_print_config(p)
    return p.parse_args(argv)


def job_config(args: argparse.Namespace) -> ShardingConfig:
    """The --config file with the flags over it; a `ConfigError` names what is missing or wrong."""
    try:
        sources = [SourceConfig(kind=s.kind, path=s.path) for s in map(parse_source, args.source)]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    flags = {
        "output": args.output,
        "shard_size": args.shard_size,
        "num_points": args.num_points,
        "dtype": args.dtype,
        "max_failure_ratio": args.max_failure_ratio,
        "time_limit_s": args.time_limit_s,
        "max_faces": args.max_faces,
    }
    cfg = load_sharding_config(args.config, flags, sources)
    if not cfg.sources:
        raise ConfigError("no sources: give --source KIND:PATH or a --config with `sources:`")
    if not cfg.output:
        raise ConfigError("no output: give --output DIR_OR_URL or `output:` in the config")
    names = Counter(s.spec().source_name for s in cfg.sources)
    clashes = [n for n, c in names.items() if c > 1]
    if clashes:
        raise ConfigError(f"sources share the name(s) {clashes}: give each a distinct `name:` "
                          "(it prefixes keys)")
    return cfg


def init_ray(args: argparse.Namespace) -> bool:
    """Connect to a cluster or start a local instance; returns whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=True)
        return False
    # A local instance is private to this job; without this an in-process ray.init writes an auth
    # token that later breaks `ray job submit` on the same machine.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, object_store_memory=256 * 2**20)
    return True


class Progress:
    """The shard progress bar with running totals of shapes written and inputs failed."""

    def __init__(self, total: int, disable: bool) -> None:
        self.bar = tqdm(total=total, unit="shard", disable=disable, file=sys.stderr, dynamic_ncols=True)
        self.shapes = self.failed = 0

    def done(self, record: dict) -> None:
        self.shapes += record["nsamples"]
        self.failed += record["ninputs"] - record["nsamples"]
        self.bar.update(1)
        self.bar.set_postfix(shapes=self.shapes, failed=self.failed, refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_shards(plan: Plan, job: ShardJob, cfg: ShardingConfig, args: argparse.Namespace) -> list[dict]:
    """Every shard's record in plan order, from Ray tasks or, with --in-process, from this process."""
    progress = Progress(len(plan.shards), args.no_progress)
    try:
        if args.in_process:
            records = run_shards_in_process(plan, job, cfg, progress)
        else:
            records = run_shards_on_ray(plan, job, cfg, args, progress)
    finally:
        progress.close()
    return [records[s.name] for s in plan.shards]


def run_shards_on_ray(plan: Plan, job: ShardJob, cfg: ShardingConfig, args: argparse.Namespace,
                      progress: Progress) -> dict[str, dict]:
    """Submit every shard as a Ray task (at most `max_in_flight` queued) and collect the records."""
    import ray

    task = ray.remote(build_shard).options(num_cpus=1, max_retries=cfg.task_retries, retry_exceptions=True)
    max_in_flight = args.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    records: dict[str, dict] = {}
    in_flight: dict[ray.ObjectRef, str] = {}
    pending = iter(plan.shards)
    while True:
        while len(in_flight) < max_in_flight:
            shard = next(pending, None)
            if shard is None:
                break
            in_flight[task.remote(shard.name, plan.refs(shard), job)] = shard.name
        if not in_flight:
            break
        done, _ = ray.wait(list(in_flight), num_returns=1)
        name = in_flight.pop(done[0])
        try:
            record = ray.get(done[0])
        except Exception as err:  # the task failed after all its retries
            record = failed_shard_record(plan, name, err)
        records[name] = record
        progress.done(record)
    return records


def run_shards_in_process(plan: Plan, job: ShardJob, cfg: ShardingConfig, progress: Progress) -> dict[str, dict]:
    """Run the shard tasks one after another here, each tried 1 + `task_retries` times as Ray would."""
    records: dict[str, dict] = {}
    for shard in plan.shards:
        refs = plan.refs(shard)
        for attempt in range(cfg.task_retries + 1):
            try:
                record = build_shard(shard.name, refs, job)
                break
            except Exception as err:
                if attempt == cfg.task_retries:
                    record = failed_shard_record(plan, shard.name, err)
        records[shard.name] = record
        progress.done(record)
    return records


def failed_shard_record(plan: Plan, name: str, err: Exception) -> dict:
    """A shard whose task kept failing: every one of its inputs is counted and logged as failed."""
    shard = next(s for s in plan.shards if s.name == name)
    refs = plan.refs(shard)
    reason = f"shard task failed after retries: {type(err).__name__}: {str(err).splitlines()[0][:500]}"
    counts: dict[str, Counter] = {}
    for r in refs:
        counts.setdefault(r.source, Counter()).update({"inputs": 1, "failed": 1})
    return {"shard": name, "nsamples": 0, "ninputs": len(refs), "filesize": None, "sha256": None,
            "sources": {s: dict(c) for s, c in counts.items()}, "skipped": False, "task_failed": True,
            "failures": [failure_record(r, "shard", reason, name) for r in refs]}


def write_outputs(out: Output, plan: Plan, records: list[dict], cfg: ShardingConfig,
                  seconds: float) -> tuple[ShardManifest, dict]:
    """errors.jsonl, sizes.json, stats.json, the `dedup:` stage's report if configured, manifest.json (last);
    returns the manifest and the stats."""
    failures = list(plan.failures) + [f for r in records for f in r["failures"]]
    out.publish_bytes("".join(json.dumps(f, sort_keys=True) + "\n" for f in failures).encode(), "errors.jsonl")
    written = [r for r in records if not r.get("task_failed")]
    split_of = {s.name: s.split for s in plan.shards}
    out.publish_json({r["shard"]: r["nsamples"] for r in written}, "sizes.json")
    sources: dict[str, Counter] = {}
    for r in records:
        for s, c in r["sources"].items():
            sources.setdefault(s, Counter()).update(c)
    for f in plan.failures:
        sources.setdefault(f["source"], Counter()).update({"inputs": 1, "failed": 1})
    splits: dict[str, Counter] = {}
    for r in written:
        splits.setdefault(split_of[r["shard"]], Counter()).update({"shards": 1, "samples": r["nsamples"]})
    total_samples = sum(r["nsamples"] for r in written)
    manifest = ShardManifest(
        shardlist=[ShardEntry(url=r["shard"], nsamples=r["nsamples"], filesize=r["filesize"],
                              sha256=r["sha256"], split=split_of[r["shard"]]) for r in written],
        total_inputs=plan.total_inputs,
        total_samples=total_samples,
        total_failed=len(failures),
        sources={s: SourceCounts(**{k: c.get(k, 0) for k in ("inputs", "samples", "failed")})
                 for s, c in sorted(sources.items())},
        splits={s: SplitCounts(**c) for s, c in sorted(splits.items())},
        sample=SampleFormat(num_points=cfg.num_points, dtype=cfg.dtype, format=SAMPLE_FORMAT),
        config_hash=cfg.config_hash(),
        plan_hash=plan.plan_hash,
        tool_version=TOOL_VERSION,
    )
    stats = {"seconds": round(seconds, 2), "shapes_per_s": round(total_samples / max(seconds, 1e-9), 2),
             "shards_written": sum(not r.get("skipped") and not r.get("task_failed") for r in records),
             "shards_skipped": sum(bool(r.get("skipped")) for r in records),
             "shards_failed": sum(bool(r.get("task_failed")) for r in records)}
    out.publish_json(stats, "stats.json")
    if cfg.dedup is not None:
        manifest = deduplicate(out, manifest, cfg.dedup)
    out.publish_json(manifest.to_json(), "manifest.json")
    out.clear_tmp()
    return manifest, stats


def top_errors(failures: list[dict], n: int = 5) -> list[tuple[str, int]]:
    counter = Counter(f"{f['stage']}: {f['reason'][:120]}" for f in failures)
    return counter.most_common(n)


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad config or flag is one `error:` line on stderr and exit code 2."""
    return run_cli(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    cfg = job_config(args)
    if args.print_config:
        print_config(cfg)
        return 0
    start = time.perf_counter()
    try:
        out = Output(cfg.output, cfg.storage_options)
        out.clear_tmp()
        workdir = out.plan_dir()
    except Exception as err:  # unreachable endpoint, missing bucket, no permission: nothing was written
        print(redact_urls(f"error: cannot open the output {cfg.output}: {type(err).__name__}: {err}"), file=sys.stderr)
        return 1
    try:
        with tqdm(desc="listing", unit=" inputs", disable=args.no_progress, file=sys.stderr) as listing:
            try:
                plan = build_plan([s.spec() for s in cfg.sources], cfg.shard_size, workdir, listing.update,
                                  cfg.limits())
            except Exception as err:  # unreadable source, hostile archive, bad option: nothing was written
                print(redact_urls(f"error: cannot list the sources: {type(err).__name__}: {err}"), file=sys.stderr)
                return 1
        print(f"planned {plan.total_inputs} inputs into {len(plan.shards)} shards "
              f"({len(plan.failures)} duplicate keys) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        job = ShardJob(cfg.output, cfg.storage_options, {s.spec().source_name: s.spec() for s in cfg.sources},
                       cfg.sample_spec(), cfg.limits(), plan.plan_hash, cfg.config_hash())
        started_ray = not args.in_process and init_ray(args)
        try:
            records = run_shards(plan, job, cfg, args)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
        try:
            manifest, stats = write_outputs(out, plan, records, cfg, time.perf_counter() - start)
        except (OSError, ValueError) as err:  # the dedup stage could not read a test set or fingerprint file
            print(redact_urls(f"error: the shards are written but the dedup stage failed, so no manifest was: "
                              f"{type(err).__name__}: {err} (fix it and re-run: finished shards are skipped)"),
                  file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failures = list(plan.failures) + [f for r in records for f in r["failures"]]
    ratio = manifest.total_failed / max(manifest.total_inputs, 1)
    print(f"done: {manifest.total_samples} samples in {len(manifest.shardlist)} shards, "
          f"{manifest.total_failed} failed ({ratio:.2%}), {stats['shards_skipped']} shards already done, "
          f"{stats['seconds']} s ({stats['shapes_per_s']} shapes/s) -> {redact_urls(cfg.output)}/manifest.json",
          file=sys.stderr)
    if failures:
        print("most common errors (all in errors.jsonl):", file=sys.stderr)
        for text, count in top_errors(failures):
            print(f"  {count:6d}  {text}", file=sys.stderr)
    if ratio > cfg.max_failure_ratio:
        print(f"FAILED: {ratio:.2%} of inputs failed, above --max-failure-ratio {cfg.max_failure_ratio:.2%}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
