"""Tests that need an optional extra (onnx, cluster, postgres) skip with the reason when it is
not installed, for someone who installed only `.[dev]`; CI sets NAS_REQUIRE_EXTRAS=1, and
then a missing extra fails instead."""

import importlib
import os
from types import ModuleType

import pytest


def need(module: str, extra: str, *, whole_module: bool = False) -> ModuleType:
    """`import module`, or skip (the calling test, or the whole test module) naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("NAS_REQUIRE_EXTRAS") == "1":
            raise
        pytest.skip(f"{module} is missing: pip install -e '.[{extra}]'", allow_module_level=whole_module)
