"""nas: neural architecture search over MobileNet/Xception block spaces under budgets.

The public API is loaded lazily so that `import nas` stays cheap:
`nas.Genotype`, `nas.parse`, `nas.build_model`, `nas.load_exported`, `nas.cost`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Genotype": "nas.genotype",
    "GenotypeError": "nas.genotype",
    "parse": "nas.genotype",
    "load_genotype": "nas.genotype",
    "build_model": "nas.builder",
    "cost": "nas.cost",
    "param_groups": "nas.optim",
    "load_exported": "nas.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
