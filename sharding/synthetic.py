"""Procedural, labelled meshes for the `synthetic:N` source, so demos and tests run the real data path.

Each shape belongs to one of FAMILIES and is composed from trimesh primitives with random proportions,
per-part non-uniform scaling, mesh resolution, pose (a turn about Z plus a small tilt) and vertex noise.
Every shape is rescaled to about unit size, so families differ in shape rather than size. They come in
look-alike groups that share a coarse silhouette and differ in finer structure (a table, stool and chair
by legs and back; a mug and a can by a handle; a torus and a ring by cross-section; a cone and a pyramid
by base polygon; a lamp and a mushroom by shade and stem): a pretrained encoder then has something to
learn that random features do not already separate.

Every face also carries a semantic part of its family (PART_NAMES: a table's top, legs and apron, a
cone's base and side...), so the sampled points come with per-point part labels for part segmentation.
Builders name the part of each primitive they make, or of each face where one primitive holds several
parts; the labels never take a random draw, so a shape's geometry does not depend on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from sharding.records import MeshData

Meshes = list[trimesh.Trimesh]
# A primitive and its part: one name for all its faces, or an (F,) array of names, one per face.
Piece = tuple[trimesh.Trimesh, str | np.ndarray]
Pieces = list[Piece]
Rng = np.random.Generator
Z_AXIS = (0.0, 0.0, 1.0)
# Boxes, cones and pyramids have a handful of faces; subdividing them to at least this many lets the
# vertex noise roughen their surfaces instead of only moving their corners.
MIN_FACES = 256


def _matrix(centre: Sequence[float] = (0.0, 0.0, 0.0), scale: Sequence[float] = (1.0, 1.0, 1.0),
            rotation: np.ndarray | None = None) -> np.ndarray:
    """Scale, then rotate, then move to `centre`: one transform handed to the creation call."""
    m = np.diag([*scale, 1.0])
    if rotation is not None:
        m = rotation @ m
    m[:3, 3] = centre
    return m


def _wobble(rng: Rng, amount: float = 0.08) -> np.ndarray:
    """Per-axis scale factors near 1, so that no two legs, panels or bodies come out identical."""
    return 1.0 + rng.uniform(-amount, amount, 3)


def _sections(rng: Rng, low: int = 12, high: int = 36) -> int:
    return int(rng.integers(low, high + 1))


def _box(rng: Rng, size: Sequence[float], centre: Sequence[float]) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=np.asarray(size) * _wobble(rng, 0.05), transform=_matrix(centre))


def _rod(rng: Rng, a: Sequence[float], b: Sequence[float], radius: float, sections: int) -> trimesh.Trimesh:
    """A cylinder from a to b; only its cross-section is jittered, so it still meets what it joins."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    length = float(np.linalg.norm(b - a))
    align = trimesh.geometry.align_vectors(Z_AXIS, (b - a) / length)
    scale = (*_wobble(rng, 0.15)[:2], 1.0)
    return trimesh.creation.cylinder(radius, length, sections, transform=_matrix((a + b) / 2, scale, align))


def _disc(rng: Rng, radius: float, thickness: float, z: float, sections: int) -> trimesh.Trimesh:
    """A flat, slightly elliptic cylinder on the Z axis whose bottom face sits at height z."""
    scale = (*_wobble(rng)[:2], 1.0)
    centre = (0.0, 0.0, z + thickness / 2)
    return trimesh.creation.cylinder(radius, thickness, sections, transform=_matrix(centre, scale))


def _lathe(rng: Rng, profile: np.ndarray | list, sections: int, z: float = 0.0,
           amount: float = 0.06) -> trimesh.Trimesh:
    """Revolve an (r, z) profile about Z; an unequal x/y scale makes the section slightly elliptic."""
    scale = (*_wobble(rng, amount)[:2], 1.0)
    return trimesh.creation.revolve(np.asarray(profile, dtype=float), sections=sections,
                                    transform=_matrix((0.0, 0.0, z), scale))


