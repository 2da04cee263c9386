"""Parametric shape families of the synthetic open-set scenes.

Each family is a function ``(rng) -> (outer, holes)`` giving polygons in unit coordinates (the shape fits in
roughly the unit disc, y pointing down). The scene composer rotates, scales and places them, and rasterises
``fill(outer) & ~fill(holes)`` so that rings and crescents get real holes. Parameters are jittered per instance
so a family is a class of shapes, not one template.
"""

from typing import Callable, Dict, List, Tuple

import numpy as np

Polygon = np.ndarray  # (P, 2) float32, unit coordinates
ShapeFn = Callable[[np.random.Generator], Tuple[List[Polygon], List[Polygon]]]


def _circle(radius: float, cx: float = 0.0, cy: float = 0.0, sx: float = 1.0, points: int = 48) -> Polygon:
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    return np.stack([cx + radius * sx * np.cos(t), cy + radius * np.sin(t)], axis=1).astype(np.float32)


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> Polygon:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1).astype(np.float32)


def _poly(points) -> Polygon:
    return np.asarray(points, dtype=np.float32)


def box(rng):
    aspect = rng.uniform(0.55, 1.0)
    w, h = 0.95, 0.95 * aspect
    return [_poly([(-w, -h), (w, -h), (w, h), (-w, h)])], []


def disc(rng):
    return [_circle(1.0)], []


def triangle(rng):
    angles = np.deg2rad(np.array([-90.0, 30.0, 150.0]) + rng.uniform(-12, 12, size=3))
    radii = rng.uniform(0.9, 1.05, size=3)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return [_poly(pts)], []


def ring(rng):
    return [_circle(1.0)], [_circle(rng.uniform(0.45, 0.62))]


def star(rng):
    inner = rng.uniform(0.38, 0.5)
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return [_poly(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))], []


def cross(rng):
    a = rng.uniform(0.28, 0.38)  # half arm width
    pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    return [_poly(pts)], []


def ellipse(rng):
    return [_circle(1.0, sx=1.0) * np.array([1.0, rng.uniform(0.4, 0.6)], dtype=np.float32)], []


def hexagon(rng):
    return [_regular(6, 1.0, phase=rng.uniform(0, np.pi / 3))], []


def crescent(rng):
    offset = rng.uniform(0.45, 0.6)
    return [_circle(1.0)], [_circle(rng.uniform(0.8, 0.9), cx=offset, cy=-0.1)]


def l_shape(rng):
    t = rng.uniform(0.35, 0.5)  # bar thickness
    pts = [(-0.8, -1), (-0.8 + 2 * t * 0.8, -1), (-0.8 + 2 * t * 0.8, 1 - 2 * t * 0.8),
           (0.8, 1 - 2 * t * 0.8), (0.8, 1), (-0.8, 1)]
    return [_poly(pts)], []


def arrow(rng):
    s = rng.uniform(0.16, 0.24)  # half shaft width
    head = rng.uniform(0.5, 0.65)  # half head width
    neck = rng.uniform(0.1, 0.3)
    pts = [(-1, -s), (neck, -s), (neck, -head), (1, 0), (neck, head), (neck, s), (-1, s)]
    return [_poly(pts)], []


def heart(rng):
    t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], axis=1) / 16.5
    return [_poly(pts)], []


# Stable order: a family's COCO category id is its index here + 1; append new families at the end only.
SHAPE_FAMILIES: Dict[str, ShapeFn] = {
    "box": box,
    "disc": disc,
    "triangle": triangle,
    "ring": ring,
    "star": star,
    "cross": cross,
    "ellipse": ellipse,
    "hexagon": hexagon,
    "crescent": crescent,
    "l_shape": l_shape,
    "arrow": arrow,
    "heart": heart,
}

ALL_FAMILIES: Tuple[str, ...] = tuple(SHAPE_FAMILIES)
FAMILY_CATEGORY_ID: Dict[str, int] = {name: i + 1 for i, name in enumerate(ALL_FAMILIES)}
