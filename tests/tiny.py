"""Settings shared by tests: a search small enough for a CPU test (mnv1 at width 0.25, a
third of the digits, one epoch at 16 px), the variants some tests need, the space the
latency tests search, a small mnv1 genotype, and the study a search leaves in its folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from nas.arch.space import SearchSpace

# About half of this space is over the 28 MFLOPs budget: a run of a few trials rejects some proposals.
TINY = ["+space=mnv1", "+budget.mflops=28", "proxy.epochs=1", "proxy.resolution=16",
        "proxy.subset=0.3", "space.width=[0.25]", "reference=false", "wandb.mode=disabled",
        "sampler.n_startup_trials=3", "pruner=none"]


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def tiny(*changes: str, drop: Iterable[str] = ()) -> list[str]:
    """TINY without its entries for the keys in `drop` and for the keys `changes` set, then
    `changes`: `tiny("proxy.epochs=8")` trains eight epochs, all else as in TINY."""
    drop = set(drop)
    unknown = drop - {_key(o) for o in TINY}
    if unknown:
        raise ValueError(f"TINY sets no {', '.join(sorted(unknown))}: nothing to drop")
    gone = drop | {_key(c) for c in changes}
    return [o for o in TINY if _key(o) not in gone] + list(changes)


# The sampler's own number of random proposals before TPE takes over (10) instead of 3.
TINY_RANDOM_START = tiny(drop=["sampler.n_startup_trials"])
# The search of tiny_space(), with no MFLOPs budget: the latency tests set a latency budget.
TINY_LATENCY = tiny("space.resolution=[32]", drop=["budget.mflops"])

GENOTYPE = ("res128_w0.5_drop0.0:stem_c16_k3_s2_p1_relu:ds_r1_k3_s1_c32_adp_relu_noskip:"
            "ds_r2_k3_s2_c64_adp_relu_skip:ds_r2_k3_s2_c128_adp_relu_skip")


def tiny_space() -> SearchSpace:
    """mnv1 at width 0.25 and 32 px (the space TINY_LATENCY searches): a few thousand tiny
    kernels."""
    from dataclasses import replace

    from search_spaces import get_space

    return replace(get_space("mnv1"), width=(0.25,), resolution=(32,))


def stored_study(run_dir: Path, name: str) -> optuna.Study:
    """The study `name` in the SQLite file a search wrote into `run_dir`."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")
