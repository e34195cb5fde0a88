"""Multi-crop of one stored point cloud, as the official AsymDSD data module does it, but fast.

Per crop: a uniformly random 3-D rotation R and axis weights w (a random permutation of (1, 1/sqrt(a),
sqrt(a)), a ~ U(aspect)) define an oriented box around a uniformly random point c of the cloud; the box
grows until it holds n = min(max(floor(s N), n_min), N) points, s ~ U(scale), i.e. the n points with the
smallest d(p) = max_i |w_i (R (p - c))_i| are kept. If n exceeds the crop size they are subsampled uniformly
without replacement. The returned points are not rotated by R. Each crop is then rotated about Z by
U(0, 2 pi), scaled per axis by U(scale) and zero-padded to the crop size.

The per-point passes are compiled with Numba (`pipeline.compiled`) and the n nearest points come from an
O(N) partition, never a sort; BENCHMARKS.md has the measurements behind each choice. The compiled box
distance gives the same float32 bits on every CPU, so a sample's crops do not depend on the host.

Exactness: {d <= t} is the n nearest unless several points tie at t; the tie is then completed by a uniform
choice among the tied points, one of the arbitrary tie-breaks the reference allows. The subsample is a
uniform m-subset of the n nearest (see `uniform_subsets`; integers are floor(u n) of 53-bit uniforms u, as
for the box centre). So the crops have the reference's distribution. Every random draw comes from the
`rng` argument, so a sample's crops are a pure function of the generator's state (NumPy's `Generator`
methods may change streams across NumPy versions).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.compiled import compiled
from pipeline.config import AugmentConfig, CropConfig, MultiCropConfig


@dataclass
class Crops:
    """The crops of one kind of one sample."""

    points: np.ndarray  # (count, points, 3) float32, zero-padded past num_points
    num_points: np.ndarray  # (count,) int64


@dataclass(frozen=True)
class Boxes:
    """Crop boxes of C crops of one cloud; exposed so that tests can check the box property."""

    lhs: np.ndarray  # (C, 3, 4) float32 [frame | -frame @ centre]: box coordinates of homogeneous points
    center_idx: list[int]  # index of each box centre in the cloud
    sizes: list[int]  # n, the number of points each box grows to

    @property
    def frames(self) -> np.ndarray:
        """(C, 3, 3): row i = w_i * (row i of R), the weighted axes of each box frame."""
        return self.lhs[:, :, :3]


class _Workspace(threading.local):
    """Per-thread work arrays, grown on demand and reused across samples.

    A fresh array of a few hundred KB costs a page fault per 4 KiB on every sample once the allocator
    has returned it to the OS; reusing also keeps the working set small enough to stay in L2 cache.
    """

    def __init__(self) -> None:
        self.capacity = -1
        self.size = -1

    def load(self, cloud: np.ndarray) -> _Workspace:
        """Holds `cloud` as (3, N) `coords` (rows x, y, z: the distance pass vectorises); returns self.

        Also: `dist` (N,) float32, `part` (N,) int32 and `mask` (N,) bool scratch, and `seen` (>= N,)
        bool, all False between uses (`uniform_subsets` restores it).
        """
        n = len(cloud)
        if n > self.capacity:
            self.buffer = np.empty(5 * n, np.float32)
            self.mask_buffer = np.empty(n, np.bool_)
            self.seen = np.zeros(n, np.bool_)
            self.capacity, self.size = n, -1
        if n != self.size:  # views for this size
            self.coords = self.buffer[: 3 * n].reshape(3, n)
            self.dist = self.buffer[3 * n : 4 * n]
            self.part = self.buffer[4 * n : 5 * n].view(np.int32)
            self.mask = self.mask_buffer[:n]
            self.size = n
        np.copyto(self.coords, cloud.T)
        return self


_WORKSPACE = _Workspace()


# The six orders of the axis weights (1, 1/sqrt(a), sqrt(a)), as indices into that triple.
_WEIGHT_ORDERS = np.array(list(itertools.permutations(range(3))), np.int64)


@compiled
def rotation_from_quaternion(w, x, y, z):
    """Rotation matrix, row-major as 9 floats, of the quaternion (w, x, y, z) of any non-zero norm.

    With (w, x, y, z) a standard 4-D Gaussian the rotation is uniform on SO(3) (its direction is uniform).
    """
    s = 1.0 / (w * w + x * x + y * y + z * z)
    return (
        (w * w + x * x - y * y - z * z) * s, 2 * (x * y - w * z) * s, 2 * (x * z + w * y) * s,
        2 * (x * y + w * z) * s, (w * w - x * x + y * y - z * z) * s, 2 * (y * z - w * x) * s,
        2 * (x * z - w * y) * s, 2 * (y * z + w * x) * s, (w * w - x * x - y * y + z * z) * s,
    )


def random_rotations(count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3, 3) float64 rotations uniform on SO(3)."""
    quaternions = rng.standard_normal((count, 4)).tolist()
    return np.array([rotation_from_quaternion(*q) for q in quaternions]).reshape(count, 3, 3)


