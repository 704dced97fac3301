"""Image folder trees decoded on the fly: an index, a Dataset, augmentations and a loader.

`nas.training.data` decodes a whole folder into memory once, which suits small proxy data sets. Here each
image is decoded when a batch needs it, in DataLoader worker processes, so that folders of
ImageNet's size fit: the index holds only relative paths and labels, and a worker's memory does
not grow with the number of images (paths are packed into one bytes object, not a list of
Python strings whose reference counts would copy their pages into every forked worker).

The transforms are written on Pillow and torch ops. torchvision does not import beside the CPU
torch build we install, and kornia would add a dependency for a handful of transforms. Geometry
that shrinks the image (crops, resizes) runs on the PIL image, before it becomes a tensor, so
that every later step touches few pixels; JPEGs are decoded at a reduced DCT scale when the
first transform says how small it may go (`decode_size`).

Randomness: every random transform draws from torch's global RNG. In a DataLoader worker that
RNG is seeded by PyTorch with `base_seed + worker_id`, `base_seed` being drawn from the loader's
generator when an iterator starts its workers (every epoch, or once with persistent workers,
whose streams then run on). `make_loader` seeds that generator, so augmentations differ between
workers and between epochs yet repeat for the same seed. With `num_workers=0` the transforms
draw from the main process's RNG, which `torch.manual_seed` fixes.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from nas.errors import UserError

__all__ = [
    "IMAGE_SUFFIXES",
    "Augment",
    "Compose",
    "DataError",
    "FolderDataset",
    "FolderIndex",
    "Normalize",
    "PILToTensor",
    "PadRandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeCenterCrop",
    "build_transform",
    "decode_image",
    "estimate_mean_std",
    "index_folder",
    "make_loader",
    "seed_worker",
]

IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                            ".pgm"))
_LAYOUT = "expected a directory with one subfolder of images per class"


class DataError(UserError):
    """An image folder that is missing, malformed or holds an image that cannot be decoded."""


# -- index -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderIndex:
    """A folder tree's classes and image files, found without opening any image."""

    root: str
    classes: tuple[str, ...]
    # (path relative to root, label), by class, then by path within the class
    samples: tuple[tuple[str, int], ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order (a class may hold a single image)."""
        labels = np.fromiter((label for _, label in self.samples), dtype=np.int64, count=len(self.samples))
        return dict(zip(self.classes, np.bincount(labels, minlength=len(self.classes)).tolist(),
                        strict=True))


def _scan_class(top: str, prefix: str) -> list[str]:
    """Relative paths of the image files under `top` (any depth), sorted."""
    found: list[str] = []
    stack = [(top, prefix)]
    seen: set[tuple[int, int]] = set()  # (device, inode) of visited folders: symlink loops end here
    while stack:
        folder, rel = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        stack.append((entry.path, f"{rel}{entry.name}/"))
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                        found.append(rel + entry.name)
        except OSError as err:
            raise DataError(f"cannot list {folder!r}: {err.strerror or err}") from None
    found.sort()
    return found


def index_folder(root: str | os.PathLike[str]) -> FolderIndex:
    """Index a tree with one subfolder per class (sorted names give the labels); opens no image.

    Hidden entries (names starting with ".") are skipped; images may sit at any depth inside
    their class folder; files at the top level are ignored.
    """
    top = os.path.expanduser(os.fspath(root))
    if not os.path.exists(top):
        raise DataError(f"image folder {top!r} does not exist; {_LAYOUT}")
    if not os.path.isdir(top):
        raise DataError(f"image folder {top!r} is not a directory; {_LAYOUT}")
    try:
        with os.scandir(top) as entries:
            classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list image folder {top!r}: {err.strerror or err}") from None
    if len(classes) < 2:
        found = f" ({', '.join(map(repr, classes))})" if classes else ""
        raise DataError(f"image folder {top!r} has {len(classes)} class folders{found}; expected at "
                        "least 2 (one subfolder of images per class)")
    samples: list[tuple[str, int]] = []
    empty = []
    for label, name in enumerate(classes):
        files = _scan_class(os.path.join(top, name), f"{name}/")
        if not files:
            empty.append(name)
        samples += [(f, label) for f in files]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(f"class folder {shown} in {top!r} holds no images; valid suffixes: "
                        f"{' '.join(sorted(IMAGE_SUFFIXES))}")
    return FolderIndex(top, tuple(classes), tuple(samples))


# -- decoding ----------------------------------------------------------------------------------


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


class FolderDataset(Dataset):
    """Images listed as (path relative to `root`, label), decoded and transformed per item.

    Picklable (no open files, no lambdas) so that workers may be spawned as well as forked.
    """

    def __init__(self, root: str | os.PathLike[str], samples: Sequence[tuple[str, int]],
                 transform: Callable | None = None, grayscale: bool = False, draft: bool = True):
        self.root = os.fspath(root)
        self.transform = transform
        self.grayscale = grayscale
        # Let JPEGs decode small only when the first transform says how small it may go.
        self.decode_size: int | None = getattr(transform, "decode_size", None) if draft else None
        encoded = [os.fsencode(path) for path, _ in samples]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._paths = b"".join(encoded)
        self._labels = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
        if len(self._labels) and self._labels.min() < 0:
            raise DataError(f"label {int(self._labels.min())} is not valid: labels are integers >= 0")

    @classmethod
    def from_index(cls, index: FolderIndex, transform: Callable | None = None, grayscale: bool = False,
                   draft: bool = True) -> FolderDataset:
        """Every image of an index."""
        return cls(index.root, index.samples, transform, grayscale, draft)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (a read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

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


# -- transforms --------------------------------------------------------------------------------


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _randint(low: int, high: int) -> int:
    """An integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, ()).item())


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} is not valid: expected an integer >= 1")
    return size


