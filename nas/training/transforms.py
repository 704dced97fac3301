"""The one set of transforms and recipes, used by every dataset.

Each step has two forms over the same parameters (see `Transform`): one image at a time, as an
image file is read (in DataLoader workers), and a whole batch at a time, for images held in
memory at their final size (one vectorized op per batch, no per-image Python).

They are written on Pillow and torch ops: torchvision does not import beside the CPU torch
build we install, and kornia would add a dependency for a handful of transforms. Geometry that
shrinks an image (crops, resizes) runs on the PIL image, before it becomes a tensor, so that
every later step touches few pixels; JPEGs are decoded at a reduced DCT scale when the first
step says how small it may go (`decode_size`).

Randomness: one image at a time, a step draws from torch's global RNG. In a DataLoader worker
that RNG is seeded by PyTorch with `base_seed + worker_id`, `base_seed` being drawn from the
loader's generator when an iterator starts its workers (every epoch, or once with persistent
workers, whose streams then run on); `nas.training.loaders.make_loader` seeds that generator,
so augmentations differ between workers and between epochs yet repeat for the same seed.
Without workers the steps draw from the main process's RNG, which `torch.manual_seed` fixes.
A batch step draws from the generator it is given, which the in-memory dataset seeds.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from enum import Enum

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from nas.training.folders import DataError

__all__ = [
    "Augment",
    "Compose",
    "Normalize",
    "PILToTensor",
    "PadRandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeCenterCrop",
    "Transform",
    "build_transform",
]


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


def _affine_crop(x: torch.Tensor, size: int, sw: torch.Tensor, sh: torch.Tensor, cx: torch.Tensor,
                 cy: torch.Tensor) -> torch.Tensor:
    """Per image, the box of width sw and height sh (fractions of the image) centred at (cx, cy)
    (in [-1, 1]), resampled bilinearly to size x size."""
    n, c = x.shape[:2]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Transform(ABC):
    """One step of a recipe, in two forms over the same parameters.

    `__call__(x)` transforms one image: a PIL image, or a C x H x W tensor once `PILToTensor` has
    run; a random step draws from torch's global RNG. `batch(x, gen)` transforms a N x C x H x W
    float batch in [0, 1] (images held in memory, already at the recipe's size) in one vectorized
    op, drawing from `gen`; steps that only turn files into tensors pass the batch through.
    `decode_size` is the shorter side a JPEG may be decoded at when this step comes first (None:
    full size). Transforms hold no open resources and pickle, so workers may be forked or spawned.
    """

    decode_size: int | None = None

    @abstractmethod
    def __call__(self, x):
        """One image, transformed."""

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A N x C x H x W float batch, transformed (by default as one image of any leading shape)."""
        return self(x)


class Resize(Transform):
    """Resize to size x size, bilinear with antialiasing (aspect not kept)."""

    def __init__(self, size: int):
        self.size = _check_size(size)

    @property
    def decode_size(self) -> int:
        return self.size

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.size == (self.size, self.size):
            return img
        return _bilinear(img, self.size, (0, 0, *img.size))

    def batch(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomResizedCrop(Transform):
    """ImageNet-style crop: a random area fraction in `scale` and aspect ratio in `ratio`, resized
    (bilinear) to size x size in one step: a box of the PIL image (10 tries, then the largest
    centred box within `ratio`), or for a batch a box clamped to the image, resampled."""

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

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = len(x)
        area = torch.empty(n).uniform_(*self.scale, generator=gen)
        log_ratio = torch.empty(n).uniform_(*(math.log(r) for r in self.ratio), generator=gen)
        ratio = log_ratio.exp()
        sw = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
        sh = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sw)
        cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sh)
        return _affine_crop(x, self.size, sw, sh, cx, cy)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class ResizeCenterCrop(Transform):
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

    def batch(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        # Images in memory are square already: the centred box is crop_fraction of each side.
        n = len(x)
        fraction, centre = torch.full((n,), self.crop_fraction), torch.zeros(n)
        return _affine_crop(x, self.size, fraction, fraction, centre, centre)

    def __repr__(self) -> str:
        return f"ResizeCenterCrop({self.size}, crop_fraction={self.crop_fraction})"


class PILToTensor(Transform):
    """PIL image -> uint8 C x H x W tensor (values kept in 0..255); a batch is a tensor already."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def batch(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "PILToTensor()"


class PadRandomCrop(Transform):
    """CIFAR-style crop: zero-pad a C x H x W tensor by `padding` on every side, then take a
    random size x size window."""

    def __init__(self, size: int, padding: int = 4):
        self.size = _check_size(size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding={padding!r} is not valid: expected an integer >= 0")
        self.padding = padding

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if x.shape[-2] + 2 * p < self.size or x.shape[-1] + 2 * p < self.size:
            raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} image padded by {p} is smaller than "
                             f"the {self.size}x{self.size} crop")
        return F.pad(x, (p, p, p, p)) if p else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PadRandomCrop takes a C x H x W tensor, not {type(x).__name__}")
        x = self._padded(x)
        top, left = _randint(0, x.shape[-2] - self.size), _randint(0, x.shape[-1] - self.size)
        return x[..., top:top + self.size, left:left + self.size]

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self._padded(x)
        (n, c, height, width), s = x.shape, self.size
        top = torch.randint(0, height - s + 1, (n,), generator=gen)
        left = torch.randint(0, width - s + 1, (n,), generator=gen)
        rows = (top[:, None] + torch.arange(s))[:, None, :, None].expand(n, c, s, width)
        x = x.gather(2, rows)
        cols = (left[:, None] + torch.arange(s))[:, None, None, :].expand(n, c, s, s)
        return x.gather(3, cols)

    def __repr__(self) -> str:
        return f"PadRandomCrop({self.size}, padding={self.padding})"


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability p (a PIL image, a ... x H x W tensor, or per image of a batch)."""

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

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = torch.rand(len(x), generator=gen) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize(Transform):
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
        self._std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.mean) not in (1, x.shape[-3]):
            raise ValueError(f"Normalize has {len(self.mean)} channel values for an image with "
                             f"{x.shape[-3]} channels")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return (x - self._mean) / self._std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose(Transform):
    """Apply transforms in order; a uint8 batch is scaled to [0, 1] floats before its first step."""

    def __init__(self, transforms: Iterable[Transform]):
        self.transforms = tuple(transforms)

    @property
    def decode_size(self) -> int | None:
        # Only the first transform sees the decoded image.
        return getattr(self.transforms[0], "decode_size", None) if self.transforms else None

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        for t in self.transforms:
            x = t.batch(x, gen)
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
    """The transform of recipe `kind` (see `Augment`): image -> normalized float32 tensor."""
    try:
        kind = Augment(kind)
    except ValueError:
        raise DataError(f"unknown augmentation {kind!r}; valid: {', '.join(a.value for a in Augment)}") \
            from None
    _check_size(size)
    first = ResizeCenterCrop(size) if kind is Augment.IMAGENET else Resize(size)
    steps: list[Transform] = [first, PILToTensor()]
    if train:
        if kind is Augment.IMAGENET:
            steps[0] = RandomResizedCrop(size)
        if kind is Augment.CIFAR:
            steps.append(PadRandomCrop(size, padding=4))
        if kind is not Augment.NONE:
            steps.append(RandomHorizontalFlip())
    return Compose([*steps, Normalize(mean, std)])
