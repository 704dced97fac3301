"""The one loader builder: order per epoch, worker seeds, batch rules."""

import pytest
import torch

from nas.training.folders import DataError, index_folder
from nas.training.images import FolderDataset, MemoryDataset
from nas.training.loaders import EpochShuffle, make_loader
from nas.training.transforms import Resize, build_transform
from tests.imagedata import mixed_folder, noise

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture
def folder(tmp_path):
    return mixed_folder(tmp_path / "data")


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
        loader = make_loader(ds, batch_size=4, train=True, seed=seed)
        return [torch.cat([x for x, _ in batches(loader)]) for _ in range(2)]

    first, second = two_epochs(0)
    assert not torch.equal(first, second)

    def key(t):  # the same images each epoch (no augmentation in "none"), in another order
        return sorted(map(tuple, t.flatten(1).tolist()))

    assert key(first) == key(second)
    again = two_epochs(0)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)


def test_the_shuffle_depends_only_on_seed_and_epoch():
    data = range(50)
    a = EpochShuffle(data, seed=3)
    first, second = list(a), list(a)  # iterated again without set_epoch: the next epoch
    assert first != second and sorted(first) == list(data)
    resumed = EpochShuffle(data, seed=3)
    resumed.set_epoch(1)  # what Lightning does before each epoch
    assert list(resumed) == second
    resumed.set_epoch(0)
    assert list(resumed) == first
    assert list(EpochShuffle(data, seed=4)) != first


def test_augmented_batches_repeat_for_the_seed_with_workers(folder):
    ds = FolderDataset.from_index(index_folder(folder), build_transform("imagenet", True, 8, MEAN, STD))
    runs = []
    for _ in range(2):
        torch.manual_seed(len(runs))  # the global seed must not matter: workers seed from the loader
        loader = make_loader(ds, batch_size=4, train=True, num_workers=2, seed=5)
        runs.append([batches(loader) for _ in range(2)])
    for (xa, ya), (xb, yb) in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [len(y) for _, y in runs[0][0]] == [4, 4, 4, 4, 2]


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


def test_only_a_last_training_batch_of_one_is_dropped():
    ds = MemoryDataset(torch.zeros(9, 1, 2, 2, dtype=torch.uint8), torch.zeros(9, dtype=torch.int64))
    assert [len(y) for _, y in make_loader(ds, 4, train=True)] == [4, 4]  # 4 + 4 + 1
    assert [len(y) for _, y in make_loader(ds, 4, train=False)] == [4, 4, 1]
    assert [len(y) for _, y in make_loader(ds.subset(slice(0, 7)), 4, train=True)] == [4, 3]


def test_in_process_loaders_draw_their_unused_base_seed_from_the_global_rng():
    ds = MemoryDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64))
    torch.manual_seed(0)
    iter(make_loader(ds, 2, train=True))
    after_loader = torch.rand(1)
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(after_loader, torch.rand(1))  # as PyTorch does without a generator


def test_an_undecodable_file_fails_through_a_worker_as_a_data_error(folder):
    (folder / "dog" / "bad.jpg").write_bytes(b"garbage")
    ds = FolderDataset.from_index(index_folder(folder), Resize(8))
    with pytest.raises(DataError, match=r"bad\.jpg"):
        list(make_loader(ds, batch_size=32, train=False, num_workers=1))


def test_loader_keeps_persistent_workers_only_with_workers(folder):
    ds = FolderDataset.from_index(index_folder(folder), Resize(8))
    assert not make_loader(ds, 4, train=True, num_workers=0).persistent_workers
    assert make_loader(ds, 4, train=True, num_workers=1).persistent_workers
    assert not make_loader(ds, 4, train=True, num_workers=1, persistent_workers=False).persistent_workers


def test_loader_refuses_a_dataset_that_does_not_fetch_whole_batches():
    with pytest.raises(TypeError, match="does not fetch whole batches"):
        make_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 2, train=False)
