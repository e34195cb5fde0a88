"""The fingerprints of one shard's samples, stored next to the shard as `fingerprints/<shard>.npz`.

Row i describes the shard's i-th sample in tar order: its key, its source, the exact fingerprint of
its decoded geometry and the shape descriptor of its stored points (`sharding.fingerprint`). The file
is a plain npz read with `allow_pickle=False`; a file that is not one, or whose arrays disagree, is
a `SidecarError` naming it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from sharding.fingerprint import DESCRIPTOR_SIZE

ARRAYS = ("keys", "sources", "exact", "descriptors")


class SidecarError(ValueError):
    """A fingerprint file that cannot be used; the message names it and what is wrong."""


def sidecar_name(shard: str) -> str:
    return f"fingerprints/{shard}.npz"


@dataclass(frozen=True)
class ShardFingerprints:
    keys: np.ndarray  # (n,) str
    sources: np.ndarray  # (n,) str
    exact: np.ndarray  # (n,) bytes: hex sha256 (sharding.fingerprint.exact_fingerprint)
    descriptors: np.ndarray  # (n, DESCRIPTOR_SIZE) float32

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, str, np.ndarray]]) -> ShardFingerprints:
        """From (key, source, exact hex digest, descriptor) rows in tar order."""
        keys, sources, exact, descriptors = zip(*rows) if rows else ((), (), (), ())
        return cls(np.array(keys, dtype=str), np.array(sources, dtype=str), np.array(exact, dtype="S64"),
                   np.array(descriptors, dtype=np.float32).reshape(len(rows), DESCRIPTOR_SIZE))

    def __len__(self) -> int:
        return len(self.keys)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{name: getattr(self, name) for name in ARRAYS})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> ShardFingerprints:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {a: npz[a] for a in ARRAYS if a in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise SidecarError(f"{name}: not a fingerprint file ({type(err).__name__}: {err})") from None
        missing = [a for a in ARRAYS if a not in arrays]
        if missing:
            raise SidecarError(f"{name}: lacks the arrays {missing}")
        n = len(arrays["keys"])
        kinds = {"keys": "U", "sources": "U", "exact": "S", "descriptors": "f"}
        for a, kind in kinds.items():
            if arrays[a].dtype.kind != kind or len(arrays[a]) != n:
                raise SidecarError(f"{name}: {a} is {arrays[a].dtype} {arrays[a].shape}, expected {n} rows of "
                                   f"kind {kind!r}")
        if arrays["descriptors"].shape != (n, DESCRIPTOR_SIZE):
            raise SidecarError(f"{name}: descriptors are {arrays['descriptors'].shape}, expected ({n}, "
                               f"{DESCRIPTOR_SIZE}); written by another version of the descriptor?")
        return cls(**arrays)
