"""How a candidate is scored: proxy training, a trained supernet's inherited weights, or a
zero-cost score, behind one small interface.

`ProxyData` holds the proxy's data (one data module per proxy resolution, built once); an
`Evaluator` turns a genotype and a seed into an `Evaluation` and says what it can do
(`measures`: an accuracy or a score; `reports_epochs`: whether a pruner can stop it early;
`space_only`: whether it can score only genotypes of the searched space).
`EVALUATORS` maps each `proxy.kind` to its class; `prepare` does, once per study and before
any worker fans out, what an evaluator needs first (a supernet file). The search loop asks
the evaluator's capabilities and never its kind.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from nas.arch.genotype import Genotype
from nas.arch.space import SearchSpace
from nas.common.config import ZERO_COST, ProxyConfig, SearchConfig
from nas.model.builder import build_model
from nas.training.data import ImageDataModule, datamodule_for

__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "ProxyData", "ProxyTraining", "SupernetScore",
           "ZeroCostScore", "make_evaluator", "prepare"]

log = logging.getLogger(__name__)


def torch_device(accelerator: str, devices: int | list[int] = 1) -> torch.device:
    """The torch device Lightning's `accelerator` setting trains on, for work done outside
    a Trainer (zero-cost scores): an accelerator when asked for or found, else the CPU."""
    index = devices[0] if isinstance(devices, list) and devices else 0
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", index)
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class ProxyData:
    """The proxy's data: one data module per proxy resolution, loaded and checked once."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace):
        self.cfg, self.proxy, self.space = cfg, cfg.proxy, space
        self._modules: dict[int, ImageDataModule] = {}
        probe = self.at(self.proxy.resolution)  # reads (and checks) the data now
        self.num_classes, self.in_channels = probe.num_classes, probe.in_channels

    def at(self, resolution: int) -> ImageDataModule:
        if resolution not in self._modules:
            dm = datamodule_for(self.cfg.data, resolution, self.proxy.batch_size, self.proxy.subset)
            dm.setup()
            self._modules[resolution] = dm
        return self._modules[resolution]

    def for_genotype(self, g: Genotype) -> ImageDataModule:
        return self.at(self.proxy.resolution_for(g.resolution, self.space.reference.resolution))

    def stand_in(self, g: Genotype) -> torch.nn.Module:
        """The network the proxy trains for `g`: its width scaled by `proxy.width_scale`."""
        return build_model(replace(g, width=g.width * self.proxy.width_scale), self.num_classes,
                           self.in_channels)


@dataclass
class Evaluation:
    value: float  # validation accuracy, or a zero-cost score
    history: list[dict] = field(default_factory=list)
    pruned_at: int | None = None
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        """The value, read as what a training evaluator returns: the validation accuracy."""
        return self.value


Report = Callable[[int, float], bool]  # (epoch, value) -> stop now?


class Evaluator:
    """Scores a genotype; `name` is its `proxy.kind`.

    `stop()`, when given, is called often during long work (before every training batch) and
    raises to end it at once: how a worker asked to stop ends its trial promptly.
    """

    name = "train"
    measures = "accuracy"  # the value is a validation accuracy ("accuracy") or a "score"
    reports_epochs = True  # calls report(epoch, value) as it goes, so a pruner can stop it
    space_only = False  # scores genotypes of the space only (a supernet's subnets), not any network

    def __call__(self, g: Genotype, seed: int, report: Report | None = None,
                 on_epoch: Callable[[dict], None] | None = None,
                 stop: Callable[[], None] | None = None) -> Evaluation:
        raise NotImplementedError


class ProxyTraining(Evaluator):
    """A short Lightning training; the value is the last validation accuracy."""

    def __init__(self, data: ProxyData, proxy: ProxyConfig, devices: int | list[int] = 1):
        # Lightning is imported here, once the input has been accepted and before any trial's
        # W&B run: W&B reports each new import to its service, so an import inside a run fails
        # (ConnectionResetError) once a cancelled job's signal has ended that service.
        from nas.training.proxy import train_proxy

        self.data, self.proxy, self.devices, self._train = data, proxy, devices, train_proxy

    def __call__(self, g, seed, report=None, on_epoch=None, stop=None) -> Evaluation:
        p = self.proxy
        torch.manual_seed(seed)  # initial weights from the trial's seed, not the process's history
        model = self.data.stand_in(g)
        result = self._train(model, self.data.for_genotype(g), p.epochs, report=report, on_epoch=on_epoch,
                             seed=seed, stop=stop, deterministic=p.deterministic, accelerator=p.accelerator,
                             devices=self.devices, precision=p.precision, channels_last=p.channels_last,
                             optimizer=p.optimizer, lr=p.lr, momentum=p.momentum,
                             weight_decay=p.weight_decay, schedule=p.schedule,
                             warmup_epochs=p.warmup_epochs, label_smoothing=p.label_smoothing,
                             bn_recalibration=p.bn_recalibration)
        return Evaluation(result.accuracy, result.history, result.pruned_at, result.seconds)


class ZeroCostScore(Evaluator):
    """A zero-cost score of the untrained stand-in on one fixed training mini-batch."""

    measures = "score"
    reports_epochs = False

    def __init__(self, name: str, data: ProxyData, proxy: ProxyConfig, seed: int):
        self.name, self.data, self.proxy, self.seed = name, data, proxy, seed

    def __call__(self, g, seed=None, report=None, on_epoch=None, stop=None) -> Evaluation:
        from nas.model import zero_cost

        start = time.perf_counter()
        x, y = self.data.for_genotype(g).sample_batch(self.proxy.zero_cost_batch)
        # One seed for the initial weights and any dropout draws, whatever ran before: the
        # same genotype always gets the same score.
        torch.manual_seed(self.seed)
        device = torch_device(self.proxy.accelerator, self.proxy.devices)
        value = zero_cost.score(self.name, self.data.stand_in(g).to(device), x, y)
        value = value if math.isfinite(value) else -1e30  # e.g. naswot's log det of a singular kernel
        return Evaluation(value, seconds=time.perf_counter() - start)


