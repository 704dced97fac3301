"""Pareto fronts, and the pruning rule for multi-objective studies that Optuna's pruners
cannot serve (multi-objective trials cannot `report` or `should_prune`)."""

from __future__ import annotations

import statistics
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from nas.search.status import Status

__all__ = ["pareto_front", "pareto_verdict"]


def pareto_front(points: list[dict[str, Any]], cost: str = "mflops") -> list[dict[str, Any]]:
    """Points no other point beats on both accuracy (higher) and `cost` (lower), cheapest first."""
    front = []
    best = float("-inf")
    points = [p for p in points if p.get(cost) is not None]
    for p in sorted(points, key=lambda p: (p[cost], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def pareto_verdict(trials: list[FrozenTrial], epoch: int, value: float, cost_value: float,
                   n_startup_trials: int, n_warmup_steps: int) -> bool:
    """Whether a pareto trial at `epoch` with accuracy `value` and cost `cost_value` should stop.

    A trial is stopped when its accuracy at this epoch is below the median, at the same
    epoch, of the trained trials that cost no more than it does: such a trial is on its way
    to being dominated. Comparing only with cheaper trials keeps the cheap end of the front
    from being pruned for being less accurate than expensive networks.
    """
    if epoch < n_warmup_steps:
        return False
    peers = []
    for t in trials:
        curve = t.user_attrs.get("curve") or []
        if (t.state == TrialState.COMPLETE and t.user_attrs.get("status") == Status.TRAINED
                and len(curve) > epoch and t.values and t.values[1] <= cost_value):
            peers.append(curve[epoch])
    if len(peers) < max(1, n_startup_trials):
        return False
    return value < statistics.median(peers)