@functools.lru_cache(maxsize=16)
def _crop_rows(kinds: tuple[CropConfig, ...]) -> np.ndarray:
    """(crops, 5) float64, per crop in order: scale low, scale span, aspect low, aspect span, crop size
    (= n_min). Read-only: the cache hands out the same array."""
    rows = np.array([
        (k.scale[0], k.scale[1] - k.scale[0], k.aspect[0], k.aspect[1] - k.aspect[0], k.points)
        for k in kinds
        for _ in range(k.count)
    ], np.float64)
    rows.flags.writeable = False
    return rows


def draw_boxes(cloud: np.ndarray, kinds: tuple[CropConfig, ...], rng: np.random.Generator) -> Boxes:
    """Draw the boxes of all crops of all `kinds`, in order, around points of the (N, 3) `cloud`.

    Two batched draws serve every crop: a Gaussian quaternion, and four uniforms for the size fraction,
    the aspect ratio, the order of the axis weights (one of 6, uniformly) and the centre. The per-crop
    arithmetic on these few scalars (`_box_rows`) is compiled: as numpy calls on arrays of 6 it was all
    call overhead, and in plain Python it cost ~30 us per sample more.
    """
    rows = _crop_rows(kinds)
    count = len(rows)
    quaternions = rng.standard_normal((count, 4))
    uniforms = rng.random((count, 4))
    lhs = np.empty((count, 3, 4), np.float32)
    center_idx = np.empty(count, np.int64)
    sizes = np.empty(count, np.int64)
    _box_rows(quaternions, uniforms, rows, cloud, lhs, center_idx, sizes)
    return Boxes(lhs, center_idx.tolist(), sizes.tolist())


@compiled
def _box_rows(quaternions, uniforms, rows, cloud, lhs, center_idx, sizes):
    """Per crop: the centre floor(u N) (uniform up to the 2^-53 resolution of u), the frame rows
    w_i R_i and their offsets -w_i R_i . c in float64 (stored as float32), and the box size n."""
    num_points = len(cloud)
    for c in range(len(rows)):
        s_low, s_span, a_low, a_span, n_min = rows[c, 0], rows[c, 1], rows[c, 2], rows[c, 3], rows[c, 4]
        u_size, u_aspect, u_order, u_center = uniforms[c, 0], uniforms[c, 1], uniforms[c, 2], uniforms[c, 3]
        center = int(u_center * num_points)
        center_idx[c] = center
        cx, cy, cz = np.float64(cloud[center, 0]), np.float64(cloud[center, 1]), np.float64(cloud[center, 2])
        root = np.sqrt(a_low + a_span * u_aspect)
        weights = (1.0, 1.0 / root, root)
        order = _WEIGHT_ORDERS[int(u_order * 6)]
        rotation = rotation_from_quaternion(quaternions[c, 0], quaternions[c, 1], quaternions[c, 2],
                                            quaternions[c, 3])
        for axis in range(3):
            w = weights[order[axis]]
            r0, r1, r2 = rotation[3 * axis], rotation[3 * axis + 1], rotation[3 * axis + 2]
            lhs[c, axis, 0], lhs[c, axis, 1], lhs[c, axis, 2] = w * r0, w * r1, w * r2
            lhs[c, axis, 3] = -w * (r0 * cx + r1 * cy + r2 * cz)
        size = int(np.floor((s_low + s_span * u_size) * num_points))
        sizes[c] = min(max(size, int(n_min)), num_points)


