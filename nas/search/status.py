"""What happened to a trial, as stored in its `status` user attribute (a closed vocabulary)."""

from __future__ import annotations

from enum import Enum

__all__ = ["COUNTED", "Status"]


class Status(str, Enum):
    """A trial's outcome. A `str` subclass: it is stored, compared and printed as its value."""

    TRAINED = "trained"      # trained to the end (or scored, in a zero-cost study)
    PRUNED = "pruned"        # stopped early by the pruner
    STOPPED = "stopped"      # stopped because the study reached n_trials meanwhile
    REJECTED = "rejected"    # over a budget: never trained
    DUPLICATE = "duplicate"  # a genotype the study had already trained
    FILTERED = "filtered"    # below the zero-cost pre-filter's cut: never trained
    FAILED = "failed"        # raised an error, or its worker died

    def __str__(self) -> str:
        return self.value


COUNTED = (Status.TRAINED, Status.PRUNED)  # the statuses that count toward n_trials