def _bilinear(img: Image.Image, size: int, box: tuple[float, float, float, float]) -> Image.Image:
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


class Resize:
    """Resize a PIL image to size x size (aspect not kept, as `nas.training.data` does)."""

    def __init__(self, size: int):
        self.size = _check_size(size)

    @property
    def decode_size(self) -> int:
        return self.size

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.size == (self.size, self.size):
            return img
        return _bilinear(img, self.size, (0, 0, *img.size))

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomResizedCrop:
    """ImageNet-style crop: a random area fraction in `scale` and aspect ratio in `ratio`,
    chosen on the PIL image and resized (Pillow BILINEAR) to size x size in one step."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size = _check_size(size)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale={scale!r} is not valid: expected 0 < low <= high <= 1")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio={ratio!r} is not valid: expected 0 < low <= high")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    @property
    def decode_size(self) -> int:
        # The narrowest crop's side is shorter_side * sqrt(scale_low * min(ratio_low, 1/ratio_high));
        # decoding with at least this shorter side keeps that crop at >= size pixels.
        narrowest = math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1]))
        return math.ceil(self.size / narrowest)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random (left, top, right, bottom) box inside a width x height image."""
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_low, log_high))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = _randint(0, width - w), _randint(0, height - h)
                return left, top, left + w, top + h
        # No draw fitted (an extreme aspect ratio): the largest centred box within `ratio`.
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, max(1, min(height, round(width / self.ratio[0])))
        elif aspect > self.ratio[1]:
            w, h = max(1, min(width, round(height * self.ratio[1]))), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image) -> Image.Image:
        return _bilinear(img, self.size, self.crop_box(*img.size))

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class ResizeCenterCrop:
    """Evaluation crop: resize the shorter side to size / crop_fraction, then take the centre
    size x size (done as one resize of the centred box, which is the same geometry)."""

    def __init__(self, size: int, crop_fraction: float = 0.875):
        self.size = _check_size(size)
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction={crop_fraction!r} is not valid: expected 0 < value <= 1")
        self.crop_fraction = float(crop_fraction)

    @property
    def decode_size(self) -> int:
        return math.ceil(self.size / self.crop_fraction)

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        side = min(width, height) * self.crop_fraction
        left, top = (width - side) / 2, (height - side) / 2
        return _bilinear(img, self.size, (left, top, left + side, top + side))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop({self.size}, crop_fraction={self.crop_fraction})"


