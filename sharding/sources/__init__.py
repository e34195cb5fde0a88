"""Source readers, one per dataset layout, and the registry that maps `--source KIND:PATH` to them."""

from __future__ import annotations

import importlib

from sharding.sources.base import SourceReader, SourceSpec

READERS: dict[str, type[SourceReader]] = {}


def register(cls: type[SourceReader]) -> type[SourceReader]:
    READERS[cls.kind] = cls
    return cls


BUILTIN = (
    "generic",
    "synthetic",
    "modelnet40",
    "shapenetcore",
    "scanobjectnn",
    "objaverse",
    "abo",
    "future3d",
    "toys4k",
    "gso",
    "omniobject3d",
    "s3dis",
)


def _load_builtin_readers() -> None:
    """Import every built-in reader module for its @register side effect."""
    if len(READERS) < len(BUILTIN):
        for module in BUILTIN:
            importlib.import_module(f"sharding.sources.{module}")


def make_reader(spec: SourceSpec) -> SourceReader:
    _load_builtin_readers()
    cls = READERS.get(spec.kind)
    if cls is None:
        raise ValueError(f"unknown source kind {spec.kind!r}; allowed: {', '.join(sorted(READERS))}")
    return cls(spec)


def parse_source(text: str) -> SourceSpec:
    """'KIND:PATH' (PATH may itself contain ':' as in s3://...), e.g. 'modelnet40:/data/ModelNet40.zip'."""
    kind, sep, path = text.partition(":")
    if not sep or not kind or not path:
        raise ValueError(f"--source must be KIND:PATH, got {text!r}")
    return SourceSpec(kind=kind, path=path)


__all__ = ["READERS", "SourceReader", "SourceSpec", "make_reader", "parse_source", "register"]
