"""Rank agreement (`nas.common.stats`) on inputs whose answers are worked out by hand."""

import math

import pytest

from nas.common.stats import bootstrap, kendall, spearman

RANKS = [1, 2, 3, 4, 5]
TWO_SWAPS = [1, 3, 2, 5, 4]  # 8 of the 10 pairs in order, 2 swapped


def test_kendall_counts_pairs_in_order_minus_pairs_swapped():
    assert kendall(RANKS, RANKS) == pytest.approx(1.0)
    assert kendall(RANKS, RANKS[::-1]) == pytest.approx(-1.0)
    assert kendall(RANKS, TWO_SWAPS) == pytest.approx((8 - 2) / 10)


def test_kendall_is_tau_b_with_ties():
    # 5 of 6 pairs in order, one tied in the first list: 5 / sqrt(5 * 6), not tau-a's 5 / 6
    assert kendall([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_spearman_is_one_minus_the_scaled_squared_rank_differences():
    # rank differences 0, 1, 1, 1, 1: 1 - 6 * 4 / (5 * (25 - 1))
    assert spearman(RANKS, TWO_SWAPS) == pytest.approx(0.8)


def test_a_constant_list_has_no_rank_agreement():
    assert math.isnan(kendall([3, 3, 3], [1, 2, 3]))
    assert math.isnan(spearman([1, 2, 3], [7, 7, 7]))
    assert all(math.isnan(v) for v in bootstrap([3, 3, 3], [1, 2, 3]))


def test_bootstrap_of_a_perfect_ranking_is_one_at_both_ends():
    # Every resample with two distinct items is in perfect order; those of one item are left out.
    assert bootstrap(RANKS, [10, 20, 30, 40, 50]) == pytest.approx((1.0, 1.0))
    assert bootstrap(RANKS, [5, 4, 3, 2, 1]) == pytest.approx((-1.0, -1.0))


def test_bootstrap_repeats_for_a_seed_and_narrows_with_the_level():
    wide = bootstrap(RANKS, TWO_SWAPS, seed=3)
    assert bootstrap(RANKS, TWO_SWAPS, seed=3) == wide
    narrow = bootstrap(RANKS, TWO_SWAPS, seed=3, level=0.5)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]
    assert wide[0] < wide[1]