def _arc(t: np.ndarray, start: Sequence[float], end: Sequence[float], power: float) -> np.ndarray:
    """A quarter superellipse from start (leaving it upwards) to end (arriving level): shoulders, domes.

    power 1 is a quarter ellipse; below 1 it bulges out, above 1 it sags in.
    """
    theta = t * np.pi / 2
    r = end[0] + (start[0] - end[0]) * np.cos(theta) ** power
    z = start[1] + (end[1] - start[1]) * np.sin(theta) ** power
    return np.column_stack([r, z])


def _loop(rng: Rng, points: Sequence[Sequence[float]], z: float, radius: float, sections: int) -> Meshes:
    """Rails joining consecutive (x, y) points at height z in a closed loop (aprons, rungs)."""
    n = len(points)
    return [_rod(rng, (*points[i], z), (*points[(i + 1) % n], z), radius, sections) for i in range(n)]


def _named(meshes: Meshes, part: str) -> Pieces:
    return [(mesh, part) for mesh in meshes]


def _face_coords(mesh: trimesh.Trimesh, axis: int) -> np.ndarray:
    """(F, 3) coordinate `axis` of each face's three corners."""
    return mesh.vertices[:, axis][mesh.faces]


def _split(mesh: trimesh.Trimesh, mask: np.ndarray, part: str, rest: str) -> Piece:
    """One primitive holding two parts: faces in `mask` are `part`, the others `rest`."""
    return mesh, np.where(mask, part, rest)


def _leg_sections(rng: Rng) -> int:
    """Square legs are 4-sided cylinders; round ones get 6-14 sides."""
    return 4 if rng.random() < 0.5 else _sections(rng, 6, 14)


def _table(rng: Rng) -> Pieces:
    """Wide, low top on four (nearly) vertical legs, sometimes with an apron."""
    w = rng.uniform(0.8, 1.2)
    d = w * rng.uniform(0.45, 0.95)
    h = rng.uniform(0.45, 0.8)
    t = rng.uniform(0.03, 0.07)
    leg_r, leg_sec = rng.uniform(0.02, 0.04), _leg_sections(rng)
    if rng.random() < 0.3:
        top = trimesh.creation.cylinder(0.5, t, _sections(rng, 24, 48),
                                        transform=_matrix((0, 0, h - t / 2), (w, d, 1.0)))
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        corners = [(0.34 * w * np.cos(a), 0.34 * d * np.sin(a)) for a in angles]
    else:
        top = _box(rng, (w, d, t), (0, 0, h - t / 2))
        inset = rng.uniform(0.03, 0.12)
        signs = ((1, 1), (-1, 1), (-1, -1), (1, -1))
        corners = [(sx * (w / 2 - inset), sy * (d / 2 - inset)) for sx, sy in signs]
    splay = rng.uniform(1.0, 1.08)
    legs = [_rod(rng, (x * splay, y * splay, 0), (x, y, h - t), leg_r, leg_sec) for x, y in corners]
    parts = [(top, "top"), *_named(legs, "leg")]
    if rng.random() < 0.5:
        parts += _named(_loop(rng, corners, h - t - rng.uniform(0.03, 0.06), leg_r * 0.7, 4), "apron")
    return parts


def _stool(rng: Rng) -> Pieces:
    """Small seat, tall splayed legs (three or four), often a rung."""
    r, h, t = rng.uniform(0.15, 0.26), rng.uniform(0.45, 0.8), rng.uniform(0.03, 0.06)
    n = int(rng.integers(3, 5))
    angles = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
    if rng.random() < 0.3:
        seat = _box(rng, (2 * r, 2 * r, t), (0, 0, h - t / 2))
    else:
        seat = _disc(rng, r, t, h - t, _sections(rng, 16, 40))
    r_top, r_bottom = 0.7 * r, r * rng.uniform(0.8, 1.35)
    leg_r, leg_sec = rng.uniform(0.015, 0.03), _leg_sections(rng)
    tops = np.column_stack([r_top * np.cos(angles), r_top * np.sin(angles)])
    bottoms = np.column_stack([r_bottom * np.cos(angles), r_bottom * np.sin(angles)])
    legs = [_rod(rng, (*b, 0), (*a, h - t), leg_r, leg_sec) for a, b in zip(tops, bottoms)]
    parts = [(seat, "seat"), *_named(legs, "leg")]
    if rng.random() < 0.6:
        f = rng.uniform(0.25, 0.45)
        parts += _named(_loop(rng, bottoms + f * (tops - bottoms), f * (h - t), leg_r * 0.7, leg_sec), "rung")
    return parts


