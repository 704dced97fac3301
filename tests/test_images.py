"""The two datasets: images held in memory (batch transforms) and image files (decoded per item)."""

import io
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

from nas.training.folders import DataError, index_folder
from nas.training.images import FolderDataset, MemoryDataset, decode_image, estimate_mean_std
from nas.training.transforms import RandomResizedCrop, Resize, build_transform
from tests.imagedata import mixed_folder, noise, solid_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture
def folder(tmp_path):
    return mixed_folder(tmp_path / "data")


def held(n=10, size=8):
    images = torch.arange(n * 3 * size * size).remainder(251).to(torch.uint8).view(n, 3, size, size)
    return MemoryDataset(images, torch.arange(n) % 3)


# -- images in memory --------------------------------------------------------------------------


def test_memory_dataset_hands_out_a_whole_batch_through_its_transform():
    ds = held().with_transform(build_transform("none", False, 8, MEAN, STD))
    x, y = ds.__getitems__([4, 1, 7])
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == [1, 1, 1]
    expected = (held().images[[4, 1, 7]].float() / 255 - 0.5) / 0.25
    assert torch.equal(x, expected)


def test_memory_dataset_without_a_transform_gives_its_uint8_images():
    x, y = held().__getitems__([2])
    assert x.dtype == torch.uint8 and torch.equal(x[0], held().images[2]) and y.tolist() == [2]


def test_memory_dataset_resizes_to_the_size_once_with_rounding():
    images = torch.full((3, 1, 4, 4), 200, dtype=torch.uint8)
    ds = MemoryDataset(images, torch.zeros(3, dtype=torch.int64)).resized(8)
    assert ds.images.shape == (3, 1, 8, 8) and ds.images.dtype == torch.uint8 and (ds.images == 200).all()
    assert MemoryDataset(images, torch.zeros(3)).resized(4).images is images  # at its size: no copy


def test_memory_dataset_subset_keeps_the_order_given():
    ds = held().subset(torch.tensor([5, 0, 9]))
    assert ds.labels.tolist() == [2, 0, 0] and torch.equal(ds.images[0], held().images[5])
    assert len(held().subset(slice(0, 4))) == 4


def test_each_transformed_view_draws_from_a_fresh_generator():
    t = build_transform("cifar", True, 8, MEAN, STD)
    everything = list(range(10))
    view = held().with_transform(t, seed=1)
    first, second = view.__getitems__(everything)[0], view.__getitems__(everything)[0]
    assert not torch.equal(first, second)  # one view's stream moves on
    assert torch.equal(held().with_transform(t, seed=1).__getitems__(everything)[0], first)


def test_memory_statistics_are_exact():
    images = torch.zeros(4, 2, 2, 2, dtype=torch.uint8)
    images[:, 1] = 255
    images[:2, 0] = 51
    mean, std = MemoryDataset(images, torch.zeros(4)).statistics()
    assert np.allclose(mean, (0.1, 1.0)) and std[1] == 0.0
    assert abs(std[0] - float(torch.tensor([0.2] * 8 + [0.0] * 8).std())) < 1e-6


# -- image files -------------------------------------------------------------------------------


