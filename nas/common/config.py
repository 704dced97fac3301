"""Structured configs for the search: typed, validated views of the composed Hydra config.

Hydra composes `conf/search.yaml` with its groups; `SearchConfig.from_container` turns
the result into these dataclasses, rejecting unknown keys and bad values with one-line
errors that name the key and what is valid. They live here, not in `__main__`, so that
launchers that pickle the task (submitit) can unpickle them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.errors import UserError

__all__ = [
    "BUDGET_KEYS",
    "DATASETS",
    "LATENCY_BACKENDS",
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
    "DataConfig",
    "LatencyConfig",
    "ProxyConfig",
    "PrunerConfig",
    "RecipeConfig",
    "SamplerConfig",
    "SearchConfig",
    "SpaceConfig",
    "StorageConfig",
    "TrainConfig",
    "TrainerConfig",
    "WandbConfig",
    "derive_study_name",
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
DATASETS = ("digits", "cifar10", "imagefolder")
AUGMENTS = ("none", "flip", "cifar", "imagenet")


@dataclass
class SpaceConfig:
    name: str = ""
    width: list[float] | None = None  # override the space's width choices
    resolution: list[int] | None = None  # override the space's resolution choices


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    augment: bool | str = "none"  # none | flip | cifar | imagenet (true: flip, false: none)
    grayscale: bool = False
    in_memory: bool | str = "auto"  # auto: an image folder streams from disk past 20,000 images
    num_workers: int = 2  # DataLoader worker processes decoding a streamed image folder
    pin_memory: bool = True  # page-locked batches for faster copies to a GPU (only with CUDA)
    persistent_workers: bool = True  # keep the workers between epochs
    mean: list[float] | None = None  # per-channel normalization in [0, 1] units; null: from the data
    std: list[float] | None = None

    def validate(self) -> None:
        _choice("data.name", self.name, DATASETS)
        if isinstance(self.augment, bool):
            self.augment = "flip" if self.augment else "none"
        _choice("data.augment", self.augment, AUGMENTS)
        if self.in_memory not in (True, False, "auto"):
            raise ConfigError(f"data.in_memory={self.in_memory!r} is not valid; valid: auto, true, false")
        _positive("data.num_workers", self.num_workers, minimum=0)
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and (not values or any(not 0 <= v <= 1 for v in values)
                                       or (key == "std" and any(v <= 0 for v in values))):
                raise ConfigError(f"data.{key}={values} is not valid: one value per channel in [0, 1] "
                                  "units (std > 0), e.g. [0.5, 0.5, 0.5]")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 0.5:
                raise ConfigError(f"data.{key}={value} is not valid: must be in (0, 0.5)")
        _positive("data.seed", self.seed, minimum=0)
        if self.root is not None:
            # Absolute from here on: a study or a retrain.yaml must find the data from any folder.
            from pathlib import Path

            self.root = str(Path(self.root).expanduser().absolute())


@dataclass
class RecipeConfig:
    """The optimization recipe shared by the proxy and full training."""

    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    threads: int = 1  # torch threads on CPU (0: all cores); ignored on accelerators
    deterministic: bool | str = True  # true | false | warn (Lightning's names)
    # Where and how to train (Lightning's names; never written into the code):
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | ...
    channels_last: bool = False  # NHWC memory format (faster convolutions on recent GPUs)

    def validate_device(self, prefix: str) -> None:
        _choice(f"{prefix}.precision", self.precision, PRECISIONS)
        if not isinstance(self.deterministic, bool) and self.deterministic != "warn":
            raise ConfigError(f"{prefix}.deterministic={self.deterministic!r} is not valid; valid: true, "
                              "false, warn")
        if not self.accelerator or not isinstance(self.accelerator, str):
            raise ConfigError(f"{prefix}.accelerator={self.accelerator!r} is not valid: e.g. auto, cpu, gpu")

    def on_cpu(self) -> bool:
        """Whether training runs on the CPU (where `threads` applies)."""
        if self.accelerator == "cpu":
            return True
        import torch

        return self.accelerator == "auto" and not torch.cuda.is_available()


@dataclass
class ProxyConfig(RecipeConfig):
    kind: str = "train"
    prefilter: str | None = None
    prefilter_keep: float = 0.25
    prefilter_warmup: int = 8
    zero_cost_batch: int = 64
    devices: int = 1  # accelerators per trial (one GPU per worker; see workers_per_gpu)
    lr: float = 0.03
    epochs: int = 2
    resolution: int = 32
    scale_resolution: bool = True
    width_scale: float = 1.0
    subset: float = 1.0
    bn_recalibration: int = 10

    def resolution_for(self, genotype_resolution: int, reference_resolution: int) -> int:
        """The size the proxy trains a genotype declared at `genotype_resolution` at: `resolution`
        for the space's reference resolution, in proportion for others (when `scale_resolution`)."""
        if not self.scale_resolution:
            return self.resolution
        return max(8, round(self.resolution * genotype_resolution / reference_resolution))


