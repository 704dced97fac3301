"""Cluttered digits: a benchmark task built from scikit-learn's real handwritten digits on
which networks differ (after Mnih et al. 2014 and Ba et al. 2014, "cluttered MNIST").

Each image is a `canvas`×`canvas` field holding one digit, scaled to a random size between
`min_size` and `max_size` pixels, rotated by up to ±`rotation` degrees and placed at a random
position, plus `clutter` fragments: `fragment`×`fragment` windows of other digits of the same
split, placed at random, and Gaussian pixel noise. The label is the digit's. A network must
find the digit among look-alike strokes and read it, so its receptive field, depth and width
decide how well it does, unlike on the plain 8×8 digits, where almost every network scores
alike.

The 1,797 base digits are split into train/validation/test by `seed` *before* any image is
made, so the three splits are drawn from disjoint handwritten digits (and their clutter
too). Everything is generated in memory from a seeded generator: two constructions with the
same settings are bit-identical; the result is cached per settings within a process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["ClutterSettings", "base_digit_split", "make_cluttered"]

SPLITS = ("train", "val", "test")
_CHUNK = 2048  # images generated at once (memory stays small)


@dataclass(frozen=True)
class ClutterSettings:
    """What makes one cluttered-digits dataset (every knob is a `data.*` key)."""

    canvas: int = 32
    clutter: int = 2
    fragment: int = 4
    min_size: float = 18.0
    max_size: float = 26.0
    rotation: float = 10.0
    noise: float = 0.05
    n_train: int = 20000
    n_val: int = 5000
    n_test: int = 5000
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


def base_digit_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of the base digits in each split (disjoint, drawn with `seed`)."""
    order = np.random.default_rng([seed, 0]).permutation(n)
    n_val, n_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def _affine(n: int, canvas: int, size: torch.Tensor, angle: torch.Tensor,
            centre: torch.Tensor) -> torch.Tensor:
    """Sampling grids that draw an 8×8 digit `size` px wide, rotated by `angle` (radians),
    centred at `centre` (pixels), on a `canvas`×`canvas` field."""
    half = size / canvas  # the digit's half-extent in the field's normalized [-1, 1] units
    cos, sin = torch.cos(angle) / half, torch.sin(angle) / half
    c = centre / canvas * 2 - 1  # centre in normalized units
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    theta[:, 0, 2] = -(cos * c[:, 0] + sin * c[:, 1])
    theta[:, 1, 2] = -(-sin * c[:, 0] + cos * c[:, 1])
    return F.affine_grid(theta, [n, 1, canvas, canvas], align_corners=False)


def _draw(digits: torch.Tensor, s: ClutterSettings, rng: np.random.Generator) -> torch.Tensor:
    """`digits` (N×1×8×8 in [0, 1]) each scaled, rotated and placed on a field."""
    n = len(digits)
    size = torch.from_numpy(rng.uniform(s.min_size, s.max_size, n)).float()
    angle = torch.from_numpy(rng.uniform(-s.rotation, s.rotation, n) * math.pi / 180).float()
    # The centre keeps the whole (unrotated) digit inside the field.
    lo, hi = size / 2, s.canvas - size / 2
    centre = torch.stack([lo + (hi - lo) * torch.from_numpy(rng.random(n)).float() for _ in range(2)], 1)
    grid = _affine(n, s.canvas, size, angle, centre)
    return F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _fragments(digits: torch.Tensor, s: ClutterSettings, rng: np.random.Generator) -> torch.Tensor:
    """Fields holding one `fragment`-wide window of each digit, at a random place."""
    field = _draw(digits, s, rng)
    n = len(digits)
    # Keep a window around a random point near the field's centre of mass of the digit.
    mass = field.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    ys, xs = torch.meshgrid(torch.arange(s.canvas).float(), torch.arange(s.canvas).float(), indexing="ij")
    cy = (field[:, 0] * ys).sum(dim=(1, 2)) / mass
    cx = (field[:, 0] * xs).sum(dim=(1, 2)) / mass
    jitter = torch.from_numpy(rng.uniform(-s.fragment / 2, s.fragment / 2, (n, 2))).float()
    y0 = (cy + jitter[:, 0] - s.fragment / 2).round().long()
    x0 = (cx + jitter[:, 1] - s.fragment / 2).round().long()
    inside = ((ys[None] >= y0[:, None, None]) & (ys[None] < (y0 + s.fragment)[:, None, None])
              & (xs[None] >= x0[:, None, None]) & (xs[None] < (x0 + s.fragment)[:, None, None]))
    window = field * inside[:, None].float()
    # Move the window to a random place of the field (a roll wraps around: cut fragments at
    # the border stay whole).
    shift = torch.from_numpy(rng.integers(0, s.canvas, (n, 2)))
    steps = torch.arange(s.canvas)
    rows = (steps[None] - shift[:, :1]) % s.canvas  # n x canvas: source row of each target row
    cols = (steps[None] - shift[:, 1:]) % s.canvas
    moved = window[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return moved[:, None]


def _split_images(digits: torch.Tensor, labels: torch.Tensor, count: int, s: ClutterSettings,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], []
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        pick = torch.from_numpy(rng.integers(0, len(digits), n))
        field = _draw(digits[pick], s, rng)
        for _ in range(s.clutter):
            # Another digit of the same split (never the one it clutters).
            other = (pick + torch.from_numpy(rng.integers(1, len(digits), n))) % len(digits)
            field = torch.maximum(field, _fragments(digits[other], s, rng))
        field = field + torch.from_numpy(rng.normal(0.0, s.noise, field.shape)).float()
        images.append((field.clamp(0, 1) * 255).round().to(torch.uint8))
        targets.append(labels[pick])
    return torch.cat(images), torch.cat(targets)


@lru_cache(maxsize=4)
def _cached(settings: ClutterSettings) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    base = load_digits()
    digits = torch.from_numpy(base.images / 16.0).float()[:, None]  # 1,797 x 1 x 8 x 8 in [0, 1]
    labels = torch.from_numpy(base.target.astype(np.int64))
    parts = base_digit_split(len(labels), settings.val_fraction, settings.test_fraction, settings.seed)
    counts = {"train": settings.n_train, "val": settings.n_val, "test": settings.n_test}
    out = {}
    for k, name in enumerate(SPLITS):
        rng = np.random.default_rng([settings.seed, 1 + k])  # each split its own stream
        idx = torch.from_numpy(parts[name])
        out[name] = _split_images(digits[idx], labels[idx], counts[name], settings, rng)
    return out


def make_cluttered(settings: ClutterSettings) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train"|"val"|"test": (N×1×canvas×canvas uint8 images, N labels)}; deterministic in the
    settings, cached per settings (do not modify the tensors returned)."""
    return _cached(settings)


def describe(settings: ClutterSettings) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(settings).items())
