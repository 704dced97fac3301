"""The search spaces shipped with nas; each module holds `SPACE` and its reference genotype."""

from __future__ import annotations

import importlib

from nas.arch.space import SearchSpace
from nas.errors import UserError

NAMES = ("mnv2", "xception", "mnv1")


class UnknownSpaceError(UserError):
    """A search space name that does not exist."""


def get_space(name: str) -> SearchSpace:
    """The search space called `name` (one of `NAMES`)."""
    if name not in NAMES:
        raise UnknownSpaceError(f"unknown search space {name!r}; valid: {', '.join(NAMES)}")
    return importlib.import_module(f"search_spaces.{name}").SPACE