@dataclass
class SamplerConfig:
    name: str = "auto"
    n_startup_trials: int = 10
    multivariate: bool = True
    constant_liar: bool = True
    population_size: int | None = None  # None: population_for(n_trials)


@dataclass
class PrunerConfig:
    name: str = "median"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0


@dataclass
class StorageConfig:
    name: str = "sqlite"
    url: str | None = None
    heartbeat: int = 60
    max_retry: int = 2


@dataclass
class LatencyConfig:
    lut: str | None = None  # table file; default <dir>/<space>-<device>-<threads>t-<fingerprint>.lut.jsonl
    dir: str = "luts"
    backend: str = "torch"  # torch (PyTorch eager) | onnxruntime (ONNX Runtime, CPU)
    device: str = "cpu"
    threads: int = 1
    channels_last: bool = False
    warmup: int = 5
    repeats: int = 25


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "nas"
    entity: str | None = None


@dataclass
class SearchConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    budget: dict[str, float] = field(default_factory=dict)
    n_trials: int = 20
    seed: int = 0
    study_name: str | None = None
    objective: str = "accuracy"
    pareto_cost: str = "mflops"
    top_k: int = 5
    max_proposals: int | None = None
    reference: bool = True
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    worker: int | None = None
    workers_per_gpu: int = 1  # workers sharing one GPU: worker i trains on GPU (i // k) mod n

    @classmethod
    def from_container(cls, data: dict[str, Any]) -> SearchConfig:
        """Validate a plain dict (the composed config without `hydra`)."""
        data = dict(data)
        if not data.get("space"):
            from search_spaces import NAMES

            raise ConfigError(f"no search space chosen: add +space=NAME; valid: {', '.join(NAMES)}")
        cfg = _build(cls, data, "")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from search_spaces import NAMES

        _choice("space", self.space.name, NAMES)
        if not self.budget:
            raise ConfigError("no budget given: add at least one of +budget.mflops=N, "
                              "+budget.params_m=N, +budget.latency_ms=N")
        for key, value in self.budget.items():
            if key not in BUDGET_KEYS:
                raise ConfigError(f"unknown budget key budget.{key}; valid: {', '.join(BUDGET_KEYS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"budget.{key}={value!r} is not a number ({BUDGET_KEYS[key]})")
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"budget.{key}={value} is not valid: must be a positive number")
        if self.study_name is not None and (not self.study_name.strip() or "/" in self.study_name
                                            or self.study_name in (".", "..")):
            raise ConfigError(f"study_name={self.study_name!r} is not valid: give a non-empty name "
                              "without '/', or leave it out to derive one")
        for key in ("width", "resolution"):
            if getattr(self.space, key) == []:
                raise ConfigError(f"space.{key}=[] is empty: give at least one choice, e.g. "
                                  f"space.{key}=[{'1.0' if key == 'width' else '224'}], or leave it "
                                  "out to keep the space's own choices")
        _positive("n_trials", self.n_trials)
        _positive("seed", self.seed, minimum=0)

        _positive("top_k", self.top_k)
        if self.max_proposals is not None:
            _positive("max_proposals", self.max_proposals)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("pareto_cost", self.pareto_cost, PARETO_COSTS)
        self.data.validate()
        p = self.proxy
        _positive("proxy.epochs", p.epochs)
        _in_range("proxy.resolution", p.resolution, 8, MAX_RESOLUTION)
        _positive("proxy.batch_size", p.batch_size)
        if not 0 < p.width_scale <= 4:
            raise ConfigError(f"proxy.width_scale={p.width_scale} is not valid: must be in (0, 4]")
        if not 0 < p.subset <= 1:
            raise ConfigError(f"proxy.subset={p.subset} is not valid: must be in (0, 1]")
        if not p.lr > 0:
            raise ConfigError(f"proxy.lr={p.lr} is not valid: must be positive")
        if p.weight_decay < 0 or not 0 <= p.label_smoothing < 1 or p.warmup_epochs < 0:
            raise ConfigError("proxy.weight_decay and proxy.warmup_epochs must be >= 0 and "
                              "proxy.label_smoothing in [0, 1)")
        if p.bn_recalibration < 0:
            raise ConfigError(f"proxy.bn_recalibration={p.bn_recalibration} is not valid: 0 (off) or more")
        if p.threads < 0:
            raise ConfigError(f"proxy.threads={p.threads} is not valid: 0 (all cores) or more")
        _choice("proxy.kind", p.kind, ("train", *ZERO_COST))
        if p.prefilter is not None:
            _choice("proxy.prefilter", p.prefilter, ZERO_COST)
        if not 0 < p.prefilter_keep <= 1:
            raise ConfigError(f"proxy.prefilter_keep={p.prefilter_keep} is not valid: must be in (0, 1]")
        _positive("proxy.prefilter_warmup", p.prefilter_warmup, minimum=0)
        _positive("proxy.zero_cost_batch", p.zero_cost_batch, minimum=2)
        _choice("proxy.optimizer", p.optimizer, OPTIMIZERS)
        _choice("proxy.schedule", p.schedule, SCHEDULES)
        p.validate_device("proxy")
        _positive("proxy.devices", p.devices)
        _positive("workers_per_gpu", self.workers_per_gpu)
        _choice("sampler.name", self.sampler.name, SAMPLERS)
        if self.sampler.population_size is not None:
            _positive("sampler.population_size", self.sampler.population_size, minimum=2)
        _positive("sampler.n_startup_trials", self.sampler.n_startup_trials, minimum=0)
        _choice("pruner.name", self.pruner.name, PRUNERS)
        _positive("pruner.n_startup_trials", self.pruner.n_startup_trials, minimum=0)
        _positive("pruner.n_warmup_steps", self.pruner.n_warmup_steps, minimum=0)
        _choice("storage.name", self.storage.name, STORAGES)
        _positive("storage.heartbeat", self.storage.heartbeat, minimum=0)
        _positive("storage.max_retry", self.storage.max_retry, minimum=0)
        _choice("wandb.mode", self.wandb.mode, WANDB_MODES)
        _choice("latency.backend", self.latency.backend, LATENCY_BACKENDS)
        _choice("latency.device", self.latency.device, ("cpu", "cuda"))
        if self.latency.backend == "onnxruntime" and (self.latency.device != "cpu"
                                                      or self.latency.channels_last):
            raise ConfigError(f"latency.device={self.latency.device}, latency.channels_last="
                              f"{str(self.latency.channels_last).lower()} are not valid with "
                              "latency.backend=onnxruntime (ONNX Runtime's CPU provider); valid: "
                              "latency.device=cpu, latency.channels_last=false")
        _positive("latency.threads", self.latency.threads)
        _positive("latency.warmup", self.latency.warmup, minimum=0)
        _positive("latency.repeats", self.latency.repeats)

    def default_study_name(self) -> str:
        return derive_study_name(dataclasses.asdict(self))