def _chair(rng: Rng) -> Pieces:
    """A seat on four legs plus a back (panel, slats or rails), sometimes arms."""
    s, h_seat, t = rng.uniform(0.4, 0.55), rng.uniform(0.38, 0.5), rng.uniform(0.03, 0.06)
    depth, h_back = s * rng.uniform(0.85, 1.1), rng.uniform(0.35, 0.65)
    leg_r, leg_sec = rng.uniform(0.015, 0.03), _leg_sections(rng)
    inset = rng.uniform(0.02, 0.05)
    x, y = s / 2 - inset, depth / 2 - inset
    parts = [(_box(rng, (s, depth, t), (0, 0, h_seat - t / 2)), "seat")]
    parts += [(_rod(rng, (sx * x, sy * y, 0), (sx * x, sy * y, h_seat - t), leg_r, leg_sec), "leg")
              for sx in (-1, 1) for sy in (-1, 1)]
    back: Meshes = []
    z0, z1, yb = h_seat, h_seat + h_back, -depth / 2 + 0.02
    style = rng.integers(3)
    if style == 0:
        back.append(_box(rng, (s, rng.uniform(0.02, 0.04), h_back), (0, yb, (z0 + z1) / 2)))
    else:
        back += [_rod(rng, (sx * x, yb, z0), (sx * x, yb, z1), leg_r, leg_sec) for sx in (-1, 1)]
        back.append(_box(rng, (s, 0.03, rng.uniform(0.04, 0.1)), (0, yb, z1)))
        k = int(rng.integers(2, 5))
        if style == 1:
            xs = np.linspace(-x, x, k + 2)[1:-1]
            back += [_rod(rng, (px, yb, z0), (px, yb, z1), leg_r * 0.6, 6) for px in xs]
        else:
            zs = np.linspace(z0, z1, k + 2)[1:-1]
            back += [_rod(rng, (-x, yb, pz), (x, yb, pz), leg_r * 0.6, 6) for pz in zs]
    lean = rotation_matrix(rng.uniform(0, np.radians(15)), (1, 0, 0), (0, yb, z0))
    parts += _named([b.apply_transform(lean) for b in back], "back")
    if rng.random() < 0.3:
        z_arm = h_seat + rng.uniform(0.18, 0.28)
        for sx in (-1, 1):
            parts.append((_rod(rng, (sx * x, yb, z_arm), (sx * x, y, z_arm), leg_r, 4), "arm"))
            parts.append((_rod(rng, (sx * x, y, h_seat), (sx * x, y, z_arm), leg_r * 0.8, leg_sec), "arm"))
    return parts


def _shelf(rng: Rng) -> Pieces:
    """Two side panels, top, bottom and one to four shelves, often a back panel."""
    w, d, h = rng.uniform(0.5, 1.0), rng.uniform(0.2, 0.4), rng.uniform(0.8, 1.6)
    t = rng.uniform(0.015, 0.035)
    parts = [(_box(rng, (t, d, h), (sx * (w / 2 - t / 2), 0, h / 2)), "side") for sx in (-1, 1)]
    n = int(rng.integers(1, 5))
    levels = np.linspace(t / 2, h - t / 2, n + 2)
    levels[1:-1] += rng.uniform(-0.3, 0.3, n) * (h / (n + 1)) / 2
    parts += [(_box(rng, (w - 2 * t, d * rng.uniform(0.9, 1.0), t), (0, 0, z)), "board") for z in levels]
    if rng.random() < 0.6:
        parts.append((_box(rng, (w, t, h), (0, -d / 2 + t / 2, h / 2)), "back"))
    return parts