class PILToTensor:
    """PIL image -> uint8 C x H x W tensor (values kept in 0..255)."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def __repr__(self) -> str:
        return "PILToTensor()"


class PadRandomCrop:
    """CIFAR-style crop: zero-pad a C x H x W tensor by `padding` on every side, then take a
    random size x size window."""

    def __init__(self, size: int, padding: int = 4):
        self.size = _check_size(size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding={padding!r} is not valid: expected an integer >= 0")
        self.padding = padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PadRandomCrop takes a C x H x W tensor, not {type(x).__name__}")
        p = self.padding
        height, width = x.shape[-2] + 2 * p, x.shape[-1] + 2 * p
        if height < self.size or width < self.size:
            raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} image padded by {p} is smaller than "
                             f"the {self.size}x{self.size} crop")
        if p:
            x = F.pad(x, (p, p, p, p))
        top, left = _randint(0, height - self.size), _randint(0, width - self.size)
        return x[..., top:top + self.size, left:left + self.size]

    def __repr__(self) -> str:
        return f"PadRandomCrop({self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability p (a PIL image or a ... x H x W tensor)."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p={p!r} is not valid: expected 0 <= p <= 1")
        self.p = float(p)

    def __call__(self, x):
        if torch.rand(()).item() >= self.p:
            return x
        if isinstance(x, Image.Image):
            return x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return x.flip(-1)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(x / 255 - mean) / std for a uint8 tensor ((x - mean) / std for a float one), as float32;
    mean and std are per channel in [0, 1] units (one value applies to every channel)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(f"mean={self.mean} and std={self.std} are not valid: expected one value "
                             "per channel in each")
        if min(self.std) <= 0:
            raise ValueError(f"std={self.std} is not valid: every value must be > 0")
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.mean) not in (1, x.shape[-3]):
            raise ValueError(f"Normalize has {len(self.mean)} channel values for an image with "
                             f"{x.shape[-3]} channels")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return (x - self._mean) * self._inv_std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Iterable[Callable]):
        self.transforms = tuple(transforms)

    @property
    def decode_size(self) -> int | None:
        # Only the first transform sees the decoded image.
        return getattr(self.transforms[0], "decode_size", None) if self.transforms else None

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.transforms))}])"


class Augment(str, Enum):
    """The augmentation recipes `build_transform` knows."""

    NONE = "none"  # resize only
    FLIP = "flip"  # resize, then a random horizontal flip when training
    CIFAR = "cifar"  # resize, then (training) pad-4 random crop and flip
    IMAGENET = "imagenet"  # training: random-resized crop and flip; evaluation: resize + centre crop


def build_transform(kind: str | Augment, train: bool, size: int, mean: Sequence[float],
                    std: Sequence[float]) -> Compose:
    """The transform of recipe `kind` (see `Augment`): PIL image -> normalized float32 tensor."""
    try:
        kind = Augment(kind)
    except ValueError:
        raise DataError(f"unknown augmentation {kind!r}; valid: {', '.join(a.value for a in Augment)}") \
            from None
    _check_size(size)
    first = ResizeCenterCrop(size) if kind is Augment.IMAGENET else Resize(size)
    steps: list[Callable] = [first, PILToTensor()]
    if train:
        if kind is Augment.IMAGENET:
            steps[0] = RandomResizedCrop(size)
        if kind is Augment.CIFAR:
            steps.append(PadRandomCrop(size, padding=4))
        if kind is not Augment.NONE:
            steps.append(RandomHorizontalFlip())
    return Compose([*steps, Normalize(mean, std)])


# -- statistics --------------------------------------------------------------------------------


def estimate_mean_std(source: FolderIndex | FolderDataset, n: int = 512, seed: int = 0, size: int = 32,
                      grayscale: bool | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel pixel mean and std in [0, 1] units from a seeded sample of up to n images,
    each decoded small (size x size), so that it costs seconds rather than a pass over the data.

    `grayscale` defaults to the dataset's setting (False for an index).
    """
    if n < 1:
        raise ValueError(f"n={n!r} is not valid: expected an integer >= 1")
    _check_size(size)
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
    resize = Resize(size)
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


# -- loading -----------------------------------------------------------------------------------


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's global RNGs in a DataLoader worker from torch's worker seed
    (`base_seed + worker_id`), so that any library a transform uses differs per worker and epoch.

    PyTorch's worker loop seeds them too; doing it here keeps the guarantee ours and visible.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(np.random.SeedSequence([seed, worker_id]).generate_state(4))


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0,
                pin_memory: bool = False, persistent_workers: bool = True, seed: int = 0,
                drop_last: bool | None = None) -> DataLoader:
    """A DataLoader: shuffled (a new order each epoch, the same orders for the same seed) when
    training, in order otherwise. `drop_last` defaults to `train`, so batch norm never sees a
    final batch of one; `persistent_workers` applies only when num_workers > 0 and pinning only
    where CUDA is available."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid: expected an integer >= 1")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r} is not valid: expected an integer >= 0")
    # One generator feeds both the shuffle and the workers' base seed, in a fixed sequence.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train,
                      drop_last=train if drop_last is None else drop_last, num_workers=num_workers,
                      pin_memory=pin_memory and torch.cuda.is_available(),
                      persistent_workers=persistent_workers and num_workers > 0,
                      worker_init_fn=seed_worker if num_workers > 0 else None, generator=generator)
