"""Rank agreement between two lists of scores: Kendall's tau and Spearman's rho, each with a
bootstrap interval over the items (the benchmarks and `nas.supernet validate` report these)."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence

__all__ = ["bootstrap", "kendall", "spearman"]


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (NaN when either list is constant)."""
    from scipy.stats import kendalltau

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: the NaN says it
        return float(kendalltau(a, b).statistic)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (NaN when either list is constant)."""
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def bootstrap(a: Sequence[float], b: Sequence[float], statistic: Callable = kendall, n: int = 1000,
              seed: int = 0, level: float = 0.9) -> tuple[float, float]:
    """The central `level` interval of `statistic` over `n` resamples of the item pairs (NaN
    resamples, e.g. all ties, are left out; (nan, nan) when every one is)."""
    rng = random.Random(seed)
    values = []
    for _ in range(n):
        idx = [rng.randrange(len(a)) for _ in a]
        v = statistic([a[i] for i in idx], [b[i] for i in idx])
        if not math.isnan(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    values.sort()
    tail = (1 - level) / 2
    return values[int(tail * (len(values) - 1))], values[int((1 - tail) * (len(values) - 1))]