def _cup_body(rng: Rng, r: float, h: float) -> Pieces:
    """Shared by mug and can: a solid or open-topped, slightly tapered cylinder, maybe with a lip.

    The lip is part of the body: it is a thin rim, not something a point cloud shows apart.
    """
    sections = _sections(rng, 16, 48)
    r_top = r * rng.uniform(0.9, 1.12)
    if rng.random() < 0.65:
        wall = rng.uniform(0.02, 0.045)
        profile = [(0, 0), (r, 0), (r_top, h), (r_top - wall, h), (r - wall, wall), (0, wall)]
    else:
        profile = [(0, 0), (r, 0), (r_top, h), (0, h)]
    parts = [(_lathe(rng, profile, sections), "body")]
    if rng.random() < 0.3:
        parts.append((trimesh.creation.torus(r_top, rng.uniform(0.01, 0.025), sections, 8,
                                             transform=_matrix((0, 0, h))), "body"))
    return parts


def _cup_size(rng: Rng) -> tuple[float, float]:
    r = rng.uniform(0.25, 0.4)
    return r, r * rng.uniform(1.4, 2.8)


def _mug(rng: Rng) -> Pieces:
    """A can-like body plus a handle: half a torus standing on the side of the body."""
    r, h = _cup_size(rng)
    parts = _cup_body(rng, r, h)
    a, big = rng.uniform(0.025, 0.05), h * rng.uniform(0.2, 0.36)
    phi = np.linspace(0, 2 * np.pi, _sections(rng, 6, 12) + 1)
    ring = np.column_stack([big + a * np.cos(phi), a * np.sin(phi)])
    upright = rotation_matrix(np.pi / 2, (0, 1, 0)) @ rotation_matrix(np.pi / 2, (1, 0, 0))
    handle = trimesh.creation.revolve(ring, angle=np.pi, sections=_sections(rng, 8, 20))
    stretch = (1.0, rng.uniform(0.6, 1.3), 1.0)  # how far the handle reaches out
    handle.apply_transform(_matrix((r * rng.uniform(0.95, 1.05) - a, 0, h * rng.uniform(0.42, 0.58)),
                                   stretch, upright))
    return parts + [(handle, "handle")]


def _can(rng: Rng) -> Pieces:
    """The mug's body without a handle."""
    return _cup_body(rng, *_cup_size(rng))


def _bottle(rng: Rng) -> Pieces:
    """A cylinder body narrowing through a shoulder into a neck, often capped.

    The body ends where the shoulder meets the neck: faces wholly above that height are the neck.
    """
    r, hb = rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.9)
    rn, h_sh, h_neck = r * rng.uniform(0.25, 0.45), rng.uniform(0.08, 0.25), rng.uniform(0.1, 0.3)
    shoulder = _arc(np.linspace(0, 1, 8), (r, hb), (rn, hb + h_sh), rng.uniform(0.7, 1.5))
    top = hb + h_sh + h_neck
    profile = np.vstack([[(0, 0), (r, 0)], shoulder, [(rn, top), (0, top)]])
    sections = _sections(rng, 16, 40)
    bottle = _lathe(rng, profile, sections, amount=0.04)
    parts = [_split(bottle, _face_coords(bottle, 2).min(axis=1) >= shoulder[-1, 1] - 1e-9, "neck", "body")]
    if rng.random() < 0.6:
        cap = _disc(rng, rn * rng.uniform(1.05, 1.3), rng.uniform(0.03, 0.07), top - 0.01, sections)
        parts.append((cap, "cap"))
    return parts


