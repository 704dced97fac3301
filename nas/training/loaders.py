"""The one loader builder: the shuffle, the worker seeds and the batch rules every dataset shares."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["EpochShuffle", "make_loader", "seed_worker"]


class EpochShuffle(RandomSampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order.

    Lightning calls `set_epoch` before every epoch; iterated without it, the shuffle moves on to
    the next epoch by itself.
    """

    def __init__(self, data_source, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return super().__iter__()


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's global RNGs in a DataLoader worker from torch's worker seed
    (`base_seed + worker_id`), so that any library a transform uses differs per worker and epoch.

    PyTorch's worker loop seeds them too; doing it here keeps the guarantee ours and visible.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(np.random.SeedSequence([seed, worker_id]).generate_state(4))


def _whole_batch(batch):
    """`collate_fn` for datasets whose `__getitems__` returns the batch already."""
    return batch


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is not valid: expected an integer >= {low}")
    return value


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0,
                pin_memory: bool = False, persistent_workers: bool = True, seed: int = 0,
                drop_last: bool | None = None) -> DataLoader:
    """A DataLoader over a dataset that fetches whole batches (`__getitems__`, as
    `nas.training.images` datasets do).

    Training batches follow an `EpochShuffle` of `seed` (a new order each epoch, the same orders
    for the same seed and after a resume); evaluation batches are in order. `drop_last` defaults
    to dropping only a last training batch of one image, which batch norm cannot train on;
    `persistent_workers` applies only when num_workers > 0 and pinning only where CUDA is
    available.
    """
    _count("batch_size", batch_size, 1)
    _count("num_workers", num_workers, 0)
    if not callable(getattr(dataset, "__getitems__", None)):
        raise TypeError(f"{type(dataset).__name__} does not fetch whole batches (no __getitems__)")
    if drop_last is None:
        drop_last = train and len(dataset) % batch_size == 1
    # The generator only draws the workers' base seed. Without workers PyTorch still draws one,
    # from the global RNG when given no generator: in-process loaders have always done that, so a
    # seeded run's later draws (dropout masks) stay what they were.
    generator = torch.Generator().manual_seed(seed) if num_workers else None
    # A plain `batch_size` loader over the sampler: Lightning calls the shuffle's `set_epoch` and
    # under DDP swaps in a distributed sampler, one shard per rank.
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=EpochShuffle(dataset, seed) if train else SequentialSampler(dataset),
                      drop_last=drop_last, collate_fn=_whole_batch, num_workers=num_workers,
                      pin_memory=pin_memory and torch.cuda.is_available(),
                      persistent_workers=persistent_workers and num_workers > 0,
                      worker_init_fn=seed_worker if num_workers else None, generator=generator)
