"""`synthetic`: N procedurally generated, labelled meshes (see sharding.synthetic).

It lets a laptop demo and the tests run exactly the same path as real data. The source path is the
number of shapes (`--source synthetic:2000`). Each face carries its semantic part (a chair's seat,
legs, back...), so the shards get per-point part labels. Listing generates nothing, since an input's
family follows from its index alone; shapes are built inside the shard task that loads them.
Options:
  seed (0): which corpus; the same seed and index always give the same mesh.
  split ("train"): the manifest split of its shapes, e.g. a held-out "test" corpus with another seed
    (give the two sources different names so that their keys differ).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator

from sharding.limits import time_limit
from sharding.records import InputRef, Loaded, ShapeError
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec
from sharding.synthetic import family_of, generate_shape

CONTAINER = "synthetic"


def parse_count(path: str) -> int:
    """The number of shapes from the source path: a positive decimal integer, nothing else."""
    text = path.strip()
    if not text.isdecimal() or not text.isascii() or int(text) <= 0:
        raise ValueError(f"source synthetic: the path must be a positive number of shapes (synthetic:N), "
                         f"got {path!r}")
    return int(text)


@register
class SyntheticReader(SourceReader):
    kind = "synthetic"
    y_up = False
    options = {"seed": 0, "split": "train"}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.count = parse_count(spec.path)
        seed = self.opts["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"source synthetic: option seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        split = self.opts["split"]
        if not isinstance(split, str) or not split.isidentifier():
            raise ValueError(f"source synthetic: option split must be a name like 'train' or 'test', got {split!r}")
        self.split = split

    def list_inputs(self) -> Iterator[InputRef]:
        for i in range(self.count):
            family = family_of(i)
            yield self.ref("", f"{i:07d}", container=CONTAINER, label=family, category=family,
                           split=self.split)

    def load(self, refs: Iterable[InputRef]) -> Iterator[tuple[InputRef, Loaded | Exception]]:
        """Generate each ref's mesh; its hash covers the generated arrays and part labels, so the manifest
        pins them."""
        for ref in refs:
            try:
                with time_limit(self.limits.time_s):
                    mesh, family = generate_shape(int(ref.uid), self.seed)
            except Exception as err:
                yield ref, err
                continue
            if family != ref.label:  # a plan listed by a version of the generator with other families
                reason = f"shape {ref.uid} is a {family}, but the plan labels it {ref.label}"
                yield ref, ShapeError("load", reason)
                continue
            digest = hashlib.sha256(mesh.vertices.tobytes())
            digest.update(mesh.faces.tobytes())
            digest.update(mesh.face_parts.tobytes())
            digest.update(json.dumps(mesh.part_names).encode())
            yield ref, Loaded(mesh, digest.hexdigest(), y_up=False)
