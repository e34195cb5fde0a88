"""The manifest schema: what the writer dumps reads back the same, and every bad or missing key is named."""

from __future__ import annotations

import json

import pytest

from sharding.manifest import (
    KIND,
    SAMPLE_FORMAT,
    ManifestError,
    SampleFormat,
    ShardEntry,
    ShardManifest,
    SourceCounts,
    SplitCounts,
    parse_document,
)

URL = "s3://bucket/shards/manifest.json"


def two_split_manifest() -> ShardManifest:
    """9 inputs: 4 + 3 samples in a train and a test shard, 2 failed."""
    return ShardManifest(
        shardlist=[ShardEntry(url="train-000000.tar", nsamples=4, filesize=10240, sha256="a" * 64, split="train"),
                   ShardEntry(url="test-000000.tar", nsamples=3, filesize=8192, sha256="b" * 64, split="test")],
        total_inputs=9,
        total_samples=7,
        total_failed=2,
        sources={"synthetic": SourceCounts(inputs=9, samples=7, failed=2)},
        splits={"test": SplitCounts(shards=1, samples=3), "train": SplitCounts(shards=1, samples=4)},
        sample=SampleFormat(num_points=2048, dtype="float16", format=SAMPLE_FORMAT),
        config_hash="c" * 64,
        plan_hash="d" * 64,
        tool_version="test",
    )


def as_written(doc: dict) -> bytes:
    """The bytes the sharder publishes for a JSON object (sharding.storage.Output.publish_json)."""
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def test_the_manifest_round_trips_byte_for_byte():
    manifest = two_split_manifest()
    doc = manifest.to_json()
    assert doc["__kind__"] == KIND and doc["wids_version"] == 1 and "kind" not in doc
    assert set(doc["shardlist"][0]) == {"url", "nsamples", "filesize", "sha256", "split", "excluded"}
    data = as_written(doc)
    again = parse_document(data, URL)
    assert again == manifest
    assert as_written(again.to_json()) == data  # so the digest of a re-written manifest is the same


def test_shards_without_checks_are_allowed():
    doc = two_split_manifest().to_json()
    for entry in doc["shardlist"]:
        del entry["filesize"], entry["sha256"]
    entries = parse_document(as_written(doc), URL).shardlist
    assert [(e.filesize, e.sha256) for e in entries] == [(None, None), (None, None)]


DELETE = object()


def set_key(doc: dict, dotted: str, value: object) -> dict:
    """`doc` with the value at a dotted key (list indices are numbers) replaced, or deleted."""
    *parents, last = dotted.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("shardlist.0.nsamples", "4", r"shardlist\.0\.nsamples: Input should be a valid integer \(got '4'\)"),
        ("shardlist.0.nsamples", True, r"shardlist\.0\.nsamples: Input should be a valid integer \(got True\)"),
        ("shardlist.1.nsamples", -1, r"shardlist\.1\.nsamples: Input should be greater than or equal to 0"),
        ("shardlist.0.sha256", "not-a-digest", r"shardlist\.0\.sha256: String should match pattern"),
        ("shardlist.0.url", DELETE, r"shardlist\.0\.url: Field required"),
        ("shardlist.0.split", DELETE, r"shardlist\.0\.split: Field required"),
        ("shardlist.0.nsample", 4, r"shardlist\.0\.nsample: unknown key \(allowed: url, nsamples, filesize, "
                                   r"sha256, split, excluded\); did you mean 'nsamples'\?"),
        ("total_failed", DELETE, r"total_failed: Field required"),
        ("sources.synthetic.failed", 2.0, r"sources\.synthetic\.failed: Input should be a valid integer"),
        ("splits.test.shard", 1, r"splits\.test\.shard: unknown key"),
        ("sample.dtype", "float64", r"sample\.dtype: Input should be 'float32' or 'float16' \(got 'float64'\)"),
        ("total_inputs", 10, r"accounting error: 10 inputs != 7 samples \+ 2 failed"),
        ("shardlist.0.excluded", [2, 1], r"shard train-000000.tar: excluded indices must be increasing and distinct"),
        ("shardlist.0.excluded", [4], r"shard train-000000.tar: excluded index 4 is past its 4 samples"),
        ("shardlist.0.excluded", [1], r"total_excluded is 0, but 1 samples are excluded listed in the shards"),
    ],
)
def test_a_bad_or_missing_key_is_named_with_the_file(key, value, message):
    data = as_written(set_key(two_split_manifest().to_json(), key, value))
    with pytest.raises(ManifestError, match=message) as err:
        parse_document(data, URL)
    assert str(err.value).startswith(f"invalid manifest ({URL}):\n")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "__kind__ must be 'wids-shard-index-v1', got 'list'"),
        (b'{"__kind__": "wids-shard-index-v2"}', "__kind__ must be 'wids-shard-index-v1', got 'wids-shard-index-v2'"),
    ],
)
def test_what_is_not_a_manifest_of_ours_is_named_before_its_keys(data, message):
    with pytest.raises(ManifestError, match=f"manifest {URL}: {message}"):
        parse_document(data, URL)


def test_exclusions_read_back_and_must_balance_by_source_split_and_reason():
    doc = two_split_manifest().to_json()
    doc["shardlist"][0]["excluded"] = [0, 3]
    doc["total_excluded"] = 2
    doc["sources"]["synthetic"]["excluded"] = 2
    doc["splits"]["train"]["excluded"] = 2
    doc["deduplication"] = {"report": "dedup/report.json", "report_sha256": "e" * 64, "tolerance": 0.03, "test_sets": ["modelnet40_h5"],
                            "excluded": {"duplicate": 1, "test-set": 1}}
    manifest = parse_document(as_written(doc), URL)
    assert manifest.shardlist[0].excluded == [0, 3] and manifest.total_excluded == 2
    assert as_written(manifest.to_json()) == as_written(doc)
    doc["splits"]["train"]["excluded"] = 1
    with pytest.raises(ManifestError, match="total_excluded is 2, but 1 samples are excluded counted by split"):
        parse_document(as_written(doc), URL)
    doc["splits"]["train"]["excluded"] = 2
    doc["deduplication"]["excluded"]["duplicate"] = 0
    with pytest.raises(ManifestError, match="total_excluded is 2, but 1 samples are excluded counted by reason"):
        parse_document(as_written(doc), URL)