def test_dataset_converts_every_image_to_the_requested_mode(folder):
    index = index_folder(folder)
    rgb = FolderDataset.from_index(index, Resize(16))
    gray = FolderDataset.from_index(index, Resize(16), grayscale=True)
    for i in range(len(index)):
        x, y = rgb[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == index.samples[i][1]
        assert gray[i][0].shape == (1, 16, 16)
    assert rgb.channels == 3 and gray.channels == 1


def test_folder_dataset_hands_out_a_whole_batch(folder):
    ds = FolderDataset.from_index(index_folder(folder), Resize(8))
    x, y = ds.__getitems__([0, 17, 6])
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [0, 2, 1]
    assert torch.equal(x[1], ds[17][0])


def test_folder_subset_is_the_dataset_of_the_chosen_samples(folder):
    index = index_folder(folder)
    full = FolderDataset.from_index(index, Resize(8))
    picked = [11, 2, 17, 2]
    part = full.subset(torch.tensor(picked))
    direct = FolderDataset(index.root, [index.samples[i] for i in picked])
    assert [part.path(i) for i in range(4)] == [direct.path(i) for i in range(4)]
    assert part.labels.tolist() == direct.labels.tolist() and part.transform is None
    assert [full.subset(slice(3, 5)).path(i) for i in range(2)] == [full.path(3), full.path(4)]


def test_dataset_paths_survive_pickling_including_non_ascii_names(tmp_path):
    samples = [("a/ünï.png", 0), ("b/x y.png", 1), ("b/z.png", 1)]
    for rel, _ in samples:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        noise(9, 7, len(rel)).save(tmp_path / rel)
    ds = FolderDataset(tmp_path, samples, Resize(8))
    copy = pickle.loads(pickle.dumps(ds))
    assert [copy.path(i) for i in range(3)] == [str(tmp_path / rel) for rel, _ in samples]
    assert copy.labels.tolist() == [0, 1, 1]
    assert torch.equal(copy[0][0], ds[0][0])
    assert ds.subset([1]).path(0) == str(tmp_path / "b/x y.png")


@pytest.mark.parametrize("content", [b"not a jpeg at all", "truncated"])
def test_an_undecodable_file_is_a_data_error_naming_it(folder, content):
    if content == "truncated":
        buf = io.BytesIO()
        noise(64, 64, 0).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    (folder / "dog" / "bad.jpg").write_bytes(content)
    index = index_folder(folder)  # indexing does not look inside files
    ds = FolderDataset.from_index(index, Resize(8))
    bad = [rel for rel, _ in index.samples].index("dog/bad.jpg")
    with pytest.raises(DataError, match=r"cannot decode image '.*dog/bad\.jpg'"):
        ds[bad]


def test_jpeg_decodes_at_reduced_scale_only_down_to_the_size_asked(tmp_path):
    noise(400, 300, 0).save(tmp_path / "big.jpg")
    noise(400, 300, 0).save(tmp_path / "big.png")
    assert decode_image(str(tmp_path / "big.jpg"), min_size=40).size == (100, 75)  # 1/4, not 1/8
    assert decode_image(str(tmp_path / "big.jpg")).size == (400, 300)
    assert decode_image(str(tmp_path / "big.png"), min_size=40).size == (400, 300)


def test_dataset_decodes_no_smaller_than_its_first_transform_needs(tmp_path):
    noise(800, 600, 0).save(tmp_path / "big.jpg")
    ds = FolderDataset(tmp_path, [("big.jpg", 0)], build_transform("imagenet", True, 32, MEAN, STD))
    assert ds.decode_size == RandomResizedCrop(32).decode_size == 131
    assert decode_image(ds.path(0), min_size=ds.decode_size).size == (200, 150)
    assert ds.with_transform(build_transform("imagenet", False, 32, MEAN, STD)).decode_size == 37
    assert FolderDataset(tmp_path, [("big.jpg", 0)], Resize(32), draft=False).decode_size is None


@pytest.mark.parametrize("kind", ["none", "flip", "cifar", "imagenet"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("grayscale", [False, True])
def test_every_recipe_gives_normalized_float_images_of_the_size(folder, kind, train, grayscale):
    stats = (MEAN[:1], STD[:1]) if grayscale else (MEAN, STD)
    ds = FolderDataset.from_index(index_folder(folder), build_transform(kind, train, 16, *stats),
                                  grayscale=grayscale)
    for i in (0, 7, 17):
        x, _ = ds[i]
        assert x.shape == (1 if grayscale else 3, 16, 16) and x.dtype == torch.float32
        assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6  # (0..1 - 0.5) / 0.25


# -- statistics of files -----------------------------------------------------------------------


def test_mean_std_of_constant_colour_images_is_that_colour(tmp_path):
    index = index_folder(solid_folder(tmp_path, (51, 102, 204)))
    mean, std = estimate_mean_std(index, n=4, seed=0, size=8)
    assert np.allclose(mean, (0.2, 0.4, 0.8), atol=1e-6)
    assert max(std) < 1e-6


def test_mean_std_follows_the_dataset_mode(tmp_path):
    index = index_folder(solid_folder(tmp_path, 128, mode="L"))
    mean, std = estimate_mean_std(FolderDataset.from_index(index, grayscale=True), size=8)
    assert len(mean) == len(std) == 1 and abs(mean[0] - 128 / 255) < 1e-6


def test_mean_std_decodes_at_most_n_images_and_repeats_for_a_seed(folder, monkeypatch):
    index = index_folder(folder)
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    first = estimate_mean_std(index, n=5, seed=3, size=8)
    assert len(opened) == 5
    assert estimate_mean_std(index, n=5, seed=3, size=8) == first
    assert estimate_mean_std(index, n=5, seed=4, size=8) != first
