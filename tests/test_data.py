"""The data modules: splits, statistics, loaders and settings of every dataset, in memory or streamed."""

import pickle
import time

import numpy as np
import pytest
import torch

from nas.cli.search import precheck
from nas.common.config import ConfigError, DataConfig
from nas.search.run import run_search
from nas.training import data, images
from nas.training.data import DataError, datamodule_for, make_datamodule
from nas.training.transforms import ResizeCenterCrop
from tests.imagedata import cifar_files, flat_folder, jpeg_folder, mixed_folder
from tests.tiny import tiny


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a = make_datamodule("digits", resolution=16, seed=3)
    b = make_datamodule("digits", resolution=16, seed=3)
    c = make_datamodule("digits", resolution=16, seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.split("val").images, b.split("val").images)
    assert not torch.equal(a.split("val").images, c.split("val").images)
    sizes = [len(a.split(s).labels) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270
    assert a.split("train").images.shape[1:] == (1, 16, 16)
    assert a.num_classes == 10 and a.in_channels == 1
    x, y = next(iter(a.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 16, 16) and len(y) == len(x)


def test_digits_batches_are_the_ones_searches_were_measured_on():
    """Split, order per epoch and augmentation of a seed, as recorded before the data code was
    merged into one pipeline (a change here changes every seeded figure)."""
    dm = make_datamodule("digits", resolution=16, seed=3, augment="cifar", subset=0.5, batch_size=64)
    dm.setup()
    assert dm.split("val").labels[:10].tolist() == [3, 6, 8, 6, 7, 0, 8, 5, 8, 5]
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        epochs.append(list(loader))
    assert [len(y) for _, y in epochs[0]] == [64] * 9 + [52]
    x, y = epochs[0][0]
    assert y[:12].tolist() == [3, 0, 6, 6, 3, 7, 2, 9, 6, 3, 4, 8]
    # float32 sums differ in the last bits with torch's thread count (another test may have set it)
    assert float(x.double().sum()) == pytest.approx(-2503.1217, rel=1e-5)
    x, y = epochs[1][0]
    assert y[:12].tolist() == [5, 7, 4, 5, 7, 5, 8, 4, 6, 9, 8, 7]
    assert float(x.double().sum()) == pytest.approx(-2341.2189, rel=1e-5)


def test_subset_shrinks_only_the_training_split():
    full = make_datamodule("digits", resolution=8)
    part = make_datamodule("digits", resolution=8, subset=0.25)
    full.setup()
    part.setup()
    assert len(part.split("train").labels) == int(len(full.split("train").labels) * 0.25)
    assert torch.equal(part.split("val").labels, full.split("val").labels)


def test_split_indices_hold_out_validation_then_test():
    parts = data.split_indices(torch.arange(20), 0.15, 0.1)
    assert parts["val"].tolist() == [0, 1, 2] and parts["test"].tolist() == [3, 4]
    assert parts["train"].tolist() == list(range(5, 20))
    assert "test" not in data.split_indices(np.arange(20), 0.15, 0.1, test=False)
    assert len(data.split_indices(np.arange(3), 0.01, 0.01)["val"]) == 1  # never empty
    assert data.kept(10, 0.25) == 2 and data.kept(10, 0.01) == 1 and data.kept(10, 1.0) == 10


def test_sample_batch_is_the_first_training_images_normalized():
    dm = make_datamodule("digits", resolution=8, augment="cifar")
    dm.setup()
    x, y = dm.sample_batch(5)
    train = dm.split("train")
    mean, std = torch.tensor(dm.mean).view(-1, 1, 1), torch.tensor(dm.std).view(-1, 1, 1)
    assert torch.equal(x, (train.images[:5].float() / 255.0 - mean) / std)
    assert torch.equal(y, train.labels[:5])


def test_cifar10_batch_files_are_read(tmp_path):
    root = cifar_files(tmp_path / "cifar")
    dm = make_datamodule("cifar10", root=str(root), resolution=32, val_fraction=0.1)
    dm.setup()
    assert len(dm.split("test").labels) == 20  # the file's own test batch
    assert len(dm.split("train").labels) + len(dm.split("val").labels) == 100
    assert dm.in_channels == 3 and dm.split("train").images.shape[1:] == (3, 32, 32)
    with open(root / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    first = torch.from_numpy(np.asarray(raw[b"data"][0]).reshape(3, 32, 32))
    assert torch.equal(dm.split("test").images[0], first)


def test_cifar10_resized_when_asked(tmp_path):
    dm = make_datamodule("cifar10", root=str(cifar_files(tmp_path / "c")), resolution=16)
    dm.setup()
    assert dm.split("val").images.shape[1:] == (3, 16, 16)


def test_cifar10_missing_or_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        make_datamodule("cifar10", root=str(tmp_path / "nope")).check()
    root = cifar_files(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks CIFAR-10 batch files: data_batch_3"):
        make_datamodule("cifar10", root=str(root)).check()
    root = cifar_files(tmp_path / "d")
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="is not a CIFAR-10 python batch file"):
        make_datamodule("cifar10", root=str(root)).check()


def test_cifar10_labels_outside_its_ten_classes_are_refused(tmp_path):
    root = cifar_files(tmp_path / "c")
    with open(root / "data_batch_2", "rb") as fh:
        batch = pickle.load(fh)
    batch[b"labels"] = [42] * len(batch[b"labels"])
    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump(batch, fh)
    with pytest.raises(DataError, match="holds label 42: CIFAR-10 labels are 0 to 9"):
        make_datamodule("cifar10", root=str(root)).check()


# -- image folders -----------------------------------------------------------------------------


def test_image_folder_tree_is_read_with_one_class_per_folder(tmp_path):
    root = flat_folder(tmp_path / "imgs")
    dm = make_datamodule("imagefolder", root=str(root), resolution=12, val_fraction=0.2,
                         test_fraction=0.2)
    dm.setup()
    assert dm.classes == ["cat", "dog", "fox"] and dm.num_classes == 3 and not dm.streamed
    total = sum(len(dm.split(s).labels) for s in ("train", "val", "test"))
    assert total == 18 and dm.split("train").images.shape[1:] == (3, 12, 12)
    gray = make_datamodule("imagefolder", root=str(root), resolution=12, grayscale=True)
    gray.setup()
    assert gray.in_channels == 1


def test_a_folder_in_memory_skips_what_the_scanner_skips(tmp_path):
    dm = make_datamodule("imagefolder", root=str(mixed_folder(tmp_path / "f")), resolution=8, in_memory=True)
    dm.setup()  # hidden files and folders, text files: not images, not classes
    assert dm.classes == ["cat", "dog", "fox"]
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) == 18


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_datamodule("imagefolder", root=str(tmp_path / "missing")).check()
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="expected at least 2"):
        make_datamodule("imagefolder", root=str(one)).check()
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        make_datamodule("imagefolder", root=str(empty)).check()
    broken = flat_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"not a png")
    dm = make_datamodule("imagefolder", root=str(broken), resolution=8)
    with pytest.raises(DataError, match="cannot decode image"):
        dm.setup()