def worker_devices(cfg: SearchConfig) -> int | list[int]:
    """The devices a worker's trials train on: with several GPUs visible (CUDA_VISIBLE_DEVICES
    is respected), worker i takes GPU (i // workers_per_gpu) mod n, so a machine's workers
    spread over its GPUs, `workers_per_gpu` of them on each."""
    p = cfg.proxy
    gpus = torch.cuda.device_count() if p.accelerator in ("auto", "gpu", "cuda") else 0
    if cfg.worker is None or gpus < 2 or p.devices != 1:
        return p.devices
    return [(cfg.worker // cfg.workers_per_gpu) % gpus]


class SupernetScore(Evaluator):
    """Inherited weights: the candidate's subnet extracted from a trained supernet, its BN
    statistics re-estimated on a fixed set of training images, its validation accuracy."""

    name = "supernet"
    reports_epochs = False
    space_only = True

    def __init__(self, data: ProxyData, cfg: SearchConfig):
        self.data, self.cfg = data, cfg
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from nas.training.supernet import data_identity, load_supernet

            net, meta = load_supernet(self.cfg.proxy.supernet, self.data.space, data_identity(self.cfg.data))
            device = torch_device(self.cfg.proxy.accelerator, self.cfg.proxy.devices)
            dm = self.data.at(meta.top_resolution(self.data.space))
            val = meta.val_images(dm, self.cfg.proxy.val_images)
            self._loaded = (net.to(device).eval(), meta, val, meta.bn_images(dm), device)
        return self._loaded

    def __call__(self, g, seed=None, report=None, on_epoch=None, stop=None) -> Evaluation:
        from nas.training.supernet import score_subnet

        start = time.perf_counter()
        net, meta, val, batches, device = self._load()
        if stop is not None:
            stop()
        acc = score_subnet(net, g, meta.resolution(g, self.data.space), batches, val, device)
        return Evaluation(acc, seconds=time.perf_counter() - start)


EVALUATORS: dict[str, type[Evaluator]] = {"train": ProxyTraining, "supernet": SupernetScore,
                                          **{name: ZeroCostScore for name in ZERO_COST}}


def prepare(cfg: SearchConfig, space: SearchSpace, shared_dir: Path) -> SearchConfig:
    """What the study's evaluator needs before any trial (and before workers fan out): for
    `proxy=supernet`, a supernet file. A missing one is trained here on a single machine (into
    `proxy.supernet`, or `<shared dir>/supernet.pt`); a worker of a multirun is refused, since
    every worker would train its own. Returns `cfg` with the file's absolute path."""
    if cfg.proxy.kind != "supernet":
        return cfg
    from nas.training.supernet import SupernetError, data_identity, load_supernet, train_supernet

    given = Path(cfg.proxy.supernet).expanduser() if cfg.proxy.supernet else shared_dir / "supernet.pt"
    path = given.absolute()
    if path.exists() and not path.is_file():
        what = "folder" if path.is_dir() else "special file"
        raise SupernetError(f"proxy.supernet={str(path)!r} is a {what}, not a supernet file: give the "
                            "supernet.pt that python -m nas.supernet train "
                            "wrote, or a path where none exists yet to train one there")
    if not path.is_file():
        if cfg.worker is not None:
            raise SupernetError(f"proxy.supernet={str(path)!r} does not exist, and the workers of a multirun "
                                "cannot each train one: train it first (python -m nas.supernet train "
                                f"+space={space.name} with the same data= settings), then pass "
                                "proxy.supernet=<its supernet.pt>")
        sn = cfg.supernet
        if sn.mflops is None and "mflops" in cfg.budget:  # train the part of the space searched
            sn = replace(sn, mflops=float(cfg.budget["mflops"]))
        log.info(f"proxy=supernet: no supernet at {path}; training one first"
                 + (f" (subnets within {sn.mflops:g} MFLOPs)" if sn.mflops is not None else ""))
        train_supernet(space, cfg.data, sn, cfg.wandb, path, shared_dir / "supernet")
    _, meta = load_supernet(path, space, data_identity(cfg.data))  # another space's or data's: refused now
    trained_within, searched = meta.recipe.get("mflops"), cfg.budget.get("mflops")
    if trained_within is not None and (searched is None or float(searched) > trained_within):
        log.warning(f"{path} trained only subnets within {trained_within:g} MFLOPs; this search's "
                    f"budget ({'none on MFLOPs' if searched is None else f'{float(searched):g} MFLOPs'}) "
                    "reaches subnets it never trained")
    if warning := meta.trust_warning():
        log.warning(warning)
    return replace(cfg, proxy=replace(cfg.proxy, supernet=str(path)))


def make_evaluator(name: str, data: ProxyData, cfg: SearchConfig) -> Evaluator:
    """The evaluator of `proxy.kind` `name` (a key of `EVALUATORS`)."""
    cls = EVALUATORS[name]
    if cls is ProxyTraining:
        return ProxyTraining(data, cfg.proxy, worker_devices(cfg))
    if cls is SupernetScore:
        return SupernetScore(data, cfg)
    return ZeroCostScore(name, data, cfg.proxy, cfg.seed)
