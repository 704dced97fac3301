"""The one set of transforms: each step one image at a time (files) and a batch at a time (memory)."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nas.training.folders import DataError
from nas.training.transforms import (
    Compose,
    Normalize,
    PadRandomCrop,
    PILToTensor,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeCenterCrop,
    build_transform,
)
from tests.imagedata import noise

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
KINDS = ["none", "flip", "cifar", "imagenet"]


def uint8_batch(n=6, c=3, size=12, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


# -- recipes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_transforms_are_deterministic(kind):
    img = noise(30, 22, 0)
    t = build_transform(kind, False, 16, MEAN, STD)
    torch.manual_seed(1)
    a = t(img)
    torch.manual_seed(2)
    assert torch.equal(a, t(img))


def test_training_transforms_vary_but_repeat_under_the_same_seed():
    img = noise(30, 22, 0)
    t = build_transform("imagenet", True, 16, MEAN, STD)
    torch.manual_seed(1)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(1)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])


def test_unknown_recipe_is_a_data_error_listing_the_valid_ones():
    with pytest.raises(DataError, match=r"unknown augmentation 'autoaugment'; valid: none, flip, cifar, "
                                        r"imagenet"):
        build_transform("autoaugment", True, 16, MEAN, STD)


def test_recipes_are_built_from_the_documented_steps():
    def names(kind, train):
        return [type(t).__name__ for t in build_transform(kind, train, 16, MEAN, STD).transforms]

    assert names("imagenet", True) == ["RandomResizedCrop", "PILToTensor", "RandomHorizontalFlip",
                                       "Normalize"]
    assert names("imagenet", False) == ["ResizeCenterCrop", "PILToTensor", "Normalize"]
    assert names("cifar", True) == ["Resize", "PILToTensor", "PadRandomCrop", "RandomHorizontalFlip",
                                    "Normalize"]
    assert names("cifar", False) == names("flip", False) == names("none", True) == ["Resize", "PILToTensor",
                                                                                    "Normalize"]
    assert names("flip", True) == ["Resize", "PILToTensor", "RandomHorizontalFlip", "Normalize"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [True, False])
def test_every_recipe_batch_form_gives_normalized_batches_of_the_size(kind, train):
    x = uint8_batch()
    out = build_transform(kind, train, 12, MEAN, STD).batch(x, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 12, 12) and out.dtype == torch.float32
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (0..1 - 0.5) / 0.25
    assert torch.equal(x, uint8_batch())  # the batch held in memory is left as it was


def test_batch_form_repeats_for_the_generator_seed_and_varies_along_its_stream():
    t = build_transform("imagenet", True, 12, MEAN, STD)
    gen = torch.Generator().manual_seed(3)
    first, second = t.batch(uint8_batch(), gen), t.batch(uint8_batch(), gen)
    assert not torch.equal(first, second)
    assert torch.equal(first, t.batch(uint8_batch(), torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("kind", ["flip", "cifar", "imagenet"])
def test_batch_augmentations_keep_shape_and_change_pixels(kind):
    x = torch.rand(16, 3, 12, 12)
    t = [s for s in build_transform(kind, True, 12, MEAN, STD).transforms if type(s).__name__ != "Normalize"]
    out = Compose(t).batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)


def test_the_two_forms_give_the_same_numbers_for_exact_steps():
    img = noise(12, 12, 0)
    t = Compose([Resize(12), PILToTensor(), RandomHorizontalFlip(p=1.0), Normalize(MEAN, STD)])
    batch = PILToTensor()(img)[None]
    assert torch.equal(t(img), t.batch(batch, torch.Generator())[0])


def test_transforms_pickle_with_their_settings():
    t = build_transform("cifar", True, 16, MEAN, STD)
    copy = pickle.loads(pickle.dumps(t))
    assert isinstance(copy, Compose) and repr(copy) == repr(t)


# -- crops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(100, 80), (5, 100), (100, 5), (7, 7)])
def test_random_resized_crop_gives_exactly_size_and_boxes_inside_the_image(size):
    crop = RandomResizedCrop(12)
    img = noise(*size, seed=0)
    for _ in range(50):
        left, top, right, bottom = crop.crop_box(*size)
        assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
        assert crop(img).size == (12, 12)


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    crop = RandomResizedCrop(12, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    for _ in range(200):
        left, top, right, bottom = crop.crop_box(200, 160)
        w, h = right - left, bottom - top
        assert 0.25 - 0.02 <= w * h / (200 * 160) <= 0.5 + 0.02
        assert 0.5 - 0.02 <= w / h <= 2.0 + 0.02


def test_random_resized_crop_of_a_batch_at_full_scale_is_the_batch():
    x = torch.rand(4, 3, 10, 10)
    out = RandomResizedCrop(10, scale=(1.0, 1.0), ratio=(1.0, 1.0)).batch(x, torch.Generator())
    assert torch.allclose(out, x, atol=1e-5)


def test_resize_center_crop_keeps_the_centre():
    arr = np.asarray(noise(40, 20, 0))
    # at scale 1 the crop is exactly the central 20 x 20 square
    assert np.array_equal(np.asarray(ResizeCenterCrop(20, crop_fraction=1.0)(Image.fromarray(arr))),
                          arr[:, 10:30])
    green = np.zeros((20, 40, 3), dtype=np.uint8)
    green[:, 10:30] = (0, 255, 0)
    # crop_fraction 0.5 keeps the central 10 x 10 (shrunk to 4 x 4): green, nothing of the black sides
    out = np.asarray(ResizeCenterCrop(4, crop_fraction=0.5)(Image.fromarray(green)))
    assert out.shape == (4, 4, 3) and (out == (0, 255, 0)).all()


def test_resize_center_crop_of_a_batch_keeps_the_centre():
    x = torch.zeros(2, 3, 16, 16)
    x[:, 1, 4:12, 4:12] = 1.0  # a green centre half
    out = ResizeCenterCrop(4, crop_fraction=0.5).batch(x)
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out[:, 1], torch.ones(2, 4, 4)) and not out[:, [0, 2]].any()


def test_pad_random_crop_preserves_size_and_shifts_by_at_most_the_padding():
    x = torch.full((3, 16, 16), 255, dtype=torch.uint8)
    crop = PadRandomCrop(16, padding=4)
    shifted = False
    for _ in range(30):
        y = crop(x)
        assert y.shape == (3, 16, 16) and y.dtype == torch.uint8
        zero_rows = (y[0] == 0).all(dim=1).sum().item()
        zero_cols = (y[0] == 0).all(dim=0).sum().item()
        assert zero_rows <= 4 and zero_cols <= 4
        assert (y[0] == 255).sum().item() == (16 - zero_rows) * (16 - zero_cols)
        shifted |= zero_rows + zero_cols > 0
    assert shifted
    assert torch.equal(PadRandomCrop(16, padding=0)(x), x)


def test_pad_random_crop_of_a_batch_takes_each_image_window_the_generator_draws():
    x = torch.rand(8, 3, 10, 10)
    out = PadRandomCrop(10, padding=3).batch(x, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    top, left = torch.randint(0, 7, (8,), generator=gen), torch.randint(0, 7, (8,), generator=gen)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(8):
        assert torch.equal(out[i], padded[i, :, top[i]:top[i] + 10, left[i]:left[i] + 10])


# -- flip, tensor, normalization ---------------------------------------------------------------


def test_horizontal_flip_mirrors_pil_images_and_tensors():
    img = noise(6, 4, 0)
    x = PILToTensor()(img)
    assert torch.equal(PILToTensor()(RandomHorizontalFlip(p=1.0)(img)), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert RandomHorizontalFlip(p=0.0)(img) is img


def test_horizontal_flip_of_a_batch_mirrors_the_images_the_generator_picks():
    x = torch.rand(32, 1, 3, 5)
    out = RandomHorizontalFlip(p=0.5).batch(x, torch.Generator().manual_seed(2))
    picked = torch.rand(32, generator=torch.Generator().manual_seed(2)) < 0.5
    assert 0 < picked.sum() < 32
    assert torch.equal(out[picked], x[picked].flip(-1)) and torch.equal(out[~picked], x[~picked])


def test_pil_to_tensor_keeps_uint8_values_in_chw_order():
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # H=2, W=3, C=3
    x = PILToTensor()(Image.fromarray(arr))
    assert x.shape == (3, 2, 3) and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1))


def test_normalize_uses_the_given_mean_and_std():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    y = Normalize((0.0, 0.2, 0.5), (1.0, 0.5, 0.25))(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y[:, 0, 0], torch.tensor([0.0, 0.0, 2.0]))
    # the recipes normalize with the same numbers: a solid (51, 102, 204) image
    out = build_transform("none", False, 4, (0.2, 0.4, 0.6), (0.1, 0.2, 0.4))(Image.new("RGB", (4, 4),
                                                                                       (51, 102, 204)))
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.5]).view(3, 1, 1).expand(3, 4, 4), atol=1e-6)


def test_normalize_rejects_a_channel_mismatch():
    with pytest.raises(ValueError, match="3 channel values for an image with 1 channels"):
        Normalize(MEAN, STD)(torch.zeros(1, 4, 4, dtype=torch.uint8))


def test_resize_of_a_batch_at_its_size_is_the_batch_itself():
    x = torch.rand(2, 3, 8, 8)
    assert Resize(8).batch(x) is x and Resize(4).batch(x).shape == (2, 3, 4, 4)
