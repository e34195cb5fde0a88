"""The source-reader interface: list a dataset's inputs in its native layout, then load them.

A reader is rebuilt from its `SourceSpec` inside every shard task, so specs stay small and
picklable. Listing streams (930K inputs must plan in little memory). Loading takes the refs of one
shard and reads each container member once (one sequential pass for a tar), yielding one result per
ref: decoded geometry or the exception that explains why not.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from sharding.containers import Container, open_container
from sharding.limits import Limits, ShapeTimeout, time_limit
from sharding.meshio import decode_geometry
from sharding.records import InputRef, Loaded, ShapeError, error_text


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: str  # directory, archive or URL; for `synthetic` the number of shapes
    name: str = ""  # key prefix and count bucket; defaults to the kind
    options: dict = field(default_factory=dict)  # kind-specific options (documented per reader)
    storage_options: dict = field(default_factory=dict)  # passed to fsspec (e.g. S3 endpoint)

    @property
    def source_name(self) -> str:
        return self.name or self.kind


class SourceReader(ABC):
    kind: ClassVar[str]
    y_up: ClassVar[bool] = False  # the published data is Y-up and gets rotated to Z-up
    options: ClassVar[dict[str, object]] = {}  # allowed options with their defaults

    def __init__(self, spec: SourceSpec) -> None:
        unknown = set(spec.options) - set(self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"source {spec.kind}: unknown option(s) {sorted(unknown)}; allowed: {allowed}")
        self.spec = spec
        self.name = spec.source_name
        self.opts = {**self.options, **spec.options}
        self.limits = Limits()  # the planner and the shard writer set the job's limits
        self._containers: dict[str, Container] = {}

    def subset_option(self, option: str, allowed: tuple) -> tuple:
        """A list option drawn from `allowed`, returned in `allowed`'s order so that the listing order
        never depends on how the option was written."""
        value = self.opts[option]
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
            any(v == a and type(v) is type(a) for a in allowed) for v in value
        )
        if not ok:
            raise ValueError(
                f"source {self.kind}: option {option} must be a non-empty list drawn from {list(allowed)}, "
                f"got {value!r}"
            )
        return tuple(a for a in allowed if a in value)

    def container(self, uri: str | None = None) -> Container:
        uri = uri or self.spec.path
        if uri not in self._containers:
            self._containers[uri] = open_container(uri, self.spec.storage_options, self.limits.max_bytes)
        return self._containers[uri]

    def ref(self, member: str, uid: str, container: str | None = None, **fields: object) -> InputRef:
        return InputRef(self.name, self.kind, container or self.spec.path, member, uid, **fields)

    @abstractmethod
    def list_inputs(self) -> Iterator[InputRef]:
        """Every input of the source, streamed in a deterministic order."""

    def decode(self, ref: InputRef, data: bytes, container: Container) -> Loaded:
        """Bytes of `ref.member` -> geometry. Override for multi-sample files or special formats."""
        geometry = decode_geometry(data, ref.member or ref.container, container, ref.member, self.limits.max_bytes)
        return Loaded(geometry, hashlib.sha256(data).hexdigest(), self.y_up)

    def load(self, refs: Iterable[InputRef]) -> Iterator[tuple[InputRef, Loaded | Exception]]:
        """One result per ref; each distinct member is read once, tar archives in a single pass."""
        by_member: dict[tuple[str, str], list[InputRef]] = defaultdict(list)
        for r in refs:
            by_member[(r.container, r.member)].append(r)
        by_container: dict[str, list[str]] = defaultdict(list)
        for container_uri, member in by_member:
            by_container[container_uri].append(member)
        for container_uri, members in by_container.items():
            try:
                container = self.container(container_uri)
            except Exception as err:
                for member in members:
                    for r in by_member[(container_uri, member)]:
                        yield r, err
                continue
            for member, data in container.read_many(members):
                for r in by_member[(container_uri, member)]:
                    if isinstance(data, Exception):
                        yield r, data
                        continue
                    yield r, self._decode_limited(r, data, container)

    def _decode_limited(self, ref: InputRef, data: bytes, container: Container) -> Loaded | Exception:
        """Decode within the time limit; a parser's own error is reported without the content it may quote."""
        try:
            with time_limit(self.limits.time_s):
                return self.decode(ref, data, container)
        except (ShapeError, ShapeTimeout) as err:
            return err
        except Exception as err:
            return ShapeError("decode", f"{ref.member or ref.container}: {error_text(err)}")

    def close(self) -> None:
        for c in self._containers.values():
            c.close()
        self._containers.clear()
