"""Data modules: embedded digits (default), CIFAR-10 batch files, image folder trees.

All three hold their images in memory as uint8 tensors at the requested resolution and
hand out whole batches (one indexing operation per batch, no per-sample Python), which
keeps data loading far below the cost of a proxy training step on CPU.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from nas.errors import UserError

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "MIN_TRAIN",
    "ArrayDataModule",
    "Cifar10DataModule",
    "DataError",
    "DigitsDataModule",
    "EpochShuffle",
    "ImageFolderDataModule",
    "Split",
    "make_datamodule",
]


class DataError(UserError):
    """A dataset that is missing or malformed."""


MIN_TRAIN = 8  # training images below which no proxy can rank anything
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class EpochShuffle(RandomSampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order.

    Lightning calls `set_epoch` before every epoch.
    """

    def __init__(self, data_source, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 100_003 + self.epoch)
        return super().__iter__()


class _Batches(Dataset):
    """Indexable by a list of indices: returns a whole normalized float batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, flip: bool = False, seed: int = 0):
        self.images, self.labels = images, labels
        self.mean, self.std, self.flip = mean, std, flip
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].float().div_(255.0)
        if self.flip:
            mask = torch.rand(len(idx), generator=self.gen) < 0.5
            x[mask] = x[mask].flip(-1)
        return (x - self.mean) / self.std, self.labels[idx]


@dataclass
class Split:
    images: torch.Tensor  # N x C x H x W, uint8
    labels: torch.Tensor  # N, int64


class ArrayDataModule(pl.LightningDataModule):
    """Shared machinery: split, subset, resize, batch. Subclasses implement `load`."""

    name = "array"

    def __init__(self, resolution: int = 32, batch_size: int = 128, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, subset: float = 1.0, seed: int = 0,
                 augment: bool = False):
        super().__init__()
        self.resolution = resolution
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.subset = subset
        self.seed = seed
        self.augment = augment
        self._splits: dict[str, Split] | None = None
        self.num_classes = 0
        self.in_channels = 0

    def describe(self) -> str:
        root = getattr(self, "root", None)
        return f"{self.name} (data.root={str(root)!r})" if root else self.name

    # -- to implement ----------------------------------------------------------------
    def load(self) -> tuple[Split, Split | None]:
        """(training pool, fixed test split or None) as uint8 tensors at native size."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise `DataError` when the data cannot be read (called before any trial)."""

    # -- shared ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        pool, test = self.load()
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(pool.labels), generator=gen)
        n = len(order)
        n_val = max(1, round(n * self.val_fraction))
        n_test = 0 if test is not None else max(1, round(n * self.test_fraction))
        val_idx, test_idx, train_idx = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
        if self.subset < 1.0:
            train_idx = train_idx[: max(1, int(len(train_idx) * self.subset))]
        if len(train_idx) < MIN_TRAIN or len(val_idx) < 1:
            raise DataError(
                f"data {self.describe()} has {n} training images in {int(pool.labels.max()) + 1} "
                f"classes: after the validation/test split and subset {len(train_idx)} remain for "
                f"training (need at least {MIN_TRAIN}); add images or raise proxy.subset")
        if test is None:
            test = Split(pool.images[test_idx], pool.labels[test_idx])
        self._splits = {
            "train": Split(self._resize(pool.images[train_idx]), pool.labels[train_idx]),
            "val": Split(self._resize(pool.images[val_idx]), pool.labels[val_idx]),
            "test": Split(self._resize(test.images), test.labels),
        }
        train = self._splits["train"].images.float() / 255.0
        self.mean = train.mean(dim=(0, 2, 3), keepdim=True)[0]
        self.std = train.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-3)
        self.in_channels = pool.images.shape[1]
        labels = torch.cat([pool.labels, test.labels])
        self.num_classes = int(labels.max()) + 1

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.resolution and images.shape[-2] == self.resolution:
            return images
        out = []
        for chunk in images.split(1024):
            x = F.interpolate(chunk.float(), size=(self.resolution, self.resolution),
                              mode="bilinear", align_corners=False, antialias=True)
            out.append(x.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out) if out else images

    def split(self, name: str) -> Split:
        self.setup()
        assert self._splits is not None
        return self._splits[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        s = self.split(name)
        ds = _Batches(s.images, s.labels, self.mean, self.std, flip=self.augment and shuffle,
                      seed=self.seed)
        base = EpochShuffle(ds, self.seed) if shuffle else SequentialSampler(ds)
        # A last training batch of one image cannot be batch-normalized: drop it (only then).
        drop = shuffle and len(ds) % self.batch_size == 1
        return DataLoader(ds, sampler=BatchSampler(base, self.batch_size, drop_last=drop),
                          batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes."""

    name = "digits"

    def load(self) -> tuple[Split, None]:
        from sklearn.datasets import load_digits

        d = load_digits()
        # Values are 0..16; scale to 0..255 so every source shares one code path.
        images = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
        return Split(images[:, None], torch.from_numpy(d.target.astype(np.int64))), None


class Cifar10DataModule(ArrayDataModule):
    """CIFAR-10 from its python-pickle batch files (data_batch_1..5, test_batch)."""

    name = "cifar10"
    TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST = "test_batch"

    def __init__(self, root: str, **kw):
        super().__init__(**kw)
        self.root = Path(str(root)).expanduser()

    def check(self) -> None:
        if not self.root.is_dir():
            raise DataError(f"data.root={str(self.root)!r} is not a directory; point it at the folder "
                            "holding CIFAR-10's data_batch_1..5 and test_batch")
        missing = [f for f in (*self.TRAIN, self.TEST) if not (self.root / f).is_file()]
        if missing:
            raise DataError(f"data.root={str(self.root)!r} lacks CIFAR-10 batch files: "
                            f"{', '.join(missing)} (expected data_batch_1..5 and test_batch)")
        # Read every file now so that a malformed one stops the run before any trial.
        self._cache = {f: self._read(self.root / f) for f in (*self.TRAIN, self.TEST)}

    def _read(self, path: Path) -> Split:
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
            images = data.reshape(-1, 3, 32, 32)
        except Exception as err:  # any unreadable file is the same user error
            raise DataError(f"{str(path)!r} is not a CIFAR-10 python batch file "
                            f"({type(err).__name__}: {err})") from None
        if len(images) != len(labels):
            raise DataError(f"{str(path)!r}: {len(images)} images but {len(labels)} labels")
        return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels))

    def load(self) -> tuple[Split, Split]:
        if not getattr(self, "_cache", None):
            self.check()
        parts = [self._cache[f] for f in self.TRAIN]
        pool = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
        test = self._cache[self.TEST]
        self._cache = {}
        return pool, test


class ImageFolderDataModule(ArrayDataModule):
    """A tree with one subfolder per class; images are resized to the resolution."""

    name = "imagefolder"

    def __init__(self, root: str, grayscale: bool = False, **kw):
        super().__init__(**kw)
        self.root = Path(str(root)).expanduser()
        self.grayscale = grayscale

    def _files(self) -> tuple[list[str], list[tuple[Path, int]]]:
        if not self.root.is_dir():
            raise DataError(f"data.root={str(self.root)!r} is not a directory; expected one "
                            "subfolder of images per class")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if len(classes) < 2:
            raise DataError(f"data.root={str(self.root)!r} has {len(classes)} class folders; "
                            "expected at least 2 (one subfolder of images per class)")
        files = []
        for label, name in enumerate(classes):
            found = sorted(p for p in (self.root / name).rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"class folder {str(self.root / name)!r} holds no images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            files += [(p, label) for p in found]
        return classes, files

    def check(self) -> None:
        self._files()

    def load(self) -> tuple[Split, None]:
        from PIL import Image

        self.classes, files = self._files()
        mode = "L" if self.grayscale else "RGB"
        images = np.empty((len(files), 1 if self.grayscale else 3, self.resolution,
                           self.resolution), dtype=np.uint8)
        for i, (path, _) in enumerate(files):
            try:
                with Image.open(path) as im:
                    im = im.convert(mode).resize((self.resolution, self.resolution),
                                                 Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except Exception as err:
                raise DataError(f"cannot read image {str(path)!r}: {err}") from None
            images[i] = arr[None] if self.grayscale else arr.transpose(2, 0, 1)
        labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        return Split(torch.from_numpy(images), labels), None


DATASETS = {"digits": DigitsDataModule, "cifar10": Cifar10DataModule,
            "imagefolder": ImageFolderDataModule}


def make_datamodule(name: str, **kwargs) -> ArrayDataModule:
    """The data module called `name` (digits, cifar10, imagefolder)."""
    if name not in DATASETS:
        raise DataError(f"unknown data {name!r}; valid: {', '.join(DATASETS)}")
    cls = DATASETS[name]
    if name != "digits" and not kwargs.get("root"):
        raise DataError(f"data={name} needs data.root=<path to the dataset>")
    if name == "digits":
        kwargs.pop("root", None)
    if name != "imagefolder":
        kwargs.pop("grayscale", None)
    return cls(**kwargs)