@pytest.mark.parametrize("in_memory", [True, False])
def test_image_folder_uses_given_statistics_of_the_right_length(tmp_path, in_memory):
    root = flat_folder(tmp_path / "f")
    dm = make_datamodule("imagefolder", root=str(root), resolution=8, in_memory=in_memory,
                         mean=[0.5, 0.25, 0.125], std=[0.5, 0.5, 0.5])
    dm.setup()
    assert dm.mean == (0.5, 0.25, 0.125) and dm.std == (0.5,) * 3
    short = make_datamodule("imagefolder", root=str(root), resolution=8, in_memory=in_memory, mean=[0.5])
    with pytest.raises(DataError, match=r"data.mean=\[0.5\] is not valid .* needs 3 value"):
        short.setup()


def test_in_memory_and_streamed_folders_give_the_same_splits_and_images(tmp_path):
    root = flat_folder(tmp_path / "f", per_class=8)
    common = {"root": str(root), "resolution": 8, "seed": 2, "mean": [0.5] * 3, "std": [0.25] * 3}
    held = make_datamodule("imagefolder", in_memory=True, **common)
    streamed = make_datamodule("imagefolder", in_memory=False, **common)
    held.setup()
    streamed.setup()
    assert streamed.streamed and not held.streamed
    for name in ("train", "val", "test"):
        assert held.split(name).labels.tolist() == streamed.split(name).labels.tolist()
    # decoded once up front or per batch, through the same transforms (PNGs: no reduced-scale decoding)
    assert torch.equal(held.sample_batch(6)[0], streamed.sample_batch(6)[0])
    assert torch.equal(next(iter(held.val_dataloader()))[0], next(iter(streamed.val_dataloader()))[0])


def test_auto_streams_a_folder_past_the_in_memory_limit(tmp_path, monkeypatch):
    root = flat_folder(tmp_path / "f")
    monkeypatch.setattr(data, "IN_MEMORY_MAX", 18)
    small = make_datamodule("imagefolder", root=str(root), resolution=8)
    small.check()
    assert not small.streamed
    monkeypatch.setattr(data, "IN_MEMORY_MAX", 17)
    big = make_datamodule("imagefolder", root=str(root), resolution=8)
    big.check()
    assert big.streamed and big.loader_settings()["num_workers"] == 2