def _bowl(rng: Rng) -> Pieces:
    """An open, wide, curved shell, sometimes on a foot ring."""
    big, h = rng.uniform(0.35, 0.55), rng.uniform(0.15, 0.35)
    foot, wall = big * rng.uniform(0.3, 0.55), rng.uniform(0.015, 0.035)
    t = np.linspace(0, 1, _sections(rng, 6, 12))
    power = rng.uniform(0.35, 0.8)
    outer = np.column_stack([foot + (big - foot) * t**power, h * t])
    inner = np.column_stack([outer[:, 0] - wall, np.minimum(outer[:, 1] + wall, h)])[::-1]
    profile = np.vstack([[(0, 0)], outer, inner, [(0, wall)]])
    sections = _sections(rng, 20, 48)
    parts = [(_lathe(rng, profile, sections), "body")]
    if rng.random() < 0.5:
        height = rng.uniform(0.02, 0.05)
        parts.append((trimesh.creation.annulus(foot * 0.8, foot, height, sections,
                                               transform=_matrix((0, 0, -height / 2))), "foot"))
    return parts


def _torus(rng: Rng) -> Pieces:
    """A round-section ring lying flat (its section sometimes squashed, towards the flat ring)."""
    big = rng.uniform(0.3, 0.45)
    small = big * rng.uniform(0.15, 0.4)
    scale = (*_wobble(rng, 0.06)[:2], rng.uniform(0.7, 1.0))
    return [(trimesh.creation.torus(big, small, _sections(rng, 16, 40), _sections(rng, 8, 18),
                                    transform=_matrix((0, 0, small), scale)), "body")]


def _ring(rng: Rng) -> Pieces:
    """A rectangular-section ring (washer or short tube) lying flat.

    Parts: the two flat faces (faces at one height), and the inner and outer walls (told apart by
    radius: the section is far wider than the few percent the wobble stretches it).
    """
    r_max = rng.uniform(0.35, 0.5)
    r_min, height = r_max * rng.uniform(0.5, 0.82), r_max * rng.uniform(0.1, 0.5)
    scale = (*_wobble(rng, 0.06)[:2], 1.0)
    ring = trimesh.creation.annulus(r_min, r_max, height, _sections(rng, 16, 48),
                                    transform=_matrix((0, 0, height / 2), scale))
    flat = np.ptp(_face_coords(ring, 2), axis=1) < 1e-9 * height
    radius = np.hypot(_face_coords(ring, 0).mean(axis=1), _face_coords(ring, 1).mean(axis=1))
    return [(ring, np.where(flat, "flat", np.where(radius < (r_min + r_max) / 2, "inner", "outer")))]


def _pointed(rng: Rng, sections: int) -> Pieces:
    """Shared by cone and pyramid (which differ only in base polygon), sometimes on a plinth.

    The base is the cone's bottom (its faces lying flat at the lowest height) and the plinth.
    """
    r, h = rng.uniform(0.3, 0.55), rng.uniform(0.5, 1.1)
    base = 0.0
    parts: Pieces = []
    if rng.random() < 0.3:
        base = rng.uniform(0.03, 0.08)
        parts.append((_box(rng, (2.1 * r, 2.1 * r, base), (0, 0, base / 2)), "base"))
    rot = rotation_matrix(rng.uniform(0, 2 * np.pi), Z_AXIS)
    cone = trimesh.creation.cone(r, h, sections, transform=_matrix((0, 0, base), _wobble(rng), rot))
    parts.append(_split(cone, _face_coords(cone, 2).max(axis=1) <= base + 1e-9, "base", "side"))
    return parts


def _cone(rng: Rng) -> Pieces:
    return _pointed(rng, _sections(rng, 14, 40))


def _pyramid(rng: Rng) -> Pieces:
    return _pointed(rng, 4 if rng.random() < 0.75 else 3)


