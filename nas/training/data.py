"""Data modules: embedded digits (default), cluttered digits, CIFAR-10 batch files, image folders.

Every dataset is one `ImageDataModule`: a subclass says where the images come from (`load`); the
module splits them (`split_indices`), measures or takes their statistics, and builds its loaders
with `make_loader` and its transforms with `build_transform`. Images are held in memory at the
requested resolution (`MemoryDataset`), except an image folder that streams from disk
(`FolderDataset`, decoded in DataLoader workers): `data.in_memory` chooses, and "auto" streams
past `IN_MEMORY_MAX` images.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from nas.common.config import CLUTTERED_ONLY, DATASET_ONLY, DataConfig
from nas.training.folders import DataError, index_folder
from nas.training.images import FolderDataset, ImageDataset, MemoryDataset
from nas.training.loaders import make_loader
from nas.training.transforms import Compose, PILToTensor, Resize, build_transform

__all__ = [
    "DATASETS",
    "IN_MEMORY_MAX",
    "MIN_TRAIN",
    "Cifar10DataModule",
    "ClutteredDigitsDataModule",
    "DataError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "check_train_size",
    "datamodule_for",
    "kept",
    "make_datamodule",
    "split_indices",
]

MIN_TRAIN = 8  # training images below which no proxy can rank anything
IN_MEMORY_MAX = 20_000  # images: data.in_memory=auto decodes a folder up front only up to this
MIN_STD = 1e-3  # a constant channel would otherwise divide by zero


def split_indices(order: torch.Tensor | np.ndarray, val_fraction: float, test_fraction: float,
                  test: bool = True) -> dict[str, Any]:
    """Split a shuffled order: validation first, then test (when `test`), the rest for training;
    each held-out part has at least one item."""
    n = len(order)
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction)) if test else 0
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return parts if test else {k: v for k, v in parts.items() if k != "test"}


def kept(n: int, subset: float) -> int:
    """How many of n training images `subset` keeps (at least one)."""
    return max(1, int(n * subset)) if subset < 1.0 else n


def check_train_size(what: str, images: int, classes: int, train: int) -> None:
    """Refuse data too small to train a proxy on, naming how much there is."""
    if train < MIN_TRAIN:
        raise DataError(f"data {what} has {images} images in {classes} classes: after the "
                        f"validation/test split and subset {train} remain for training (need at "
                        f"least {MIN_TRAIN}); add images or raise proxy.subset")


class ImageDataModule:
    """A dataset's training, validation and test splits, their statistics and loaders.

    It has a Lightning data module's methods (`setup`, `*_dataloader`) without importing
    Lightning, so reading and checking data stays quick; `nas.training.proxy.LightningData`
    hands it to a Trainer.

    Subclasses implement `load` and may implement `check`. After `setup`: `split(name)` is a
    split's dataset, `num_classes`, `in_channels`, and `mean`/`std` (per channel, in [0, 1]
    units: `data.mean`/`data.std` where given, else measured on the training split).
    """

    name = "images"
    needs_root = False  # whether the data live at data.root

    def __init__(self, resolution: int = 32, batch_size: int = 128, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, subset: float = 1.0, seed: int = 0, augment: str = "none",
                 mean: list[float] | None = None, std: list[float] | None = None):
        self.resolution, self.batch_size, self.seed = resolution, batch_size, seed
        self.val_fraction, self.test_fraction, self.subset = val_fraction, test_fraction, subset
        self.augment = augment
        self.given_stats = (mean, std)
        self._splits: dict[str, ImageDataset] | None = None
        self.num_classes = self.in_channels = 0
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()

    def describe(self) -> str:
        root = getattr(self, "root", None)
        return f"{self.name} (data.root={str(root)!r})" if root else self.name

    # -- to implement ----------------------------------------------------------------------
    def load(self) -> dict[str, ImageDataset]:
        """{"pool": all images} to split here, plus "test" when the data come with their own,
        or {"train", "val", "test"} made apart from one another (resized after splitting)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise `DataError` when the data cannot be read (called before any trial)."""

    def loader_settings(self) -> dict[str, Any]:
        """`make_loader`'s worker settings; images in memory are batched in this process."""
        return {}

    # -- shared ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        splits = {name: s.resized(self.resolution) for name, s in self._split(self.load()).items()}
        self.num_classes = 1 + max(int(s.labels.max()) for s in splits.values())
        check_train_size(self.describe(), sum(map(len, splits.values())), self.num_classes,
                         len(splits["train"]))
        self.in_channels = splits["train"].channels
        self.mean, self.std = self._statistics(splits["train"])
        self._splits = splits

    def _split(self, parts: dict[str, ImageDataset]) -> dict[str, ImageDataset]:
        """Draw validation (and test) from a pool by `seed`; keep `subset` of the training split."""
        if "pool" not in parts:
            train = parts["train"]
            return {**parts, "train": train.subset(slice(0, kept(len(train), self.subset)))}
        pool = parts.pop("pool")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed))
        drawn = split_indices(order, self.val_fraction, self.test_fraction, test="test" not in parts)
        drawn["train"] = drawn["train"][:kept(len(drawn["train"]), self.subset)]
        return {**{name: pool.subset(idx) for name, idx in drawn.items()}, **parts}

    def _statistics(self, train: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean, std = self.given_stats
        if mean is None or std is None:
            measured = train.statistics(seed=self.seed, size=min(self.resolution, 32))
            mean = measured[0] if mean is None else mean
            std = tuple(max(s, MIN_STD) for s in measured[1]) if std is None else std
        for key, given in (("mean", mean), ("std", std)):
            if len(given) != self.in_channels:
                raise DataError(f"data.{key}={list(given)} is not valid for {self.describe()}: it needs "
                                f"{self.in_channels} value(s), one per channel")
        return tuple(mean), tuple(std)

    def split(self, name: str) -> ImageDataset:
        """The "train", "val" or "test" split, untransformed."""
        self.setup()
        assert self._splits is not None
        return self._splits[name]

    def _dataset(self, name: str, train: bool) -> ImageDataset:
        """A split through the recipe's training or evaluation transform (a fresh generator)."""
        transform = build_transform(self.augment, train, self.resolution, self.mean, self.std)
        return self.split(name).with_transform(transform, seed=self.seed)

    def _loader(self, name: str, train: bool) -> DataLoader:
        return make_loader(self._dataset(name, train), self.batch_size, train, seed=self.seed,
                           **self.loader_settings())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def sample_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` training images, normalized, without augmentation (for zero-cost scores)."""
        ds = self._dataset("train", train=False)
        return ds.__getitems__(list(range(min(n, len(ds)))))

    def val_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` validation images drawn at random once (the same `n` give the same images; all of
        them when the split holds fewer), normalized: a fixed subset to score candidates on."""
        import random

        ds = self._dataset("val", train=False)
        picked = sorted(random.Random(0).sample(range(len(ds)), min(n, len(ds))))
        return ds.__getitems__(picked)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes."""

    name = "digits"

    def load(self) -> dict[str, ImageDataset]:
        from sklearn.datasets import load_digits

        d = load_digits()
        # Values are 0..16; scale to 0..255 so every source shares one code path.
        images = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
        labels = torch.from_numpy(d.target.astype(np.int64))
        return {"pool": MemoryDataset(images[:, None], labels)}


class ClutteredDigitsDataModule(ImageDataModule):
    """Cluttered digits (`nas.training.cluttered`): generated from the bundled digits, train,
    validation and test made from disjoint base digits; 10 classes, one channel."""

    name = "cluttered_digits"

    def __init__(self, **kw):
        """The generator's `data.*` keys (CLUTTERED_ONLY; the rest default), and the module's."""
        from nas.training.cluttered import ClutterSettings

        given = {k: kw.pop(k) for k in CLUTTERED_ONLY if k in kw}
        super().__init__(**kw)
        given = {k: float(v) if isinstance(getattr(ClutterSettings, k), float) else v
                 for k, v in given.items()}
        self.settings = ClutterSettings(**given, val_fraction=self.val_fraction,
                                        test_fraction=self.test_fraction, seed=self.seed)

    def load(self) -> dict[str, ImageDataset]:
        from nas.training.cluttered import make_cluttered

        made = make_cluttered(self.settings)
        return {name: MemoryDataset(*made[name]) for name in ("train", "val", "test")}


class Cifar10DataModule(ImageDataModule):
    """CIFAR-10 from its python-pickle batch files (data_batch_1..5, test_batch)."""

    name = "cifar10"
    needs_root = True
    TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST = "test_batch"

    def __init__(self, root: str, **kw):
        super().__init__(**kw)
        self.root = Path(str(root)).expanduser()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

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

    def _read(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
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
        return torch.from_numpy(images.copy()), torch.from_numpy(labels)

    def load(self) -> dict[str, ImageDataset]:
        if not self._cache:
            self.check()
        parts = [self._cache[f] for f in self.TRAIN]
        pool = torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
        test = self._cache[self.TEST]
        self._cache = {}
        return {"pool": MemoryDataset(*pool), "test": MemoryDataset(*test)}


class ImageFolderDataModule(ImageDataModule):
    """A tree with one subfolder per class (scanned by `index_folder`). `in_memory`: True decodes
    every image up front; False streams them, decoded and augmented in DataLoader worker
    processes (`num_workers`), so that memory does not grow with the folder and the first trial
    starts in seconds; "auto" streams past `IN_MEMORY_MAX` images."""

    name = "imagefolder"
    needs_root = True

    def __init__(self, root: str, grayscale: bool = False, in_memory: bool | str = "auto",
                 num_workers: int = 2, pin_memory: bool = True, persistent_workers: bool = True, **kw):
        super().__init__(**kw)
        self.root = Path(str(root)).expanduser()
        self.grayscale, self.in_memory = grayscale, in_memory
        self.workers = {"num_workers": num_workers, "pin_memory": pin_memory,
                        "persistent_workers": persistent_workers}
        self._files: FolderDataset | None = None
        self.classes: list[str] = []
        self.streamed = False

    def check(self) -> None:
        if self._files is None and self._splits is None:
            index = index_folder(self.root)
            self.classes = list(index.classes)
            auto = self.in_memory == "auto"
            self.streamed = self.in_memory is False or (auto and len(index) > IN_MEMORY_MAX)
            # Decoded up front at full size, as always; streamed JPEGs decode small (draft).
            self._files = FolderDataset.from_index(index, grayscale=self.grayscale, draft=self.streamed)

    def load(self) -> dict[str, ImageDataset]:
        self.check()
        files, self._files = self._files, None
        return {"pool": files if self.streamed else self._decoded(files)}

    def _decoded(self, files: FolderDataset) -> MemoryDataset:
        """Every image decoded and resized, into one uint8 tensor."""
        reader = files.with_transform(Compose([Resize(self.resolution), PILToTensor()]))
        size = self.resolution
        images = torch.empty((len(files), files.channels, size, size), dtype=torch.uint8)
        for i in range(len(files)):
            images[i] = reader[i][0]
        return MemoryDataset(images, torch.from_numpy(files.labels.copy()))

    def loader_settings(self) -> dict[str, Any]:
        return self.workers if self.streamed else {}


DATASETS = {"digits": DigitsDataModule, "cluttered_digits": ClutteredDigitsDataModule,
            "cifar10": Cifar10DataModule, "imagefolder": ImageFolderDataModule}


def make_datamodule(name: str, **kwargs) -> ImageDataModule:
    """The data module called `name` (see `DATASETS`), from keyword settings; the settings that
    belong to other datasets (`nas.common.config.DATASET_ONLY`) are left out."""
    if name not in DATASETS:
        raise DataError(f"unknown data {name!r}; valid: {', '.join(DATASETS)}")
    cls = DATASETS[name]
    foreign = {key for other, keys in DATASET_ONLY.items() if other != name for key in keys}
    kwargs = {k: v for k, v in kwargs.items() if k not in foreign}
    if cls.needs_root and not kwargs.get("root"):
        raise DataError(f"data={name} needs data.root=<path to the dataset>")
    if not cls.needs_root:
        kwargs.pop("root", None)
    return cls(**kwargs)


def datamodule_for(data: DataConfig, resolution: int, batch_size: int,
                   subset: float = 1.0) -> ImageDataModule:
    """The data module a `DataConfig` describes, at `resolution`."""
    keys = ("root", "val_fraction", "test_fraction", "seed", "augment", *DATASET_ONLY.get(data.name, ()))
    return make_datamodule(data.name, resolution=resolution, batch_size=batch_size, subset=subset,
                           **{key: getattr(data, key) for key in keys})
