"""Small data sets on disk for the data tests: noise images, image folders, CIFAR-10 batch files."""

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(20, 24), (24, 20), (30, 30), (17, 40), (40, 17), (20, 24)]


def noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def mixed_folder(root: Path) -> Path:
    """3 classes x 6 images of assorted sizes and formats, plus files an index must skip."""
    for c, name in enumerate(("cat", "dog", "fox")):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(SIZES):
            noise(w, h, seed=10 * c + i).save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    noise(22, 26, seed=99, mode="L").save(root / "cat" / "0.png")  # grayscale, replaces one
    noise(21, 25, seed=98, mode="RGBA").save(root / "dog" / "0.png")  # with alpha, replaces one
    (root / "fox" / "deep").mkdir()
    (root / "fox" / "5.jpg").rename(root / "fox" / "deep" / "5.JPEG")  # nested, upper-case suffix
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"")
    (root / ".cache").mkdir()
    (root / "README").write_text("top-level files are not classes")
    return root


def solid_folder(root: Path, colour, per_class: int = 3, mode: str = "RGB") -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, (12 + i, 10), colour).save(root / name / f"{i}.png")
    return root


def flat_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6, size=(20, 14)) -> Path:
    """PNGs of one colour per image (class c, image i: value c * 80 + i)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((size[1], size[0], 3), c * 80 + i, dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def jpeg_folder(root: Path, classes: int, per_class: int, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.jpg", quality=70)
    return root


def cifar_files(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Small files in CIFAR-10's python format: dicts with b'data' (N x 3072 uint8) and b'labels'."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch).tolist()
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        # Make the classes learnable: the red channel's mean encodes the label.
        for i, y in enumerate(labels):
            data[i, :1024] = y * 25
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
    return root