def _lamp(rng: Rng) -> Pieces:
    """Base, thin pole and an open truncated-cone shade, sometimes with a bulb inside."""
    sections = _sections(rng, 16, 40)
    t_base = rng.uniform(0.02, 0.05)
    if rng.random() < 0.3:
        side = rng.uniform(0.25, 0.4)
        base = _box(rng, (side, side, t_base), (0, 0, t_base / 2))
    else:
        base = _disc(rng, rng.uniform(0.12, 0.22), t_base, 0.0, sections)
    pole = rng.uniform(0.5, 0.9)
    r_bottom = rng.uniform(0.15, 0.3)
    r_top, h_shade, wall = r_bottom * rng.uniform(0.4, 0.8), rng.uniform(0.15, 0.3), rng.uniform(0.01, 0.02)
    z_shade = pole - h_shade * rng.uniform(0.3, 0.6)
    shade = [(r_bottom, 0), (r_top, h_shade), (r_top - wall, h_shade), (r_bottom - wall, 0), (r_bottom, 0)]
    parts = [(base, "base"),
             (_rod(rng, (0, 0, 0), (0, 0, pole), rng.uniform(0.012, 0.025), _sections(rng, 6, 12)), "stem"),
             (_lathe(rng, shade, sections, z=z_shade), "shade")]
    if rng.random() < 0.5:
        bulb = trimesh.creation.icosphere(1, 0.3 * r_top + 0.02, transform=_matrix((0, 0, pole)))
        parts.append((bulb, "bulb"))
    return parts


def _mushroom(rng: Rng) -> Pieces:
    """A thick, tapered stem under a dome-shaped cap; the bulb some have at the foot is the stem's."""
    r_stem, h_stem = rng.uniform(0.07, 0.16), rng.uniform(0.3, 0.7)
    r_cap = rng.uniform(0.25, 0.5)
    h_cap, gill = r_cap * rng.uniform(0.35, 0.8), rng.uniform(0.0, 0.08)
    stem = [(0, 0), (r_stem * rng.uniform(1.0, 1.4), 0), (r_stem, h_stem), (0, h_stem)]
    dome = _arc(np.linspace(0, 1, _sections(rng, 5, 10)), (r_cap, 0), (0, h_cap), rng.uniform(0.6, 1.4))
    cap = np.vstack([[(0, gill)], dome])
    sections = _sections(rng, 16, 40)
    parts = [(_lathe(rng, stem, sections, amount=0.1), "stem"),
             (_lathe(rng, cap, sections, z=h_stem - gill - 0.02), "cap")]
    if rng.random() < 0.3:
        volva = _matrix((0, 0, r_stem), (1, 1, 0.7))
        parts.append((trimesh.creation.icosphere(1, r_stem * 1.3, transform=volva), "stem"))
    return parts


def _dumbbell(rng: Rng) -> Pieces:
    """A bar lying along X with a sphere or a stack of plates at each end."""
    half, r_bar = rng.uniform(0.3, 0.5), rng.uniform(0.025, 0.06)
    spheres = rng.random() < 0.4
    r_weight = rng.uniform(0.1, 0.2) if spheres else rng.uniform(0.12, 0.24)
    z = r_weight
    parts = [(_rod(rng, (-half, 0, z), (half, 0, z), r_bar, _sections(rng, 8, 16)), "bar")]
    n_plates, width = int(rng.integers(1, 4)), rng.uniform(0.03, 0.06)
    for sx in (-1, 1):
        if spheres:
            ball = trimesh.creation.icosphere(int(rng.integers(1, 3)), r_weight,
                                              transform=_matrix((sx * half, 0, z), _wobble(rng)))
            parts.append((ball, "weight"))
            continue
        for k in range(n_plates):
            x0 = sx * (half - 0.05 - (n_plates - k) * width)
            r_plate = r_weight * (1 - 0.2 * k)
            parts.append((_rod(rng, (x0, 0, z), (x0 + sx * width, 0, z), r_plate, _sections(rng)), "weight"))
    return parts


def _capsule(rng: Rng) -> Pieces:
    """A pill lying along X: the dumbbell's silhouette without its waist.

    Parts: the cylindrical body and the two rounded ends (faces reaching past the body's length).
    """
    length, r = rng.uniform(0.5, 0.9), rng.uniform(0.1, 0.22)
    lying = rotation_matrix(np.pi / 2, (0, 1, 0))
    count = (_sections(rng, 8, 16), _sections(rng, 12, 32))
    scale = _wobble(rng)
    pill = trimesh.creation.capsule(length, r, count, transform=_matrix((0, 0, r), scale, lying))
    half = length / 2 * scale[2]  # the capsule's own Z axis, scaled before it is turned onto X
    return [_split(pill, np.abs(_face_coords(pill, 0)).max(axis=1) <= half * (1 + 1e-9), "body", "end")]