@dataclass
class TrainerConfig(RecipeConfig):
    max_epochs: int = 30
    warmup_epochs: float = 1.0
    threads: int = 0  # all cores: full training runs one model per process
    devices: int | str = 1  # accelerators (or processes on CPU) per node; "auto" for all
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | ...
    sync_batchnorm: bool = False  # batch statistics across devices (with ddp)
    compile: bool = False  # torch.compile the model for training (the export is the plain module)
    ema: bool = False
    ema_decay: float = 0.999
    seed: int = 0
    progress: bool = True


@dataclass
class TrainConfig:
    genotype: str = ""
    resolution: int | None = None
    ckpt_path: str | None = None
    export: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @classmethod
    def from_container(cls, data: dict[str, Any]) -> TrainConfig:
        if not data.get("genotype"):
            raise ConfigError("no genotype given: add +genotype=<path to genotype.yaml or a "
                              "genotype string>")
        cfg = _build(cls, data, "")
        t = cfg.trainer
        _positive("trainer.max_epochs", t.max_epochs)
        _positive("trainer.batch_size", t.batch_size)
        _choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
        _choice("trainer.schedule", t.schedule, SCHEDULES)
        _choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
        cfg.data.validate()
        _positive("trainer.seed", t.seed, minimum=0)
        t.validate_device("trainer")
        _positive("trainer.num_nodes", t.num_nodes)
        if t.devices != "auto" and (isinstance(t.devices, str) or t.devices < 1):
            raise ConfigError(f"trainer.devices={t.devices!r} is not valid: an integer >= 1 or auto")
        _positive("trainer.threads", t.threads, minimum=0)
        if not t.lr > 0 or not 0 < t.ema_decay < 1:
            raise ConfigError(f"trainer.lr={t.lr}, trainer.ema_decay={t.ema_decay} are not valid: "
                              "trainer.lr must be positive and trainer.ema_decay in (0, 1)")
        if t.weight_decay < 0 or not 0 <= t.label_smoothing < 1 or t.warmup_epochs < 0:
            raise ConfigError("trainer.weight_decay and trainer.warmup_epochs must be >= 0 and "
                              "trainer.label_smoothing in [0, 1)")
        if cfg.resolution is not None:
            _in_range("resolution", cfg.resolution, 8, MAX_RESOLUTION)
        return cfg


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


MAX_RESOLUTION = 1024  # pixels; beyond this a batch of feature maps no longer fits in memory


def _in_range(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}={value} is not valid: must be an integer in [{low}, {high}]")


def _choice(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid: {', '.join(map(str, valid))}")


def _build(cls: type, data: Any, path: str) -> Any:
    """A dataclass from a dict, checking keys and scalar types."""
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {path + '.' if path else ''}{key}; valid: "
                              f"{', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{path}.{f.name}" if path else f.name
        kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        return _convert(args[-1], value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is not valid: expected a list, e.g. [1, 2]")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} is not valid: expected a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not valid: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is not valid: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} is not valid: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is not valid: expected a string")
        return value
    return value
