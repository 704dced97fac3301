"""The two kinds of dataset every data module is made of: images held in memory, and image files
decoded when a batch needs them.

`MemoryDataset` holds a split as one uint8 tensor at the training resolution and transforms a
whole batch per fetch (`Transform.batch`): the fastest when the data fit. `FolderDataset` holds
only relative paths and labels and decodes each image in a DataLoader worker, so folders of
ImageNet's size fit: a worker's memory does not grow with the number of images (paths are packed
into one bytes object, not a list of Python strings whose reference counts would copy their
pages into every forked worker).
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from nas.training.folders import DataError, FolderIndex
from nas.training.transforms import PILToTensor, Resize, Transform

__all__ = ["FolderDataset", "ImageDataset", "MemoryDataset", "decode_image", "estimate_mean_std"]

Indices = Sequence[int] | torch.Tensor | np.ndarray | slice


class ImageDataset(Dataset, ABC):
    """A split's images and labels, fetched a whole batch at a time.

    `__getitems__(indices)` (what a DataLoader with a batch sampler calls) returns `(images,
    labels)`: N x C x H x W images as the transform makes them (uint8 without one) and int64
    labels. `labels` holds every item's label; `channels` the images' channel count. `subset`
    and `with_transform` return new datasets that share this one's storage; the dataset owns its
    transform and, for a batch transform, the generator it draws from.
    """

    transform: Transform | None

    @abstractmethod
    def __len__(self) -> int:
        """The number of images."""

    @abstractmethod
    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of `indices`, as one batch."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.__getitems__([i])
        return x[0], int(y[0])

    @property
    @abstractmethod
    def channels(self) -> int:
        """Channels of every image (1 or 3)."""

    @abstractmethod
    def subset(self, indices: Indices) -> ImageDataset:
        """The items at `indices` (a slice or integer positions), in that order, untransformed."""

    @abstractmethod
    def resized(self, size: int) -> ImageDataset:
        """The items with images at size x size before any transform."""

    @abstractmethod
    def with_transform(self, transform: Transform | None, seed: int = 0) -> ImageDataset:
        """The same items through `transform`; `seed` seeds a batch transform's generator."""

    @abstractmethod
    def statistics(self, seed: int, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel pixel mean and std in [0, 1] units."""


class MemoryDataset(ImageDataset):
    """Images held in memory as one N x C x H x W uint8 tensor, transformed a batch at a time (one
    indexing operation and a few vectorized ops per batch, no per-image Python)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None = None,
                 seed: int = 0):
        self.images, self.labels, self.transform = images, labels, transform
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[indices]
        if self.transform is not None:
            x = self.transform.batch(x, self.gen)
        return x, self.labels[indices]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, indices: Indices) -> MemoryDataset:
        return MemoryDataset(self.images[indices], self.labels[indices])

    def resized(self, size: int) -> MemoryDataset:
        """Resized by `Resize`'s batch form, rounded back to uint8 (the same tensor when at size)."""
        if self.images.shape[-2:] == (size, size):
            return self
        resize = Resize(size)
        # In chunks: a float copy of a whole split would need four times its memory.
        images = torch.cat([resize.batch(chunk.float()).round_().clamp_(0, 255).to(torch.uint8)
                            for chunk in self.images.split(1024)])
        return MemoryDataset(images, self.labels)

    def with_transform(self, transform: Transform | None, seed: int = 0) -> MemoryDataset:
        return MemoryDataset(self.images, self.labels, transform, seed)

    def statistics(self, seed: int = 0, size: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact, over every pixel (`seed` and `size` are for sampled datasets)."""
        x = self.images.float() / 255.0
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def decode_image(path: str, grayscale: bool = False, min_size: int | None = None) -> Image.Image:
    """Decode `path` to an "L" or "RGB" image; a JPEG whose shorter side is at least `min_size`
    times 2, 4 or 8 decodes at that reduced scale (Pillow's draft mode), which is much cheaper."""
    mode = "L" if grayscale else "RGB"
    try:
        with Image.open(path) as im:
            if min_size:
                im.draft(mode, (min_size, min_size))
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
            return im.convert(mode)  # convert loads the pixels, so the file can close
    except Exception as err:  # any decoder failure is the same user error: this file is not an image
        raise DataError(f"cannot decode image {path!r} ({type(err).__name__}: {err})") from None


class FolderDataset(ImageDataset):
    """Images listed as (path relative to `root`, label), decoded and transformed per item.

    Picklable (no open files, no lambdas) so that workers may be spawned as well as forked.
    """

    def __init__(self, root: str | os.PathLike[str], samples: Sequence[tuple[str, int]],
                 transform: Transform | None = None, grayscale: bool = False, draft: bool = True):
        self.root = os.fspath(root)
        self.grayscale, self.draft = grayscale, draft
        encoded = [os.fsencode(path) for path, _ in samples]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._paths = b"".join(encoded)
        self._labels = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
        if len(self._labels) and self._labels.min() < 0:
            raise DataError(f"label {int(self._labels.min())} is not valid: labels are integers >= 0")
        self._set_transform(transform)

    @classmethod
    def from_index(cls, index: FolderIndex, transform: Transform | None = None, grayscale: bool = False,
                   draft: bool = True) -> FolderDataset:
        """Every image of an index."""
        return cls(index.root, index.samples, transform, grayscale, draft)

    def _set_transform(self, transform: Transform | None) -> None:
        self.transform = transform
        # Let JPEGs decode small only when the first transform says how small it may go.
        self.decode_size: int | None = getattr(transform, "decode_size", None) if self.draft else None

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (a read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def path(self, i: int) -> str:
        """The full path of item `i`."""
        rel = self._paths[self._offsets[i]:self._offsets[i + 1]]
        return os.path.join(self.root, os.fsdecode(rel))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = decode_image(self.path(i), self.grayscale, self.decode_size)
        if self.transform is not None:
            x = self.transform(x)
        if isinstance(x, Image.Image):
            x = PILToTensor()(x)
        return x, int(self._labels[i])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # default_collate writes a worker's batch straight into shared memory
        return default_collate([self[i] for i in indices])

    def subset(self, indices: Indices) -> FolderDataset:
        if isinstance(indices, slice):
            indices = range(len(self))[indices]
        chosen = np.asarray(indices, dtype=np.int64)
        starts = self._offsets[chosen]
        lengths = self._offsets[chosen + 1] - starts
        offsets = np.zeros(len(chosen) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Each chosen path's bytes, gathered in one numpy op (no Python string per image).
        where = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        out = copy.copy(self)
        out._paths = np.frombuffer(self._paths, dtype=np.uint8)[where].tobytes()
        out._offsets, out._labels = offsets, self._labels[chosen]
        out._set_transform(None)
        return out

    def resized(self, size: int) -> FolderDataset:
        """The same files: every recipe's first step sizes each image as it is read."""
        return self

    def with_transform(self, transform: Transform | None, seed: int = 0) -> FolderDataset:
        """The same files through `transform` (its random steps draw from the global RNG, which
        the loader seeds per worker; `seed` is for batch transforms)."""
        out = copy.copy(self)
        out._set_transform(transform)
        return out

    def statistics(self, seed: int = 0, size: int = 32) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Estimated from a seeded sample of 256 images decoded at size x size: seconds, not a pass."""
        return estimate_mean_std(self, n=256, seed=seed, size=size)


def estimate_mean_std(source: FolderIndex | FolderDataset, n: int = 512, seed: int = 0, size: int = 32,
                      grayscale: bool | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel pixel mean and std in [0, 1] units from a seeded sample of up to n images,
    each decoded small (size x size), so that it costs seconds rather than a pass over the data.

    `grayscale` defaults to the dataset's setting (False for an index).
    """
    if n < 1:
        raise ValueError(f"n={n!r} is not valid: expected an integer >= 1")
    resize = Resize(size)
    if isinstance(source, FolderIndex):
        count, gray = len(source), bool(grayscale)

        def path(i: int) -> str:
            return os.path.join(source.root, source.samples[i][0])
    else:
        count, path = len(source), source.path
        gray = source.grayscale if grayscale is None else grayscale
    if count == 0:
        raise DataError("cannot estimate mean and std of an empty data set")
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    channels = 1 if gray else 3
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for i in chosen.tolist():
        img = resize(decode_image(path(i), gray, size))
        arr = np.asarray(img, dtype=np.float64).reshape(-1, channels) / 255.0
        total += arr.sum(0)
        squares += (arr * arr).sum(0)
    pixels = len(chosen) * size * size
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean * mean, 0.0))
    return tuple(mean.tolist()), tuple(std.tolist())