BUILDERS: dict[str, Callable[[Rng], Pieces]] = {
    "table": _table,
    "stool": _stool,
    "chair": _chair,
    "shelf": _shelf,
    "mug": _mug,
    "can": _can,
    "bottle": _bottle,
    "bowl": _bowl,
    "torus": _torus,
    "ring": _ring,
    "cone": _cone,
    "pyramid": _pyramid,
    "lamp": _lamp,
    "mushroom": _mushroom,
    "dumbbell": _dumbbell,
    "capsule": _capsule,
}
FAMILIES: tuple[str, ...] = tuple(BUILDERS)
# Each family's parts, in the order of the indices stored per face (and per sampled point).
PART_NAMES: dict[str, tuple[str, ...]] = {
    "table": ("top", "leg", "apron"),
    "stool": ("seat", "leg", "rung"),
    "chair": ("seat", "leg", "back", "arm"),
    "shelf": ("side", "board", "back"),
    "mug": ("body", "handle"),
    "can": ("body",),
    "bottle": ("body", "neck", "cap"),
    "bowl": ("body", "foot"),
    "torus": ("body",),
    "ring": ("flat", "inner", "outer"),
    "cone": ("base", "side"),
    "pyramid": ("base", "side"),
    "lamp": ("base", "stem", "shade", "bulb"),
    "mushroom": ("stem", "cap"),
    "dumbbell": ("bar", "weight"),
    "capsule": ("body", "end"),
}


def family_of(index: int) -> str:
    """The family of shape `index`, known without generating it (classes are balanced by construction)."""
    return FAMILIES[index % len(FAMILIES)]


def _pose(rng: Rng, vertices: np.ndarray) -> np.ndarray:
    """Centre on the base, rescale to a random size near 1, tilt a little, turn about Z, add noise."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    v = vertices - [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    v *= rng.uniform(0.8, 1.2) / (hi - lo).max()
    heading = rng.uniform(0, 2 * np.pi)
    tilt = min(abs(rng.normal(0.0, np.radians(4))), np.radians(10))
    turn = rotation_matrix(tilt, (np.cos(heading), np.sin(heading), 0)) @ rotation_matrix(
        rng.uniform(0, 2 * np.pi), Z_AXIS)
    v = v @ turn[:3, :3].T
    return v + rng.normal(0.0, rng.uniform(0.001, 0.006), v.shape)


def _face_parts(pieces: Pieces, names: tuple[str, ...]) -> np.ndarray:
    """(F,) uint8 index into `names` of every face of the concatenated pieces, in their order."""
    labels = np.concatenate([np.broadcast_to(np.asarray(part), len(mesh.faces)) for mesh, part in pieces])
    found, inverse = np.unique(labels, return_inverse=True)
    return np.array([names.index(name) for name in found], dtype=np.uint8)[inverse.ravel()]


def generate_shape(index: int, seed: int) -> tuple[MeshData, str]:
    """Shape `index` of the corpus `seed`: the same (index, seed) always gives the same arrays.

    The mesh carries each face's part (an index into PART_NAMES[family]) and the family's part names.
    """
    rng = np.random.default_rng((seed, index))
    family = family_of(index)
    pieces = BUILDERS[family](rng)
    face_parts = _face_parts(pieces, PART_NAMES[family])
    mesh = trimesh.util.concatenate([mesh for mesh, _ in pieces])
    vertices, faces = mesh.vertices, mesh.faces
    while len(faces) < MIN_FACES:
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
        face_parts = np.repeat(face_parts, 4)  # each face becomes four, in its place
    vertices = np.ascontiguousarray(_pose(rng, np.asarray(vertices, dtype=np.float64)))
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    return MeshData(vertices, faces, face_parts=face_parts, part_names=PART_NAMES[family]), family
