"""Data modules: embedded digits (default), CIFAR-10 batch files, image folder trees.

All three hold their images in memory as uint8 tensors at the requested resolution and
hand out whole batches (one indexing operation per batch, no per-sample Python), which
keeps data loading far below the cost of a proxy training step on CPU.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from nas.common.config import CLUTTERED_ONLY, DataConfig
from nas.training.images import (
    IMAGE_SUFFIXES,
    DataError,
    FolderDataset,
    FolderIndex,
    build_transform,
    decode_image,
    estimate_mean_std,
    index_folder,
    seed_worker,
)

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "MIN_TRAIN",
    "ArrayDataModule",
    "Cifar10DataModule",
    "ClutteredDigitsDataModule",
    "DataError",
    "DigitsDataModule",
    "EpochShuffle",
    "ImageFolderDataModule",
    "Split",
    "make_datamodule",
]


MIN_TRAIN = 8  # training images below which no proxy can rank anything
IN_MEMORY_MAX = 20_000  # images: data.in_memory=auto decodes a folder up front only up to this


def check_train_size(what: str, images: int, classes: int, train: int) -> None:
    """Refuse data too small to train a proxy on, naming how much there is."""
    if train < MIN_TRAIN:
        raise DataError(f"data {what} has {images} images in {classes} classes: after the "
                        f"validation/test split and subset {train} remain for training (need at "
                        f"least {MIN_TRAIN}); add images or raise proxy.subset")


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
    """In-memory images, fetched a whole batch at a time (one indexing operation, no per-image
    Python): `__getitems__` is what a DataLoader with a batch sampler calls."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, augment: str = "none", seed: int = 0):
        self.images, self.labels = images, labels
        self.mean, self.std, self.augment = mean, std, augment
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].float().div_(255.0)
        if self.augment != "none":
            x = augment_batch(x, self.augment, self.gen)
        return (x - self.mean) / self.std, self.labels[idx]

    __getitem__ = __getitems__


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation of a float batch (N, C, H, W) in [0, 1], vectorized:
    `flip` (horizontal, p=0.5), `cifar` (pad 4, random crop back, flip), `imagenet`
    (random-resized crop, scale 0.08-1, aspect 3/4-4/3, then flip)."""
    n, _, h, w = x.shape
    if kind == "cifar":
        padded = F.pad(x, (4, 4, 4, 4))
        dy = torch.randint(0, 9, (n,), generator=gen)
        dx = torch.randint(0, 9, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 8)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    elif kind == "imagenet":
        area = torch.empty(n).uniform_(0.08, 1.0, generator=gen)
        log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
        ratio = log_ratio.exp()
        sw = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
        sh = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sw)
        cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sh)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mask = torch.rand(n, generator=gen) < 0.5
    x[mask] = x[mask].flip(-1)
    return x


def _whole_batch(batch):
    """`collate_fn` for `_Batches`: `__getitems__` already returns the batch."""
    return batch


@dataclass
class Split:
    images: torch.Tensor  # N x C x H x W, uint8
    labels: torch.Tensor  # N, int64


class _SplitLoaders(pl.LightningDataModule):
    """Training, validation and test loaders from one `_loader(split, shuffle)`."""

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class ArrayDataModule(_SplitLoaders):
    """Shared machinery: split, subset, resize, batch. Subclasses implement `load`."""

    name = "array"

    def __init__(self, resolution: int = 32, batch_size: int = 128, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, subset: float = 1.0, seed: int = 0,
                 augment: str = "none", mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.given_stats = (mean, std)  # data.mean/data.std of an image folder; else measured
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
    def load_splits(self) -> tuple[Split, Split, Split] | None:
        """(train, val, test) made apart from one another, or None to split `load()`'s pool."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        fixed = self.load_splits()
        if fixed is not None:
            train, val, test = fixed
            if self.subset < 1.0:
                keep = max(1, int(len(train.labels) * self.subset))
                train = Split(train.images[:keep], train.labels[:keep])
            check_train_size(self.describe(), len(train.labels) + len(val.labels) + len(test.labels),
                             int(train.labels.max()) + 1, len(train.labels))
            self._assign(train, val, test)
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
        check_train_size(self.describe(), n, int(pool.labels.max()) + 1, len(train_idx))
        if test is None:
            test = Split(pool.images[test_idx], pool.labels[test_idx])
        self._assign(Split(pool.images[train_idx], pool.labels[train_idx]),
                     Split(pool.images[val_idx], pool.labels[val_idx]), test)

    def _assign(self, train: Split, val: Split, test: Split) -> None:
        self._splits = {name: Split(self._resize(s.images), s.labels)
                        for name, s in (("train", train), ("val", val), ("test", test))}
        images = self._splits["train"].images.float() / 255.0
        self.mean = images.mean(dim=(0, 2, 3), keepdim=True)[0]
        self.std = images.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-3)
        self.in_channels = train.images.shape[1]
        mean, std = self.given_stats
        for key, given in (("mean", mean), ("std", std)):
            if given is None:
                continue
            if len(given) != self.in_channels:
                raise DataError(f"data.{key}={list(given)} is not valid for {self.describe()}: it needs "
                                f"{self.in_channels} value(s), one per channel")
            setattr(self, key, torch.tensor(given, dtype=torch.float32).view(-1, 1, 1))
        self.num_classes = int(torch.cat([train.labels, val.labels, test.labels]).max()) + 1

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
        ds = _Batches(s.images, s.labels, self.mean, self.std,
                      augment=self.augment if shuffle else "none", seed=self.seed)
        base = EpochShuffle(ds, self.seed) if shuffle else SequentialSampler(ds)
        # A last training batch of one image cannot be batch-normalized: drop it (only then).
        drop = shuffle and len(ds) % self.batch_size == 1
        # A plain `batch_size` loader over the shuffle: Lightning calls its `set_epoch` (a new
        # order every epoch, the same orders after a resume) and under DDP swaps in a distributed
        # sampler, one shard per rank. `__getitems__` still fetches each batch in one go.
        return DataLoader(ds, batch_size=self.batch_size, sampler=base, drop_last=drop,
                          collate_fn=_whole_batch)

    def sample_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` training images, normalized, without augmentation (for zero-cost scores)."""
        s = self.split("train")
        n = min(n, len(s.labels))
        return (s.images[:n].float() / 255.0 - self.mean) / self.std, s.labels[:n]



class DigitsDataModule(ArrayDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes."""

    name = "digits"

    def load(self) -> tuple[Split, None]:
        from sklearn.datasets import load_digits

        d = load_digits()
        # Values are 0..16; scale to 0..255 so every source shares one code path.
        images = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
        return Split(images[:, None], torch.from_numpy(d.target.astype(np.int64))), None


class ClutteredDigitsDataModule(ArrayDataModule):
    """Cluttered digits (`nas.training.cluttered`): generated from the bundled digits, train,
    validation and test made from disjoint base digits; 10 classes, one channel."""

    name = "cluttered_digits"

    def __init__(self, clutter_settings: dict | None = None, **kw):
        """`clutter_settings`: the generator's `data.*` keys (CLUTTERED_ONLY); the rest default."""
        super().__init__(**kw)
        from nas.training.cluttered import ClutterSettings

        given = {k: float(v) if isinstance(getattr(ClutterSettings, k), float) else v
                 for k, v in (clutter_settings or {}).items()}
        self.settings = ClutterSettings(**given, val_fraction=self.val_fraction,
                                        test_fraction=self.test_fraction, seed=self.seed)

    def load_splits(self) -> tuple[Split, Split, Split]:
        from nas.training.cluttered import make_cluttered

        made = make_cluttered(self.settings)
        return tuple(Split(*made[name]) for name in ("train", "val", "test"))


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
        bad = labels[(labels < 0) | (labels > 9)]
        if len(bad):
            raise DataError(f"{str(path)!r} holds label {int(bad[0])}: CIFAR-10 labels are 0 to 9 (is it a "
                            "CIFAR-100 or another dataset's file? use data=imagefolder for other data)")
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
                                f"({', '.join(sorted(IMAGE_SUFFIXES))})")
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


class FolderStreamDataModule(_SplitLoaders):
    """An image folder of any size: indexed (paths and labels), never decoded up front; images
    are decoded and augmented in DataLoader worker processes (`num_workers`), so memory does
    not grow with the folder and the first trial starts in seconds."""

    name = "imagefolder"

    def __init__(self, root: str, resolution: int = 32, batch_size: int = 64, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, subset: float = 1.0, seed: int = 0, augment: str = "imagenet",
                 grayscale: bool = False, num_workers: int = 2, pin_memory: bool = True,
                 persistent_workers: bool = True, mean: list[float] | None = None,
                 std: list[float] | None = None):
        super().__init__()
        self.root = Path(str(root)).expanduser()
        self.resolution, self.batch_size, self.seed = resolution, batch_size, seed
        self.val_fraction, self.test_fraction, self.subset = val_fraction, test_fraction, subset
        self.augment, self.grayscale = augment, grayscale
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers
        self.given_stats = (mean, std)
        self.index: FolderIndex | None = None
        self._sets: dict[str, FolderDataset] | None = None
        self.num_classes = self.in_channels = 0

    def describe(self) -> str:
        return f"{self.name} (data.root={str(self.root)!r})"

    def check(self) -> None:
        if self.index is None:
            self.index = index_folder(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self._sets is not None:
            return
        self.check()
        index = self.index
        n = len(index)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, round(n * self.val_fraction))
        n_test = max(1, round(n * self.test_fraction))
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        if self.subset < 1.0:
            parts["train"] = parts["train"][: max(1, int(len(parts["train"]) * self.subset))]
        check_train_size(self.describe(), n, len(index.classes), len(parts["train"]))
        samples = {k: [index.samples[i] for i in v] for k, v in parts.items()}
        mean, std = self.given_stats
        if mean is None or std is None:  # from a seeded sample of the training split: seconds
            train_only = FolderDataset(index.root, samples["train"], grayscale=self.grayscale)
            mean, std = estimate_mean_std(train_only, n=256, seed=self.seed, size=min(self.resolution, 32))
        self.mean, self.std = tuple(mean), tuple(std)
        self.in_channels = 1 if self.grayscale else 3
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(f"data.mean/data.std need {self.in_channels} values (one per channel), got "
                            f"{list(self.mean)} and {list(self.std)}")
        self.num_classes = len(index.classes)
        self._sets = {k: FolderDataset(index.root, v, build_transform(
            self.augment, k == "train", self.resolution, self.mean, self.std), grayscale=self.grayscale)
            for k, v in samples.items()}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        ds = self._sets[name]
        workers = self.num_workers
        return DataLoader(ds, batch_size=self.batch_size,
                          sampler=EpochShuffle(ds, self.seed) if shuffle else SequentialSampler(ds),
                          drop_last=shuffle and len(ds) % self.batch_size == 1, num_workers=workers,
                          pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.persistent_workers and workers > 0,
                          worker_init_fn=seed_worker if workers > 0 else None,
                          generator=torch.Generator().manual_seed(self.seed))


    def sample_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` training images, normalized, without augmentation (for zero-cost scores)."""
        self.setup()
        train = self._sets["train"]
        evaluation = FolderDataset(self.index.root, [], build_transform(
            "none", False, self.resolution, self.mean, self.std), grayscale=self.grayscale)
        items = [evaluation.transform(decode_image(train.path(i), self.grayscale))
                 for i in range(min(n, len(train)))]
        return torch.stack(items), torch.as_tensor(train.labels[: len(items)].copy())


DATASETS = {"digits": DigitsDataModule, "cluttered_digits": ClutteredDigitsDataModule,
            "cifar10": Cifar10DataModule,
            "imagefolder": ImageFolderDataModule}
STREAM_ONLY = ("num_workers", "pin_memory", "persistent_workers")


def make_datamodule(name: str, in_memory: bool | str = "auto", **kwargs) -> pl.LightningDataModule:
    """The data module called `name` (digits, cifar10, imagefolder).

    An image folder streams from disk when `in_memory` is false, or "auto" and it holds more
    than `IN_MEMORY_MAX` images; everything else is decoded into memory once (fastest for data
    that fits: digits, CIFAR-10 at 32 px).
    """
    if name not in DATASETS:
        raise DataError(f"unknown data {name!r}; valid: {', '.join(DATASETS)}")
    if name not in ("digits", "cluttered_digits") and not kwargs.get("root"):
        raise DataError(f"data={name} needs data.root=<path to the dataset>")
    clutter = kwargs.pop("clutter_settings", None)
    if name == "imagefolder" and (in_memory is False or (in_memory == "auto"
                              and len(index_folder(kwargs["root"])) > IN_MEMORY_MAX)):
        return FolderStreamDataModule(**kwargs)
    for key in STREAM_ONLY:
        kwargs.pop(key, None)
    if name != "imagefolder":  # the other datasets measure their statistics (the config refuses them)
        kwargs.pop("mean", None)
        kwargs.pop("std", None)
    if name in ("digits", "cluttered_digits"):
        kwargs.pop("root", None)
    if name == "cluttered_digits":
        kwargs["clutter_settings"] = clutter
    if name != "imagefolder":
        kwargs.pop("grayscale", None)
    return DATASETS[name](**kwargs)


def datamodule_for(data: DataConfig, resolution: int, batch_size: int, subset: float = 1.0):
    """The data module a `DataConfig` describes, at `resolution`."""
    return make_datamodule(data.name, in_memory=data.in_memory, root=data.root, resolution=resolution,
                           batch_size=batch_size, val_fraction=data.val_fraction,
                           test_fraction=data.test_fraction, subset=subset, seed=data.seed,
                           augment=data.augment, grayscale=data.grayscale, num_workers=data.num_workers,
                           pin_memory=data.pin_memory, persistent_workers=data.persistent_workers,
                           mean=data.mean, std=data.std,
                           clutter_settings={key: getattr(data, key) for key in CLUTTERED_ONLY})