def box_distance(coords: np.ndarray, lhs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N,) float32 weighted Chebyshev distance max_i |frame_i . (p - centre)| of every point p.

    coords: (3, N) float32 rows x, y, z (further rows are ignored); lhs: (3, 4) float32 from
    `Boxes.lhs`, the box coordinates of homogeneous points; out: (N,) float32 result (new if None).
    One crop at a time keeps the work in L2 cache; the (N, 3) layout would not vectorise (4x slower).
    """
    out = np.empty(coords.shape[1], np.float32) if out is None else out
    return _box_distance(coords[0], coords[1], coords[2], lhs, out)


@compiled
def _box_distance(xs, ys, zs, lhs, out):
    # Float32 throughout, each row as ((a x + b y) + c z) + offset: fixed order, no fused multiply-add
    # (no fast-math), so the bits are the same for any SIMD width.
    a0, a1, a2, a3 = lhs[0, 0], lhs[0, 1], lhs[0, 2], lhs[0, 3]
    b0, b1, b2, b3 = lhs[1, 0], lhs[1, 1], lhs[1, 2], lhs[1, 3]
    c0, c1, c2, c3 = lhs[2, 0], lhs[2, 1], lhs[2, 2], lhs[2, 3]
    for j in range(len(out)):
        x, y, z = xs[j], ys[j], zs[j]
        u = abs(a0 * x + a1 * y + a2 * z + a3)
        v = abs(b0 * x + b1 * y + b2 * z + b3)
        w = abs(c0 * x + c1 * y + c2 * z + c3)
        m = u if u > v else v
        out[j] = m if m > w else w
    return out


def nearest(
    distances: np.ndarray,
    n: int,
    rng: np.random.Generator,
    part: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the n smallest of the non-negative float32 `distances`, ties at the n-th broken at random.

    `part` (N,) int32 and `mask` (N,) bool: optional scratch (overwritten) for the partition and the mask.
    """
    if n >= distances.size:
        return np.arange(distances.size)
    keys = distances.view(np.int32)  # same order as the floats for non-negative values (IEEE 754)
    part = np.empty_like(keys) if part is None else part
    np.copyto(part, keys)
    part.partition(n - 1)
    t = part[n - 1]
    kept = np.less_equal(keys, t, out=mask).nonzero()[0]
    if kept.size > n:
        below = (keys < t).nonzero()[0]
        tied = (keys == t).nonzero()[0]
        kept = np.concatenate([below, rng.choice(tied, n - below.size, replace=False)])
    return kept


def _draw_count(n: int, m: int) -> int:
    """Uniform draws from [0, n) that hold m distinct values in all but a few in a thousand cases.

    0 where m > n / 2: such a batch would be long (coupon collector), and `rng.choice` is used instead.
    """
    if 2 * m > n:
        return 0
    expected = -n * math.log1p(-m / n)  # sum over the m distinct values of n / (values not yet seen)
    return int(expected + 3 * math.sqrt(expected - m + 1)) + 8


