"""nas: neural architecture search over MobileNet/Xception block spaces under budgets.

The public API is loaded lazily so that `import nas` stays cheap:
`nas.Genotype`, `nas.parse`, `nas.build_model`, `nas.load_exported`, `nas.cost`,
`nas.param_groups`.

Layers, bottom up (each imports only those below it; tests/test_layout.py checks):
`arch` (genotype, cost, spaces; no torch) < `model` (torch modules, export files) <
`hardware` (latency) < `common` (config schemas, tracking) < `training` (Lightning) <
`search` (the trial loop, studies, reports) < `cli` (the `python -m nas.X` commands).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Genotype": "nas.arch.genotype",
    "GenotypeError": "nas.arch.genotype",
    "parse": "nas.arch.genotype",
    "load_genotype": "nas.arch.genotype",
    "cost": "nas.arch.cost",
    "build_model": "nas.model.builder",
    "param_groups": "nas.model.optim",
    "load_exported": "nas.model.files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
