import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nas.cli.search import precheck
from nas.search.run import run_search
from nas.training.data import DataError, make_datamodule
from tests.tiny import tiny


def write_cifar(root, n_per_batch=20, seed=0):
    """Small files in CIFAR-10's python format: dicts with b'data' (N x 3072 uint8) and b'labels'."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch).tolist()
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        # Make the classes learnable: the red channel's mean encodes the label.
        for i, y in enumerate(labels):
            data[i, :1024] = y * 25
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
    return root


def write_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=(20, 14)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((size[1], size[0], 3), c * 80 + i, dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


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


def test_subset_shrinks_only_the_training_split():
    full = make_datamodule("digits", resolution=8)
    part = make_datamodule("digits", resolution=8, subset=0.25)
    full.setup()
    part.setup()
    assert len(part.split("train").labels) == int(len(full.split("train").labels) * 0.25)
    assert torch.equal(part.split("val").labels, full.split("val").labels)


def test_cifar10_batch_files_are_read(tmp_path):
    root = write_cifar(tmp_path / "cifar")
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
    dm = make_datamodule("cifar10", root=str(write_cifar(tmp_path / "c")), resolution=16)
    dm.setup()
    assert dm.split("val").images.shape[1:] == (3, 16, 16)


def test_cifar10_missing_or_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        make_datamodule("cifar10", root=str(tmp_path / "nope")).check()
    root = write_cifar(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks CIFAR-10 batch files: data_batch_3"):
        make_datamodule("cifar10", root=str(root)).check()
    root = write_cifar(tmp_path / "d")
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="is not a CIFAR-10 python batch file"):
        make_datamodule("cifar10", root=str(root)).check()


def test_image_folder_tree_is_read_with_one_class_per_folder(tmp_path):
    root = write_folder(tmp_path / "imgs")
    dm = make_datamodule("imagefolder", root=str(root), resolution=12, val_fraction=0.2,
                         test_fraction=0.2)
    dm.setup()
    assert dm.classes == ["cat", "dog", "fox"] and dm.num_classes == 3
    total = sum(len(dm.split(s).labels) for s in ("train", "val", "test"))
    assert total == 18 and dm.split("train").images.shape[1:] == (3, 12, 12)
    gray = make_datamodule("imagefolder", root=str(root), resolution=12, grayscale=True)
    gray.setup()
    assert gray.in_channels == 1


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
    broken = write_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"not a png")
    dm = make_datamodule("imagefolder", root=str(broken), resolution=8)
    with pytest.raises(DataError, match="cannot read image"):
        dm.setup()


def test_unknown_dataset_and_missing_root():
    valid = "digits, cluttered_digits, cifar10, imagefolder"
    with pytest.raises(DataError, match=f"unknown data 'mnist'; valid: {valid}"):
        make_datamodule("mnist")
    with pytest.raises(DataError, match=r"needs data\.root"):
        make_datamodule("cifar10")


@pytest.mark.parametrize("kind", ["cifar10", "imagefolder"])
def test_search_runs_on_file_datasets(tmp_path, kind):
    root = write_cifar(tmp_path / "data") if kind == "cifar10" else write_folder(tmp_path / "data")
    # all the training images of these small files, none over the budget
    cfg = precheck(tiny("+budget.mflops=1000", f"data={kind}", f"data.root={root}", "n_trials=1",
                        "data.val_fraction=0.2", "data.test_fraction=0.2", drop=["proxy.subset"]))
    summary = run_search(cfg, tmp_path / "run")
    assert summary["trained"] == 1 and 0 <= summary["best_accuracy"] <= 1


def test_malformed_dataset_path_is_caught_before_any_trial(tmp_path):
    from nas.errors import UserError

    root = write_cifar(tmp_path / "data")
    (root / "data_batch_1").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="not a CIFAR-10 python batch file"):
        precheck(["+space=mnv1", "+budget.mflops=1000", "data=cifar10", f"data.root={root}"])


def test_cifar10_labels_outside_its_ten_classes_are_refused(tmp_path):
    root = write_cifar(tmp_path / "c")
    with open(root / "data_batch_2", "rb") as fh:
        batch = pickle.load(fh)
    batch[b"labels"] = [42] * len(batch[b"labels"])
    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump(batch, fh)
    with pytest.raises(DataError, match="holds label 42: CIFAR-10 labels are 0 to 9"):
        make_datamodule("cifar10", root=str(root)).check()


def test_image_folder_in_memory_uses_given_statistics_of_the_right_length(tmp_path):
    root = write_folder(tmp_path / "f")
    dm = make_datamodule("imagefolder", root=str(root), resolution=8, in_memory=True,
                         mean=[0.5, 0.25, 0.125], std=[0.5, 0.5, 0.5])
    dm.setup()
    assert dm.mean.flatten().tolist() == [0.5, 0.25, 0.125] and dm.std.flatten().tolist() == [0.5] * 3
    short = make_datamodule("imagefolder", root=str(root), resolution=8, in_memory=True, mean=[0.5])
    with pytest.raises(DataError, match=r"data.mean=\[0.5\] is not valid .* needs 3 value"):
        short.setup()