def uniform_subsets(
    populations: list[int], sizes: list[int], rng: np.random.Generator, seen: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per (n, m) with m < n: m distinct integers of [0, n), every m-subset equally likely, independently.

    Each subset is the first m distinct values of its own run of uniform draws (a value is floor(u n),
    uniform up to the 2^-53 resolution of u): each new distinct value is uniform over the values not seen
    yet, so they form a uniform m-subset. All runs come from one `rng.random` batch, scanned by a compiled
    loop that marks the values seen (`_first_distinct`). In the pipeline this costs far less than one
    `rng.choice(n, m, replace=False)` per crop, which pays a large per-call overhead and a Floyd or
    tail-shuffle loop (and less than numpy's `minimum.at` marking of first draws, used before). A run with
    fewer than m distinct values, or a subset with m > n / 2, is drawn by `rng.choice` instead: whether a
    run falls short does not depend on which values it holds, so the subset stays uniform either way. The
    subsets come in draw order, not sorted.

    seen: optional (>= max n,) bool scratch, all False, restored on return (new if None).
    """
    counts = [_draw_count(n, m) for n, m in zip(populations, sizes)]
    subsets: list = [None] * len(populations)
    runs = [i for i, count in enumerate(counts) if count]
    if runs:
        run_sizes = np.array([populations[i] for i in runs], np.int64)
        wanted = np.array([sizes[i] for i in runs], np.int64)
        seen = np.zeros(run_sizes.max(), np.bool_) if seen is None else seen
        values = np.empty(wanted.sum(), np.int64)
        found = _first_distinct(rng.random(sum(counts[i] for i in runs)), run_sizes,
                                np.array([counts[i] for i in runs], np.int64), wanted, seen, values)
        end = 0
        for i, m, hits in zip(runs, wanted.tolist(), found.tolist()):
            start, end = end, end + m
            if hits == m:
                subsets[i] = values[start:end]
    for i, subset in enumerate(subsets):
        if subset is None:
            subsets[i] = rng.choice(populations[i], sizes[i], replace=False, shuffle=False)
    return subsets


@compiled
def _first_distinct(draws, run_sizes, run_counts, wanted, seen, values):
    """Run r takes the next run_counts[r] draws; the first wanted[r] distinct floor(u n) of them go to its
    block of `values`. Returns how many each run found (< wanted[r]: the run fell short)."""
    found = np.zeros(len(run_sizes), np.int64)
    first_draw, block = 0, 0
    for r in range(len(run_sizes)):
        n, m, hits = run_sizes[r], wanted[r], 0
        for t in range(first_draw, first_draw + run_counts[r]):
            value = int(draws[t] * n)
            if not seen[value]:
                seen[value] = True
                values[block + hits] = value
                hits += 1
                if hits == m:
                    break
        for q in range(block, block + hits):
            seen[values[q]] = False
        found[r] = hits
        first_draw += run_counts[r]
        block += m
    return found


def crop_indices(
    cloud: np.ndarray, kinds: tuple[CropConfig, ...], rng: np.random.Generator
) -> tuple[Boxes, list[np.ndarray]]:
    """The boxes of all crops of all `kinds` (in order) and each crop's point indices into `cloud`.

    A crop keeps its box's n nearest points, subsampled uniformly without replacement to the crop size.
    Box sizes are known before any distance, so the subsample ranks of all crops are drawn first, in one
    batch. The subsample is not sorted (cheaper): the order of a crop's points means nothing downstream,
    as FPS starts at a random point and kNN and max-pooling ignore order.
    """
    return _crop_indices(_WORKSPACE.load(cloud), cloud, kinds, rng)


def _crop_indices(
    ws: _Workspace, cloud: np.ndarray, kinds: tuple[CropConfig, ...], rng: np.random.Generator
) -> tuple[Boxes, list[np.ndarray]]:
    boxes = draw_boxes(cloud, kinds, rng)
    limits = _crop_rows(kinds)[:, 4].astype(np.int64).tolist()
    big = [i for i, (n, limit) in enumerate(zip(boxes.sizes, limits)) if n > limit]
    populations = [boxes.sizes[i] for i in big]
    ranks = dict(zip(big, uniform_subsets(populations, [limits[i] for i in big], rng, ws.seen)))
    indices = []
    coords, dist, part, mask = ws.coords, ws.dist, ws.part, ws.mask
    for i, (lhs, n) in enumerate(zip(boxes.lhs, boxes.sizes)):
        kept = nearest(box_distance(coords, lhs, dist), n, rng, part, mask)
        indices.append(kept[ranks[i]] if i in ranks else kept)
    return boxes, indices


def augment_matrices(count: int, spec: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(count, 3, 3) float32 M with p' = p @ M: rotation about Z by U(0, 2 pi), then per-axis U(scale).

    Row-vector convention: M = Rz^T diag(s) with Rz = [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]].
    Plain Python floats for the same reason as in `draw_boxes`.
    """
    low, span = spec.scale[0], spec.scale[1] - spec.scale[0]
    matrices: list[float] = []
    for u_angle, u_x, u_y, u_z in rng.random((count, 4)).tolist():
        angle = 2 * math.pi * u_angle
        cos, sin = (math.cos(angle), math.sin(angle)) if spec.rotate_z else (1.0, 0.0)
        sx, sy = low + span * u_x, low + span * u_y
        matrices += (cos * sx, sin * sy, 0.0, -sin * sx, cos * sy, 0.0, 0.0, 0.0, low + span * u_z)
    return np.array(matrices, np.float32).reshape(count, 3, 3)


def gather(coords: np.ndarray, indices: list[np.ndarray], size: int, matrices: np.ndarray) -> Crops:
    """Crops of the points `indices` of (3, N) `coords` (rows x, y, z), each mapped by its (3, 3) matrix,
    zero-padded to `size`.

    The pipeline passes the rows of its work array: they are in L2 cache after the distance passes, where
    the (N, 3) cloud has been evicted, so the random gather is cheaper. When every crop is full (the usual
    case) one `take` serves them all.
    """
    lengths = [len(idx) for idx in indices]
    if min(lengths) == size:
        taken = coords.take(np.concatenate(indices), axis=1, mode="clip")  # indices are in range: no checks
        points = taken.reshape(3, len(indices), size).transpose(1, 2, 0)
    else:
        points = np.zeros((len(indices), size, 3), dtype=np.float32)
        for crop, idx in zip(points, indices):
            crop[: len(idx)] = coords.take(idx, axis=1, mode="clip").T
    # A linear map keeps the zero padding at zero.
    return Crops(np.matmul(points, matrices), np.array(lengths, dtype=np.int64))


def multi_crop(
    cloud: np.ndarray, spec: MultiCropConfig, rng: np.random.Generator
) -> tuple[Crops, Crops | None]:
    """(global crops, local crops or None) of one (N, 3) cloud, cropped and augmented independently."""
    cloud = np.ascontiguousarray(cloud, dtype=np.float32)
    kinds = (spec.global_crops,) if spec.local_crops is None else (spec.global_crops, spec.local_crops)
    ws = _WORKSPACE.load(cloud)
    _, indices = _crop_indices(ws, cloud, kinds, rng)
    matrices = augment_matrices(len(indices), spec.augment, rng)
    coords = ws.coords
    first = spec.global_crops.count
    global_crops = gather(coords, indices[:first], spec.global_crops.points, matrices[:first])
    if spec.local_crops is None:
        return global_crops, None
    return global_crops, gather(coords, indices[first:], spec.local_crops.points, matrices[first:])