def test_in_memory_imagenet_evaluation_takes_the_centre_crop(tmp_path):
    dm = make_datamodule("imagefolder", root=str(flat_folder(tmp_path / "f")), resolution=8,
                         augment="imagenet", in_memory=True)
    dm.setup()
    x, _ = next(iter(dm.val_dataloader()))
    mean, std = torch.tensor(dm.mean).view(-1, 1, 1), torch.tensor(dm.std).view(-1, 1, 1)
    crop = ResizeCenterCrop(8).batch(dm.split("val").images[:len(x)].float() / 255.0)
    assert torch.allclose(x, (crop - mean) / std, atol=1e-6)


@pytest.mark.parametrize("augment", ["none", "flip", "cifar", "imagenet"])
def test_a_streamed_image_folder_gives_normalized_batches(tmp_path, augment):
    root = jpeg_folder(tmp_path / "imgs", 3, 12)
    dm = make_datamodule("imagefolder", in_memory=False, root=str(root), resolution=16, batch_size=8,
                         augment=augment, num_workers=0, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all() and dm.num_classes == 3
    if augment in ("none", "flip"):  # no padding or crops: normalized by the data's own statistics
        assert abs(float(x.mean())) < 0.5
    xs, ys = dm.sample_batch(5)
    assert xs.shape == (5, 3, 16, 16) and len(ys) == 5


def test_streaming_start_up_does_not_decode_the_folder(tmp_path, monkeypatch):
    """The first batch needs the index and one batch of decodes, not the whole folder."""
    root = jpeg_folder(tmp_path / "imgs", 4, 100, size=16)
    decoded = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    start = time.perf_counter()
    dm = make_datamodule("imagefolder", in_memory=False, root=str(root), resolution=16, batch_size=16,
                         num_workers=0, mean=[0.5] * 3, std=[0.25] * 3)
    dm.setup()
    next(iter(dm.train_dataloader()))
    assert len(decoded) == 16  # one batch: no image was decoded up front
    assert time.perf_counter() - start < 10


# -- settings ----------------------------------------------------------------------------------


def test_unknown_dataset_and_missing_root():
    valid = "digits, cluttered_digits, cifar10, imagefolder"
    with pytest.raises(DataError, match=f"unknown data 'mnist'; valid: {valid}"):
        make_datamodule("mnist")
    with pytest.raises(DataError, match=r"needs data\.root"):
        make_datamodule("cifar10")


def test_settings_of_other_datasets_are_left_out():
    dm = make_datamodule("digits", root="ignored", num_workers=4, grayscale=True, canvas=40)
    assert type(dm).__name__ == "DigitsDataModule"
    folder = datamodule_for(DataConfig(name="imagefolder", root="somewhere", num_workers=3), 16, 8)
    assert folder.workers["num_workers"] == 3 and not hasattr(folder, "settings")
    clutter = datamodule_for(DataConfig(name="cluttered_digits", canvas=40), 16, 8)
    assert clutter.settings.canvas == 40


def test_a_key_of_one_dataset_is_refused_for_another():
    for key, value in (("grayscale", True), ("num_workers", 3), ("canvas", 40)):
        with pytest.raises(ConfigError, match=f"data.{key} is a setting of data=.* only"):
            DataConfig(name="cifar10", root="x", **{key: value}).validate()


# -- searches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cifar10", "imagefolder"])
def test_search_runs_on_file_datasets(tmp_path, kind):
    root = cifar_files(tmp_path / "data") if kind == "cifar10" else flat_folder(tmp_path / "data")
    # all the training images of these small files, none over the budget
    cfg = precheck(tiny("+budget.mflops=1000", f"data={kind}", f"data.root={root}", "n_trials=1",
                        "data.val_fraction=0.2", "data.test_fraction=0.2", drop=["proxy.subset"]))
    summary = run_search(cfg, tmp_path / "run")
    assert summary["trained"] == 1 and 0 <= summary["best_accuracy"] <= 1


def test_malformed_dataset_path_is_caught_before_any_trial(tmp_path):
    from nas.errors import UserError

    root = cifar_files(tmp_path / "data")
    (root / "data_batch_1").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="not a CIFAR-10 python batch file"):
        precheck(["+space=mnv1", "+budget.mflops=1000", "data=cifar10", f"data.root={root}"])
