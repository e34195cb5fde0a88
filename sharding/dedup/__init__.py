"""Duplicates and test-set leakage in a sharded corpus: fingerprints per shard, matching, exclusions."""
