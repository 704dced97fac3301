"""The config schemas of the search and of full training: every key, its type, its default
and what it may hold, in one place.

`register_schemas` stores `SearchConfig` and `TrainConfig` in Hydra's ConfigStore as
`search_schema` and `train_schema`; `conf/search.yaml` and `conf/train.yaml` extend them, and
the YAML files of the groups (data, sampler, ...) set only what an option changes. So OmegaConf
refuses an unknown key or a value of the wrong type while Hydra composes the command line, and
`from_container` turns any such refusal into one line (`ConfigError`) that names the key and
what is valid. `validate` then checks what a type cannot say (ranges, choices, combinations).
The dataclasses live here, not in `__main__`, so launchers that pickle the task (submitit) can
unpickle them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.arch.genotype import MAX_RESOLUTION, MAX_WIDTH
from nas.errors import UserError

__all__ = [
    "BUDGET_KEYS",
    "COMMAND_SCHEMAS",
    "DATASETS",
    "LATENCY_BACKENDS",
    "LIMITS",
    "MAX_RESOLUTION",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PARETO_COSTS",
    "PRUNERS",
    "SAMPLERS",
    "SCHEDULES",
    "STORAGES",
    "WANDB_MODES",
    "ZERO_COST",
    "ConfigError",
    "CostRunConfig",
    "DataConfig",
    "LatencyConfig",
    "LatencyRunConfig",
    "Limit",
    "ProxyConfig",
    "PrunerConfig",
    "RecipeConfig",
    "SamplerConfig",
    "SearchConfig",
    "SpaceConfig",
    "StorageConfig",
    "SupernetConfig",
    "SupernetRunConfig",
    "TrainConfig",
    "TrainerConfig",
    "ValidateConfig",
    "WandbConfig",
    "check_values",
    "config_error",
    "data_shape",
    "derive_study_name",
    "register_schemas",
    "result_settings",
    "uses_latency",
]


class ConfigError(UserError):
    """A config value that is not valid."""


BUDGET_KEYS = {"mflops": "millions of multiply-accumulates", "params_m": "millions of parameters",
               "latency_ms": "median batch-1 latency in milliseconds"}
SAMPLERS = ("auto", "tpe", "random", "nsga2")
OBJECTIVES = ("accuracy", "pareto")
ZERO_COST = ("synflow", "grad_norm", "naswot")  # nas.model.zero_cost.PROXIES, without importing torch
PARETO_COSTS = ("mflops", "latency_ms", "params_m")
LATENCY_BACKENDS = ("torch", "onnxruntime")  # as nas.hardware.backends.BACKENDS (a test keeps them equal)
PRUNERS = ("median", "hyperband", "none")
OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
WANDB_MODES = ("offline", "online", "disabled")
STORAGES = ("sqlite", "journal", "postgres")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
DATASETS = ("digits", "cluttered_digits", "cifar10", "imagefolder")
AUGMENTS = ("none", "flip", "cifar", "imagenet")
# Settings of an image folder (how it is read, loaded, normalized) that the other datasets do not have.
IMAGEFOLDER_ONLY = ("grayscale", "in_memory", "num_workers", "pin_memory", "persistent_workers", "mean",
                    "std")
# The generator's settings of data=cluttered_digits (nas.training.cluttered.ClutterSettings).
CLUTTERED_ONLY = ("canvas", "clutter", "fragment", "min_size", "max_size", "rotation", "noise",
                  "n_train", "n_val", "n_test")
# The one list of which data.* keys belong to one dataset only; every other key applies to all.
DATASET_ONLY = {"imagefolder": IMAGEFOLDER_ONLY, "cluttered_digits": CLUTTERED_ONLY}
MAX_GENERATED = 1_000_000  # images per split of a generated dataset (about 1 GB at 32 px)


@dataclass
class SpaceConfig:
    """`+space=NAME` (conf/space/NAME.yaml, the space in search_spaces/NAME.py)."""

    name: str = ""  # mnv2 | xception | mnv1: no default on purpose
    width: list[float] | None = None  # override the width-multiplier choices, e.g. [0.75, 1.0]
    resolution: list[int] | None = None  # override the input-resolution choices, e.g. [224]

    def validate(self) -> None:
        from search_spaces import NAMES

        _choice("space", self.name, NAMES)
        for key in ("width", "resolution"):
            if getattr(self, key) == []:
                raise ConfigError(f"space.{key}=[] is empty: give at least one choice, e.g. "
                                  f"space.{key}=[{'1.0' if key == 'width' else '224'}], or leave it "
                                  "out to keep the space's own choices")


@dataclass
class DataConfig:
    """`data=digits` (default) | `cifar10` | `imagefolder` (conf/data/*.yaml set what each changes)."""

    name: str = "digits"  # digits | cluttered_digits | cifar10 | imagefolder (the data= group sets it)
    root: str | None = None  # the data's folder (cifar10, imagefolder); stored absolute
    val_fraction: float = 0.15  # validation split drawn with `seed`, in (0, 0.5)
    test_fraction: float = 0.15  # held-out test split for full training (cifar10 has its own)
    seed: int = 0  # the splits (and the generated images of cluttered_digits)
    augment: Any = "none"  # none | flip | cifar (pad 4 + crop + flip) | imagenet (random-resized crop + flip)
    # An image folder (data=imagefolder only; IMAGEFOLDER_ONLY):
    grayscale: bool = False  # read images as one channel
    in_memory: Any = "auto"  # auto (decode up front up to 20,000 images, else stream) | true | false
    num_workers: int = 2  # DataLoader worker processes decoding and augmenting a streamed folder
    pin_memory: bool = True  # page-locked batches for faster copies to a GPU (only with CUDA)
    persistent_workers: bool = True  # keep the workers between epochs
    mean: list[float] | None = None  # per-channel mean in [0, 1]; null: estimated from 256 training images
    std: list[float] | None = None  # per-channel standard deviation in [0, 1]; null: estimated like mean
    # The generated benchmark task (data=cluttered_digits only): each image is a canvas with one
    # digit at a random size, rotation and place, `clutter` fragments of other digits, and noise.
    # Train/val/test are made from disjoint base digits (split by val_fraction/test_fraction, seed).
    canvas: int = 32  # field size in pixels (the native resolution)
    clutter: int = 2  # fragments of other digits per image
    fragment: int = 4  # side of each fragment in pixels
    min_size: float = 18.0  # smallest digit size in pixels
    max_size: float = 26.0  # largest digit size in pixels
    rotation: float = 10.0  # largest rotation of the digit, degrees either way
    noise: float = 0.05  # standard deviation of the Gaussian pixel noise (pixel values in [0, 1])
    n_train: int = 20000  # training images generated
    n_val: int = 5000  # validation images generated
    n_test: int = 5000  # test images generated

    def validate(self) -> None:
        _choice("data.name", self.name, DATASETS)
        for owner, keys in DATASET_ONLY.items():
            if owner == self.name:
                continue
            for key in keys:
                if getattr(self, key) != getattr(DataConfig, key):
                    raise ConfigError(f"data.{key} is a setting of data={owner} only, not of the data "
                                      f"chosen here (data={self.name}; add data={owner} to use it)")
        if self.name == "cluttered_digits":
            self._validate_clutter()
        if self.name not in ("digits", "cluttered_digits") and not self.root:
            raise ConfigError(f"data.root is required with data={self.name}: add data.root=<folder>")
        if isinstance(self.augment, bool):
            self.augment = "flip" if self.augment else "none"
        _choice("data.augment", self.augment, AUGMENTS)
        if self.in_memory not in (True, False, "auto"):
            raise ConfigError(f"data.in_memory={self.in_memory!r} is not valid; valid: auto, true, false")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and (not values or any(not 0 <= v <= 1 for v in values)
                                       or (key == "std" and any(v <= 0 for v in values))):
                raise ConfigError(f"data.{key}={values} is not valid: one value per channel in [0, 1] "
                                  "units (std > 0), e.g. [0.5, 0.5, 0.5]")
        if self.root is not None:
            # Absolute from here on: a study or a retrain.yaml must find the data from any folder.
            from pathlib import Path

            self.root = str(Path(self.root).expanduser().absolute())


    def _validate_clutter(self) -> None:
        _in_range("data.canvas", self.canvas, 16, 256)
        _in_range("data.clutter", self.clutter, 0, 64)
        _in_range("data.fragment", self.fragment, 1, self.canvas)
        for key in ("n_train", "n_val", "n_test"):
            _in_range(f"data.{key}", getattr(self, key), 10 if key == "n_train" else 1, MAX_GENERATED)
        for key, low, high in (("min_size", 2.0, float(self.canvas)), ("max_size", 2.0, float(self.canvas)),
                               ("rotation", 0.0, 180.0), ("noise", 0.0, 1.0)):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and low <= value <= high):  # NaN fails too
                raise ConfigError(f"data.{key}={value} is not valid: must be a number in [{low:g}, {high:g}]")
        if self.min_size > self.max_size:
            raise ConfigError(f"data.min_size={self.min_size} is not valid: must be <= data.max_size="
                              f"{self.max_size}")


@dataclass
class RecipeConfig:
    """The optimization recipe shared by the proxy and full training."""

    batch_size: int = 64  # images per step (per device with DDP)
    optimizer: str = "sgd"  # sgd (Nesterov) | rmsprop | adamw
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # sgd and rmsprop momentum
    weight_decay: float = 4e-5  # not applied to depthwise weights, BN or biases
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0  # linear warm-up before the decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    threads: int = 1  # torch threads on CPU (0: all cores); ignored on accelerators
    deterministic: Any = True  # true | false | warn (Lightning's names)
    # Where and how to train (Lightning's names; never written into the code):
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | ...
    channels_last: bool = False  # NHWC memory format (faster convolutions on recent GPUs)

    def validate_device(self, prefix: str) -> None:
        _choice(f"{prefix}.precision", self.precision, PRECISIONS)
        if not isinstance(self.deterministic, bool) and self.deterministic != "warn":
            raise ConfigError(f"{prefix}.deterministic={self.deterministic!r} is not valid; valid: true, "
                              "false, warn")
        devices = getattr(self, "devices", 1)  # an integer (its range: LIMITS) or, where typed Any, auto
        if isinstance(devices, bool) or (not isinstance(devices, int) and devices != "auto"):
            raise ConfigError(f"{prefix}.devices={devices!r} is not valid: an integer >= 1 or auto")
        _check_accelerator(f"{prefix}.accelerator", self.accelerator)
        strategy = getattr(self, "strategy", "auto")
        if strategy != "auto":
            _check_strategy(f"{prefix}.strategy", strategy)

    def on_cpu(self) -> bool:
        """Whether training runs on the CPU (where `threads` applies)."""
        if self.accelerator == "cpu":
            return True
        import torch

        return self.accelerator == "auto" and not torch.cuda.is_available()


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# False while a multirun is checked on the machine that submits it: its workers may run on
# other machines (SLURM nodes with GPUs), and each checks its own accelerator when it starts.
DEVICE_HERE = contextvars.ContextVar("nas_device_here", default=True)


def _check_accelerator(key: str, value: str) -> None:
    """An accelerator Lightning knows and this machine has."""
    _choice(key, value, ACCELERATORS)
    if value in ("auto", "cpu") or not DEVICE_HERE.get():
        return
    import torch

    present = torch.backends.mps.is_available() if value == "mps" else torch.cuda.is_available()
    if not present:
        raise ConfigError(f"{key}={value} is not valid here: this machine has no {value} device (torch "
                          "sees none); valid here: auto, cpu")


def _check_strategy(key: str, value: str) -> None:
    """A strategy name Lightning's registry holds (ddp, ddp_spawn, fsdp, deepspeed, ...)."""
    from pytorch_lightning.strategies import StrategyRegistry

    valid = sorted({"auto", *StrategyRegistry.available_strategies()})
    if value not in valid:
        import difflib

        close = difflib.get_close_matches(value, valid, n=3)
        raise ConfigError(f"{key}={value!r} is not valid; valid: {', '.join(close or valid[:12])} "
                          "(Lightning's strategy names)")


@dataclass
class ProxyConfig(RecipeConfig):
    """The short training that scores each genotype (`proxy=default`; `proxy=zero_cost` scores it
    untrained). The budget is always judged on the full genotype at its declared resolution;
    the proxy trains a cheaper stand-in."""

    kind: str = "train"  # train | supernet (inherited weights) | synflow | grad_norm | naswot (zero-cost)
    supernet: str | None = None  # proxy=supernet: the supernet file (python -m nas.supernet train makes one)
    val_images: int = 0  # proxy=supernet: score candidates on this many fixed validation images (0: all)
    prefilter: str | None = None  # a zero-cost proxy that skips candidates before training
    prefilter_keep: float = 0.25  # train only candidates scoring in this top fraction of those so far
    prefilter_warmup: int = 8  # candidates scored before the filter starts skipping any
    zero_cost_batch: int = 64  # images in the one mini-batch a zero-cost proxy sees
    devices: int = 1  # accelerators per trial (one GPU per worker; see workers_per_gpu)
    lr: float = 0.03  # peak learning rate of the proxy training
    epochs: int = 2  # chosen by scripts/bench_proxy_fidelity.py (docs/benchmarks.md, proxy fidelity)
    resolution: int = 32  # training resolution for a genotype at the space's reference resolution
    scale_resolution: bool = True  # genotypes at other resolutions train proportionally smaller/larger
    width_scale: float = 1.0  # multiply the genotype's width for the proxy (< 1 trains faster)
    subset: float = 1.0  # fraction of the training split to use
    bn_recalibration: int = 10  # re-estimate BN statistics on this many batches before validating (0: off)

    def resolution_for(self, genotype_resolution: int, reference_resolution: int) -> int:
        """The size the proxy trains a genotype declared at `genotype_resolution` at: `resolution`
        for the space's reference resolution, in proportion for others (when `scale_resolution`)."""
        if not self.scale_resolution:
            return self.resolution
        return max(8, round(self.resolution * genotype_resolution / reference_resolution))


@dataclass
class SupernetConfig(RecipeConfig):
    """Training the weight-sharing supernet (`python -m nas.supernet train`, conf/supernet.yaml;
    also how `proxy=supernet` trains one when `proxy.supernet` names no file yet)."""

    epochs: int = 20  # training epochs, the largest_epochs phase included
    lr: float = 0.05  # peak learning rate
    resolution: int = 32  # a subnet's px at the space's reference resolution (as proxy.resolution)
    random_subnets: int = 2  # random subnets per step beside the largest and the smallest (sandwich rule)
    mflops: float | None = None  # train only subnets within this budget (MFLOPs, as budget.mflops); null: all
    distill: bool = True  # in-place distillation: the other subnets learn the largest one's outputs
    largest_epochs: int = 0  # a first phase in the same run: epochs training the largest subnet alone
    unshared: list[str] = field(default_factory=list)  # genes with own weights per choice, e.g. [residual,t]
    # Progressive shrinking (Once-for-All): genes held at the teacher's value, made elastic one
    # phase at a time in this order (a+b: together); genes not listed are elastic throughout
    progressive: list[str] = field(default_factory=list)  # genes released one phase at a time, e.g. [k,n+t]
    bn_batches: int = 10  # training batches that re-estimate an extracted subnet's BN statistics
    val_random: int = 4  # fixed random subnets (within mflops) validated each epoch beside the two extremes
    devices: Any = 1  # Lightning's: accelerators (or CPU processes) per node, e.g. 2 with strategy=ddp
    strategy: str = "auto"  # auto | ddp (unused subnet weights are allowed for) | ...
    seed: int = 0  # initial weights and the subnets drawn each step
    progress: bool = True  # progress bar

    def validate(self, prefix: str = "supernet") -> None:
        """Choices and combinations (the ranges of its numbers: `check_values`)."""
        if self.largest_epochs >= self.epochs:
            raise ConfigError(f"{prefix}.largest_epochs={self.largest_epochs} is not valid: must be below "
                              f"{prefix}.epochs={self.epochs} (the sandwich phase needs an epoch)")
        _choice(f"{prefix}.optimizer", self.optimizer, OPTIMIZERS)
        _choice(f"{prefix}.schedule", self.schedule, SCHEDULES)
        from nas.arch.blocktypes import stage_genes

        genes = tuple(g for g in stage_genes() if g not in ("block", "s"))
        for gene in self.unshared:
            if gene not in genes:
                raise ConfigError(f"{prefix}.unshared={list(self.unshared)} is not valid: {gene!r} is no "
                                  f"stage gene; valid: {', '.join(genes)}")
        from nas.arch.space import GLOBAL_GENES

        self._validate_progressive(prefix, (*GLOBAL_GENES, *genes))
        self.validate_device(prefix)

    def phases(self) -> tuple[tuple[str, ...], ...]:
        """`progressive` as the genes each phase releases (`k+n` releases two)."""
        return tuple(tuple(str(group).split("+")) for group in self.progressive)

    def _validate_progressive(self, prefix: str, genes: tuple[str, ...]) -> None:
        given = f"{prefix}.progressive={list(self.progressive)}"
        seen: set[str] = set()
        for group in self.phases():
            for gene in group:
                if gene not in genes:
                    raise ConfigError(f"{given} is not valid: {gene!r} is no gene; valid: {', '.join(genes)} "
                                      "(a+b makes two elastic in one phase)")
                if gene in seen:
                    raise ConfigError(f"{given} is not valid: {gene!r} is named twice")
                seen.add(gene)
        phases = len(self.progressive) + 1
        if self.progressive and self.epochs - self.largest_epochs < phases:
            raise ConfigError(f"{given} is not valid with {prefix}.epochs={self.epochs}: its {phases} "
                              f"phases need at least {phases} epochs after {prefix}.largest_epochs="
                              f"{self.largest_epochs}")

    def resolution_for(self, genotype_resolution: int, reference_resolution: int) -> int:
        """A subnet's training (and scoring) resolution: in proportion to its own."""
        return max(8, round(self.resolution * genotype_resolution / reference_resolution))


@dataclass
class SamplerConfig:
    """`sampler=auto` (TPE; NSGA-II when objective=pareto) | `tpe` | `random` | `nsga2`."""

    name: str = "auto"  # auto | tpe | random | nsga2 (the sampler= group sets it)
    n_startup_trials: int = 10  # TPE: random proposals before TPE takes over
    multivariate: bool = True  # TPE: model genes jointly
    constant_liar: bool = True  # TPE: parallel workers avoid proposing what others are running
    population_size: int | None = None  # NSGA-II: genotypes per generation; null: n_trials // 4 in [4, 50]


@dataclass
class PrunerConfig:
    """`pruner=median` (stop a trial below the median of earlier trials at an epoch) |
    `hyperband` (over epochs 1 .. proxy.epochs) | `none`."""

    name: str = "median"  # median | hyperband | none (the pruner= group sets it)
    n_startup_trials: int = 5  # trials trained in full before pruning starts
    n_warmup_steps: int = 0  # epochs before a trial may be pruned (never after its last)


@dataclass
class StorageConfig:
    """`storage=sqlite` (study.db in the run or sweep folder) | `journal` (an append-only file
    for shared/NFS filesystems) | `postgres` (storage.url or NAS_STORAGE_URL)."""

    name: str = "sqlite"  # sqlite | journal | postgres (the storage= group sets it)
    url: str | None = None  # e.g. sqlite:////abs/path/study.db, journal:<file>, postgresql+psycopg2://...
    heartbeat: int = 60  # seconds; a killed worker's trial is failed after 4 missed beats (databases)
    max_retry: int = 2  # re-queue a trial failed that way up to this many times


@dataclass
class LatencyConfig:
    """How +budget.latency_ms is judged: predicted from a lookup table built on this device
    (python -m nas.latency build +space=NAME) when one matches it, else measured per candidate."""

    lut: str | None = None  # table file; default <dir>/<space>-<device>-<threads>t-<fingerprint>.lut.jsonl
    dir: str = "luts"  # where `nas.latency build` writes tables by default
    backend: str = "torch"  # torch (PyTorch eager) | onnxruntime (ONNX Runtime CPU, as exports deploy)
    device: str = "cpu"  # cpu | cuda (torch backend)
    threads: int = 1  # threads while measuring (part of the device fingerprint)
    channels_last: bool = False  # measure in channels-last memory format (torch backend)
    warmup: int = 5  # untimed calls before timing a candidate measured directly
    repeats: int = 25  # timed calls; the median counts

    def validate(self, prefix: str = "latency.") -> None:
        _choice(f"{prefix}backend", self.backend, LATENCY_BACKENDS)
        _choice(f"{prefix}device", self.device, ("cpu", "cuda"))
        if self.backend == "onnxruntime" and (self.device != "cpu" or self.channels_last):
            raise ConfigError(f"{prefix}device={self.device}, {prefix}channels_last="
                              f"{str(self.channels_last).lower()} are not valid with "
                              f"{prefix}backend=onnxruntime (ONNX Runtime's CPU provider); valid: "
                              f"{prefix}device=cpu, {prefix}channels_last=false")
        _positive(f"{prefix}threads", self.threads)  # 0 (all cores) is not a measurement setting


@dataclass
class CostRunConfig:
    """`python -m nas.cost +space=NAME | +genotype=STRING_OR_YAML [key=value ...]`: params and
    MFLOPs of a genotype or of a space's reference network, part by part."""

    space: str | None = None  # report a search space (mnv2 | xception | mnv1) and its reference network
    genotype: str | None = None  # report one genotype: a genotype string or a path to a genotype.yaml
    width: float | None = None  # override the width multiplier of the reported genotype
    resolution: int | None = None  # override the input resolution of the reported genotype
    # Classes and channels from a dataset the search uses: digits | cluttered_digits (10 classes,
    # 1 channel) | cifar10 (10, 3); without it ImageNet's 1000 and 3, as in the papers' tables.
    data: str | None = None
    num_classes: int | None = None  # classifier outputs (overrides data's)
    in_channels: int | None = None  # input channels (overrides data's)
    format: str = "table"  # table | json


@dataclass
class LatencyRunConfig(LatencyConfig):
    """`python -m nas.latency build|calibrate|validate|predict +space=NAME [key=value ...]`: the
    per-device latency lookup table, built, calibrated and checked on the device itself."""

    space: str | None = None  # search space: mnv2 | xception | mnv1
    num_classes: int = 10  # classifier outputs (the digits data's)
    in_channels: int = 1  # input channels (the digits data's)
    calibration: int = 100  # random networks timed whole (each in a fresh process) to fit the table's scales
    rebuild: bool = False  # validate: measure a table afresh when it does not match this device
    n: int = 100  # validate: random genotypes to time, each twice, in fresh processes
    seed: int = 0  # validate: seed of the random genotypes
    out: str = "latency_validation.html"  # validate: the scatter plot file
    genotype: str | None = None  # predict: a genotype string or genotype.yaml
    width: list[float] | None = None  # only these width multipliers of the space, e.g. [0.5,1.0]
    resolution: list[int] | None = None  # only these input resolutions of the space, e.g. [160,224]


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline (files in the run directory) | online | disabled
    project: str = "nas"  # W&B project of the runs
    entity: str | None = None  # W&B team or user; null: the logged-in user's default


@dataclass
class ValidateConfig:
    """`python -m nas.supernet validate`: how far to trust the supernet's ranking on this data."""

    n: int = 12  # random subnets trained stand-alone
    epochs: int = 20  # their stand-alone training (the benchmarks' reference recipe: supernet.* recipe keys)
    proxy_epochs: int = 2  # the short-training proxy measured beside the supernet on the same subnets
    seed: int = 0  # which subnets
    mflops: float | None = None  # draw subnets within this budget (the part of the space a search uses)



@dataclass
class SupernetRunConfig:
    """`python -m nas.supernet train|validate +space=NAME [data=...] [supernet.epochs=N ...]`."""

    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    out: str | None = None  # the supernet file (train writes, validate reads); default <run dir>/supernet.pt

    @classmethod
    def from_container(cls, data: dict[str, Any]) -> SupernetRunConfig:
        _require_space(data)
        cfg = _typed(cls, data)
        check_values(cfg)
        cfg.space.validate()
        cfg.data.validate()
        cfg.supernet.validate()
        _choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
        return cfg


@dataclass
class SearchConfig:
    """`python -m nas.search +space=NAME +budget.mflops=N [key=value ...]` (conf/search.yaml)."""

    space: SpaceConfig = field(default_factory=SpaceConfig)
    # Hard limits checked from the genotype alone, before any training; any of +budget.mflops=N
    # (millions of multiply-accumulates), +budget.params_m=N, +budget.latency_ms=N (see `latency`).
    budget: dict[str, float] = field(default_factory=dict)
    n_trials: int = 20  # trained trials to reach (rejected proposals and duplicates do not count)
    seed: int = 0  # sampler seed; trial k trains with seed + k
    study_name: str | None = None  # conf/search.yaml derives <space>-<budget>-<data>[-tags]
    objective: str = "accuracy"  # accuracy | pareto: accuracy and pareto_cost together
    pareto_cost: str = "mflops"  # the cost a pareto study minimizes: mflops | latency_ms | params_m
    top_k: int = 5  # rows of the final table
    max_proposals: int | None = None  # stop a run after this many proposals (default 50 x n_trials)
    reference: bool = True  # also train the space's reference network scaled to the budget
    progress: bool = True  # one line per trained trial
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    # proxy=supernet with no file yet trains one with these:
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    worker: int | None = None  # +worker=N: a worker started by hand joins the shared study
    workers_per_gpu: int = 1  # workers sharing one GPU: worker i trains on GPU (i // k) mod n

    @classmethod
    def from_container(cls, data: dict[str, Any]) -> SearchConfig:
        """Validate a plain dict (the composed config without `hydra`)."""
        _require_space(data)
        cfg = _typed(cls, data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Ranges, choices and combinations that types cannot say; one line per refusal."""
        check_values(self)
        self.space.validate()
        self._validate_budget()
        if self.study_name is not None and (not self.study_name.strip() or "/" in self.study_name
                                            or self.study_name in (".", "..")):
            raise ConfigError(f"study_name={self.study_name!r} is not valid: give a non-empty name "
                              "without '/', or leave it out to derive one")
        _choice("objective", self.objective, OBJECTIVES)
        _choice("pareto_cost", self.pareto_cost, PARETO_COSTS)
        self.data.validate()
        self._validate_proxy()
        self.supernet.validate()  # used when proxy=supernet trains a missing file
        _choice("sampler.name", self.sampler.name, SAMPLERS)
        _choice("pruner.name", self.pruner.name, PRUNERS)
        _choice("storage.name", self.storage.name, STORAGES)
        _choice("wandb.mode", self.wandb.mode, WANDB_MODES)
        self.latency.validate()

    def _validate_budget(self) -> None:
        if not self.budget:
            raise ConfigError("no budget given: add at least one of +budget.mflops=N, "
                              "+budget.params_m=N, +budget.latency_ms=N")
        for key, value in self.budget.items():
            if key not in BUDGET_KEYS:
                raise ConfigError(f"unknown budget key budget.{key}; valid: {', '.join(BUDGET_KEYS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"budget.{key}={value!r} is not a number ({BUDGET_KEYS[key]})")
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"budget.{key}={_num(value)} is not valid: must be a positive number")

    def _validate_proxy(self) -> None:
        p = self.proxy
        _choice("proxy.kind", p.kind, ("train", "supernet", *ZERO_COST))
        if p.kind == "supernet":
            if p.prefilter is not None:
                raise ConfigError(f"proxy.prefilter={p.prefilter} is not valid with proxy=supernet (a "
                                  "pre-filter saves trainings; a supernet study trains none): leave it out")
        elif p.supernet is not None:
            raise ConfigError(f"proxy.supernet={p.supernet!r} is a setting of proxy=supernet only (add "
                              "proxy=supernet, or leave it out)")
        elif p.val_images:
            raise ConfigError(f"proxy.val_images={p.val_images} is a setting of proxy=supernet only (a "
                              "trained proxy validates on the whole split): leave it out")
        if p.prefilter is not None:
            _choice("proxy.prefilter", p.prefilter, ZERO_COST)
            if p.kind in ZERO_COST:
                raise ConfigError(f"proxy.prefilter={p.prefilter} is not valid with proxy.kind={p.kind} (a "
                                  "pre-filter skips trainings; a zero-cost study trains none): leave it out")
        _choice("proxy.optimizer", p.optimizer, OPTIMIZERS)
        _choice("proxy.schedule", p.schedule, SCHEDULES)
        p.validate_device("proxy")

    def default_study_name(self) -> str:
        return derive_study_name(dataclasses.asdict(self))


@dataclass
class TrainerConfig(RecipeConfig):
    """Full training of one genotype (`python -m nas.train`, conf/train.yaml); the hardware keys
    are Lightning's, e.g. trainer.devices=4 trainer.strategy=ddp on a GPU node."""

    max_epochs: int = 30  # training epochs
    warmup_epochs: float = 1.0
    threads: int = 1  # torch CPU threads (0: all cores); 1 measured fastest on a shared 2-core machine
    devices: Any = 1  # accelerators (or processes on CPU) per node (an integer >= 1), or auto
    num_nodes: int = 1  # machines (Lightning's)
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | ...
    sync_batchnorm: bool = False  # batch statistics across devices (with ddp)
    compile: bool = False  # torch.compile the model for training (the export is the plain module)
    ema: bool = False  # keep an exponential moving average of the weights (used to evaluate)
    ema_decay: float = 0.999  # weight of the running average per step
    seed: int = 0  # initial weights and the training order
    progress: bool = True  # progress bar


@dataclass
class TrainConfig:
    genotype: str | None = None  # +genotype=<genotype.yaml | genotype string>
    resolution: int | None = None  # training/eval resolution; null: the genotype's declared one
    ckpt_path: str | None = None  # resume from this checkpoint instead of <run dir>/checkpoints/last.ckpt
    init: str | None = None  # start from the weights of this export folder (fine-tune inherited weights)
    export: bool = True  # export the trained model (ONNX, TorchScript, state dict) at the end
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @classmethod
    def from_container(cls, data: dict[str, Any]) -> TrainConfig:
        if not data.get("genotype"):
            raise ConfigError("no genotype given: add +genotype=<path to genotype.yaml or a "
                              "genotype string>")
        cfg = _typed(cls, data)
        check_values(cfg)
        t = cfg.trainer
        _choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
        _choice("trainer.schedule", t.schedule, SCHEDULES)
        _choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
        cfg.data.validate()
        t.validate_device("trainer")
        if cfg.init is not None:
            from pathlib import Path

            folder = Path(cfg.init).expanduser()
            if not (folder / "state_dict.pt").is_file():
                raise ConfigError(f"init={cfg.init!r} is not an export folder with weights (no "
                                  "state_dict.pt): give a folder python -m nas.export wrote")
            cfg.init = str(folder.absolute())
        return cfg


def data_shape(data: dict[str, Any]) -> dict[str, int] | None:
    """Classes and channels of a study's data, from its identity (for studies whose workers
    did not record them); None when they cannot be known."""
    channels = 1 if data.get("grayscale") else 3
    if data.get("name", "digits") in ("digits", "cluttered_digits"):
        return {"num_classes": 10, "in_channels": 1}
    if data.get("name") == "cifar10":
        return {"num_classes": 10, "in_channels": channels}
    from pathlib import Path

    root = Path(str(data.get("root") or "")).expanduser()
    classes = [p for p in root.iterdir() if p.is_dir()] if data.get("root") and root.is_dir() else []
    return {"num_classes": len(classes), "in_channels": channels} if classes else None


def derive_study_name(cfg: Mapping[str, Any]) -> str:
    """`<space>-<budget>-<data>`, plus a tag for each setting that makes a different search
    (objective, zero-cost proxy, pre-filter, sampler, seed) when it is not the default,
    so that the README's examples, run one after another in one folder, are separate studies
    while re-running one command resumes its own."""

    def get(section: str, key: str, default: Any) -> Any:
        value = cfg.get(section)
        return value.get(key, default) if isinstance(value, Mapping) else default

    budget = cfg.get("budget") or {}
    parts = [get("space", "name", "") or "nospace",
             "-".join(f"{k}{_num(v) if isinstance(v, (int, float)) else v}"
                      for k, v in sorted(budget.items())),
             get("data", "name", "data")]
    if cfg.get("objective", "accuracy") == "pareto":
        parts.append(f"pareto_{cfg.get('pareto_cost', 'mflops')}")
    if get("proxy", "kind", "train") != "train":
        parts.append(str(get("proxy", "kind", "")))
    if get("proxy", "prefilter", None):
        parts.append(f"prefilter_{get('proxy', 'prefilter', '')}")
    if get("sampler", "name", "auto") != "auto":
        parts.append(f"sampler_{get('sampler', 'name', '')}")
    if cfg.get("seed", 0) != 0:
        parts.append(f"seed{cfg.get('seed')}")
    if uses_latency(cfg) and get("latency", "backend", "torch") != "torch":
        parts.append(str(get("latency", "backend", "")))
    return "-".join(str(p) for p in parts if p != "")


def uses_latency(cfg: Mapping[str, Any]) -> bool:
    """Whether a search judges latency: a latency budget, or a latency Pareto front."""
    return "latency_ms" in (cfg.get("budget") or {}) or (
        cfg.get("objective") == "pareto" and cfg.get("pareto_cost") == "latency_ms")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _positive(key: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{key}={value} is not valid: must be an integer >= {minimum}")



def _in_range(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}={value} is not valid: must be an integer in [{low}, {high}]")


def _choice(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid: {', '.join(map(str, valid))}")


# Each command's schema: its keys, defaults and comments are its --help and the docs' configuration page.
COMMAND_SCHEMAS = {"nas.search": SearchConfig, "nas.train": TrainConfig, "nas.supernet": SupernetRunConfig,
                   "nas.cost": CostRunConfig, "nas.latency": LatencyRunConfig}


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (`search_schema`, `train_schema`), which the
    primary configs `conf/search.yaml` and `conf/train.yaml` name first in their defaults."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="search_schema", node=SearchConfig)
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="supernet_schema", node=SupernetRunConfig)


def _require_space(data: Mapping[str, Any]) -> None:
    space = data.get("space")
    if not space or not (isinstance(space, Mapping) and space.get("name")):
        from search_spaces import NAMES

        raise ConfigError(f"no search space chosen: add +space=NAME; valid: {', '.join(NAMES)}")


@dataclass(frozen=True)
class Limit:
    """The valid range of a number (inclusive unless open at an end)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        return ((value > self.low if self.low_open else value >= self.low)
                and (value < self.high if self.high_open else value <= self.high))

    def __str__(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"


_BIG = 10**9
# The range of every numeric key of every schema, by the key's own name: one set of limits for
# every command (a key in several schemas means the same there). Floats must also be finite.
LIMITS = {
    "seed": Limit(0, 2**32 - 1),  # what numpy's and torch's seeding accept
    "worker": Limit(0, 100_000),
    "batch_size": Limit(1, 65_536),
    "epochs": Limit(1, 100_000), "max_epochs": Limit(1, 100_000), "proxy_epochs": Limit(1, 100_000),
    "largest_epochs": Limit(0, 100_000), "warmup_epochs": Limit(0, 100_000),
    "threads": Limit(0, 1024), "devices": Limit(1, 4096), "num_nodes": Limit(1, 100_000),
    "num_workers": Limit(0, 256), "workers_per_gpu": Limit(1, 1024),
    "lr": Limit(0, 100, low_open=True), "momentum": Limit(0, 1, high_open=True),
    "weight_decay": Limit(0, 1), "label_smoothing": Limit(0, 1, high_open=True),
    "ema_decay": Limit(0, 1, low_open=True, high_open=True),
    "resolution": Limit(8, MAX_RESOLUTION), "width": Limit(0, MAX_WIDTH, low_open=True),
    "width_scale": Limit(0, MAX_WIDTH, low_open=True), "subset": Limit(0, 1, low_open=True),
    "bn_recalibration": Limit(0, 10_000), "bn_batches": Limit(1, 10_000),
    "random_subnets": Limit(0, 64), "val_random": Limit(0, 64), "val_images": Limit(0, _BIG),
    "zero_cost_batch": Limit(2, 65_536),
    "prefilter_keep": Limit(0, 1, low_open=True), "prefilter_warmup": Limit(0, _BIG),
    "n_trials": Limit(1, _BIG), "max_proposals": Limit(1, _BIG), "top_k": Limit(1, _BIG),
    "n": Limit(3, 100_000), "calibration": Limit(3, 100_000), "num_classes": Limit(1, 1_000_000),
    "in_channels": Limit(1, 4096), "mflops": Limit(0, 1e12, low_open=True),
    "n_startup_trials": Limit(0, _BIG), "n_warmup_steps": Limit(0, _BIG), "population_size": Limit(2, _BIG),
    "heartbeat": Limit(0, 86_400), "max_retry": Limit(0, 1000),
    "warmup": Limit(0, 100_000), "repeats": Limit(1, 100_000),
    "val_fraction": Limit(0, 0.5, low_open=True, high_open=True),
    "test_fraction": Limit(0, 0.5, low_open=True, high_open=True),
}
# Keys that change where or how fast a run goes, not what it measures: a study's and a training's
# identity is every other key of its schema, so a new knob joins the identity by default.
NOT_RESULT = frozenset({"threads", "accelerator", "devices", "channels_last", "progress", "deterministic",
                        "num_workers", "pin_memory", "persistent_workers", "in_memory"})


def result_settings(obj: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of the schema section `obj` that change what a run measures (all but
    `NOT_RESULT` and `leave_out`), as plain values."""
    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in NOT_RESULT and k not in leave_out}


MAX_NAME = 200  # characters of a name that becomes a file or folder name (study_name)


def check_values(obj: Any, prefix: str = "") -> None:
    """Refuse, in one line, any number of the schema tree `obj` that is not finite or is outside
    its `LIMITS`, and any string holding a NUL character; checked before any command acts."""
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, key + ".")
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, str) and "\x00" in item:
                raise ConfigError(f"{key}={value!r} is not valid: it holds a NUL character")
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            limit = LIMITS.get(f.name)
            if isinstance(item, float) and not math.isfinite(item):
                valid = f" in {limit}" if limit else ""
                raise ConfigError(f"{key}={value} is not valid: must be a finite number{valid}")
            if limit is not None and not limit.holds(item):
                raise ConfigError(f"{key}={value} is not valid: must be in {limit}")
    name = getattr(obj, "study_name", None)
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise ConfigError(f"study_name={name[:20]}... ({len(name)} characters) is not valid: it names a "
                          f"folder and a file, give at most {MAX_NAME} characters")


def _typed(cls: type, data: Mapping[str, Any]) -> Any:
    """`cls` filled from a plain mapping; OmegaConf checks every key and type against the
    schema, and its refusals become one-line `ConfigError`s."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), dict(data)))
    except OmegaConfBaseException as err:
        raise config_error(err) from None
    return obj


_EXPECTED = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
             "String": "a string"}


def config_error(err: Exception) -> ConfigError:
    """One line for OmegaConf's refusal of a key or value: the key, the bad value and what
    the schema takes there."""
    key = str(getattr(err, "full_key", "") or "config")
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    converted = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", text)
    if converted:
        value, kind = converted.groups()
        return ConfigError(f"{key}={value!r} is not valid: expected {_EXPECTED.get(kind, kind)}")
    not_bool = re.match(r"Value '(.*)' is not a valid bool", text)
    if not_bool:
        return ConfigError(f"{key}={not_bool.group(1)!r} is not valid: expected true or false")
    unknown = re.match(r"Key '([^']+)' not in '(\w+)'", text)
    if unknown:
        owner = getattr(err, "object_type", None)
        names = sorted(f.name for f in dataclasses.fields(owner)) if dataclasses.is_dataclass(owner) else []
        valid = f"; valid: {', '.join(names)}" if names else ""
        return ConfigError(f"unknown config key {key}{valid}")
    if text.startswith("Incompatible value 'None'") or "is not Optional" in text:
        return ConfigError(f"{key}=null is not valid: give a value")
    if "is not a ListConfig" in text or "is not a subclass of List" in text:
        return ConfigError(f"{key} is not valid: expected a list, e.g. [1, 2]")
    if "is not a DictConfig" in text or "is not a subclass of Dict" in text:
        return ConfigError(f"{key} is not valid: expected a mapping")
    return ConfigError(f"{key}: {text}")
