"""Procedural textures for the synthetic scenes: tabletop backgrounds and object surfaces.

Everything is vectorised numpy/OpenCV on float32 RGB in [0, 255] so one 256x256 scene takes a few ms.
Colours are drawn independently of the shape family so colour never gives the class away.
"""

import cv2
import numpy as np


def random_color(rng: np.random.Generator, sat=(0.35, 1.0), val=(0.35, 1.0)) -> np.ndarray:
    """An RGB colour (float32, 0-255) with uniform hue and the given saturation/value ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically (H x W float32)."""
    coarse = rng.random((cells + 1, cells + 1), dtype=np.float32)
    out = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0)


def _coords(h: int, w: int):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A tabletop-like background: wood grain, cloudy noise, gradient or cloth checker (H x W x 3 float32)."""
    kind = rng.integers(4)
    c1 = random_color(rng, sat=(0.1, 0.6), val=(0.25, 0.9))
    c2 = np.clip(c1 * rng.uniform(0.55, 0.85) + rng.normal(0, 12, size=3), 0, 255).astype(np.float32)
    xs, ys = _coords(h, w)
    if kind == 0:  # wood: distorted parallel grain
        angle = rng.uniform(0, np.pi)
        u = xs * np.cos(angle) + ys * np.sin(angle)
        warp = smooth_noise(rng, h, w, 4) * rng.uniform(4, 10)
        t = 0.5 + 0.5 * np.sin(u * rng.uniform(0.08, 0.25) + warp)
        img = _blend(c1, c2, t ** 2)
    elif kind == 1:  # cloudy noise (two octaves)
        t = 0.65 * smooth_noise(rng, h, w, 5) + 0.35 * smooth_noise(rng, h, w, 17)
        img = _blend(c1, c2, t)
    elif kind == 2:  # linear gradient (lit table)
        angle = rng.uniform(0, 2 * np.pi)
        u = xs * np.cos(angle) + ys * np.sin(angle)
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        img = _blend(c1, c2, t)
    else:  # cloth checker / plaid
        cell = rng.uniform(10, 40)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
        img = _blend(c1, c2, 0.25 + 0.5 * t)
    img += rng.normal(0.0, rng.uniform(2, 7), size=(h, w, 1)).astype(np.float32)
    return img


def object_surface(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """Surface colour of one object over its h x w box: base colour, directional shading and a pattern."""
    xs, ys = _coords(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    u = (xs - w / 2) * np.cos(angle) + (ys - h / 2) * np.sin(angle)
    shade = 1.0 + rng.uniform(0.15, 0.35) * u / max(h, w)  # light from one side
    pattern = rng.integers(4)
    if pattern == 0:  # plain
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif pattern == 1:  # stripes in a second colour
        other = random_color(rng)
        v = xs * np.cos(angle + 1.3) + ys * np.sin(angle + 1.3)
        t = (np.sin(v * rng.uniform(0.3, 0.8)) > 0).astype(np.float32) * rng.uniform(0.3, 0.7)
        img = _blend(base, other, t)
    elif pattern == 2:  # mottled
        t = smooth_noise(rng, h, w, 6) * rng.uniform(0.3, 0.6)
        img = _blend(base, base * 0.45, t)
    else:  # two-tone label band
        other = random_color(rng)
        v = (xs - w / 2) * np.cos(angle + 1.57) + (ys - h / 2) * np.sin(angle + 1.57)
        t = (np.abs(v) < max(h, w) * rng.uniform(0.1, 0.25)).astype(np.float32)
        img = _blend(base, other, t)
    return img * shade[..., None]
