import io
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from nas.training.images import (
    Compose,
    DataError,
    FolderDataset,
    Normalize,
    PadRandomCrop,
    PILToTensor,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeCenterCrop,
    build_transform,
    decode_image,
    estimate_mean_std,
    index_folder,
    make_loader,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZES = [(20, 24), (24, 20), (30, 30), (17, 40), (40, 17), (20, 24)]


def noise(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture
def folder(tmp_path):
    """3 classes x 6 images of assorted sizes and formats, plus files the index must skip."""
    root = tmp_path / "data"
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


def solid_folder(root, colour, per_class=3, mode="RGB"):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, (12 + i, 10), colour).save(root / name / f"{i}.png")
    return root


# -- index -------------------------------------------------------------------------------------


def test_index_finds_classes_and_counts_without_decoding(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("indexing opened an image")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    index = index_folder(folder)
    assert index.classes == ("cat", "dog", "fox")
    assert index.counts() == {"cat": 6, "dog": 6, "fox": 6}
    assert len(index) == 18
    assert ("fox/deep/5.JPEG", 2) in index.samples
    assert all(not p.endswith(".txt") and "/." not in p for p, _ in index.samples)


def test_index_lists_samples_by_class_then_path(folder):
    samples = index_folder(folder).samples
    assert [label for _, label in samples] == sorted(label for _, label in samples)
    assert samples[:6] == tuple((f"cat/{i}.{'jpg' if i % 2 else 'png'}", 0) for i in range(6))


def test_index_counts_a_class_of_one_image(tmp_path):
    for name, n in (("big", 3), ("single", 1)):
        (tmp_path / name).mkdir()
        for i in range(n):
            noise(8, 8, i).save(tmp_path / name / f"{i}.png")
    assert index_folder(tmp_path).counts() == {"big": 3, "single": 1}


def test_missing_root_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"'.*nowhere' does not exist"):
        index_folder(tmp_path / "nowhere")


def test_a_file_as_root_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"file\.png' is not a directory"):
        index_folder(tmp_path / "file.png")


def test_one_class_folder_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "only").mkdir()
    noise(8, 8, 0).save(tmp_path / "only" / "0.png")
    with pytest.raises(DataError, match=r"has 1 class folders \('only'\); expected at least 2"):
        index_folder(tmp_path)


def test_an_empty_class_folder_is_a_data_error_naming_it(folder):
    (folder / "empty").mkdir()
    (folder / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder 'empty' in .* holds no images; valid suffixes: "
                                        r".*\.jpeg"):
        index_folder(folder)


# -- dataset -----------------------------------------------------------------------------------


def test_dataset_converts_every_image_to_the_requested_mode(folder):
    index = index_folder(folder)
    rgb = FolderDataset.from_index(index, Resize(16))
    gray = FolderDataset.from_index(index, Resize(16), grayscale=True)
    for i in range(len(index)):
        x, y = rgb[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == index.samples[i][1]
        assert gray[i][0].shape == (1, 16, 16)


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


def test_an_undecodable_file_fails_through_a_worker_as_a_data_error(folder):
    (folder / "dog" / "bad.jpg").write_bytes(b"garbage")
    ds = FolderDataset.from_index(index_folder(folder), Resize(8))
    with pytest.raises(DataError, match=r"bad\.jpg"):
        list(make_loader(ds, batch_size=32, train=False, num_workers=1))


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
    assert FolderDataset(tmp_path, [("big.jpg", 0)], Resize(32), draft=False).decode_size is None


# -- transforms --------------------------------------------------------------------------------


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


@pytest.mark.parametrize("kind", ["none", "flip", "cifar", "imagenet"])
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


def test_horizontal_flip_mirrors_pil_images_and_tensors():
    img = noise(6, 4, 0)
    x = PILToTensor()(img)
    assert torch.equal(PILToTensor()(RandomHorizontalFlip(p=1.0)(img)), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert RandomHorizontalFlip(p=0.0)(img) is img


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


def test_transforms_pickle_with_their_settings():
    t = build_transform("cifar", True, 16, MEAN, STD)
    copy = pickle.loads(pickle.dumps(t))
    assert isinstance(copy, Compose) and repr(copy) == repr(t)


# -- statistics --------------------------------------------------------------------------------


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


# -- loader ------------------------------------------------------------------------------------


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_evaluation_batches_are_the_same_with_and_without_workers(folder):
    ds = FolderDataset.from_index(index_folder(folder), build_transform("imagenet", False, 16, MEAN, STD))
    serial = batches(make_loader(ds, batch_size=5, train=False, num_workers=0))
    parallel = batches(make_loader(ds, batch_size=5, train=False, num_workers=2))
    assert [len(y) for _, y in serial] == [5, 5, 5, 3]
    assert len(serial) == len(parallel)
    for (xa, ya), (xb, yb) in zip(serial, parallel, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert torch.cat([y for _, y in serial]).tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_training_order_changes_each_epoch_but_repeats_for_the_seed(folder):
    ds = FolderDataset.from_index(index_folder(folder), build_transform("none", True, 8, MEAN, STD))

    def two_epochs(seed):
        loader = make_loader(ds, batch_size=4, train=True, seed=seed, drop_last=False)
        return [torch.cat([x for x, _ in batches(loader)]) for _ in range(2)]

    first, second = two_epochs(0)
    assert not torch.equal(first, second)
    # the same images each epoch (no augmentation in "none"), in another order
    def key(t):
        return sorted(map(tuple, t.flatten(1).tolist()))

    assert key(first) == key(second)
    again = two_epochs(0)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)


def test_augmented_batches_repeat_for_the_seed_with_workers(folder):
    ds = FolderDataset.from_index(index_folder(folder), build_transform("imagenet", True, 8, MEAN, STD))
    runs = []
    for _ in range(2):
        torch.manual_seed(len(runs))  # the global seed must not matter: workers seed from the loader
        loader = make_loader(ds, batch_size=4, train=True, num_workers=2, seed=5)
        runs.append([batches(loader) for _ in range(2)])
    for (xa, ya), (xb, yb) in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [len(y) for _, y in runs[0][0]] == [4] * 4  # drop_last when training: 18 -> 16


def test_augmentations_differ_between_workers(tmp_path):
    img = noise(24, 20, 0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            img.save(tmp_path / name / f"{i}.png")  # four identical images
    ds = FolderDataset.from_index(index_folder(tmp_path), build_transform("imagenet", True, 8, MEAN, STD))
    # batch_size 1, in order: worker 0 makes items 0 and 2, worker 1 items 1 and 3
    x = [x for x, _ in make_loader(ds, batch_size=1, train=False, num_workers=2, seed=0)]
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[2], x[3])


def test_loader_keeps_persistent_workers_only_with_workers(folder):
    ds = FolderDataset.from_index(index_folder(folder), Resize(8))
    assert not make_loader(ds, 4, train=True, num_workers=0).persistent_workers
    assert make_loader(ds, 4, train=True, num_workers=1).persistent_workers
    assert not make_loader(ds, 4, train=True, num_workers=1, persistent_workers=False).persistent_workers
