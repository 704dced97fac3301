"""Training the weight-sharing supernet, and scoring its subnets (the library behind
`python -m nas.supernet` and `proxy=supernet`).

One Lightning run: every step trains the largest subnet on the labels and, by the sandwich
rule (BigNAS, AttentiveNAS), the smallest and `random_subnets` random ones, each at its own
(proxy-scaled) resolution, learning the largest one's outputs (in-place distillation). The
first `largest_epochs` train the largest subnet alone, and `progressive` names genes held at
the teacher's value and made elastic one phase at a time (Once-for-All's progressive
shrinking): phases inside the same run.

A subnet is scored as a plain network: `extract` it, re-estimate its BN statistics on a few
training batches (the shared running statistics mix every subnet's), evaluate.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from nas.arch.genes import GenotypeError
from nas.arch.genotype import Genotype
from nas.arch.space import SearchSpace
from nas.errors import UserError
from nas.model.supernet import SuperNet, space_fingerprint
from nas.training.proxy import LightningData, make_optimizer, quiet_lightning

__all__ = [
    "FORMAT",
    "SupernetError",
    "SupernetFile",
    "SupernetModule",
    "agreement",
    "load_supernet",
    "pick_subnets",
    "recalibrate_bn",
    "reference_trainings",
    "resize",
    "sample_within",
    "score_subnet",
    "standalone_recipe",
    "teacher_within",
    "within",
]

log = logging.getLogger(__name__)

FORMAT = "nas-supernet/1"
_NO_DECAY = ("dwconv", "bn_weight", "bn_bias", "linear_bias")


class SupernetError(UserError):
    """A supernet file that cannot be used here."""


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """A batch at another resolution (the same resampling in training and in scoring)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Exact BN statistics of `model`'s weights: a cumulative average over `batches`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m in norms:
        m.momentum = 0.1
    model.eval()


@torch.no_grad()
def score_subnet(supernet: SuperNet, g: Genotype, resolution: int, train_batches: list[torch.Tensor],
                 val_loader: Iterable, device: torch.device | None = None) -> float:
    """Validation accuracy of subnet `g` with inherited weights and re-estimated BN statistics."""
    device = device or next(supernet.parameters()).device
    model = supernet.extract(g).to(device)
    recalibrate_bn(model, (resize(x.to(device), resolution) for x in train_batches))
    correct = total = 0
    for x, y in val_loader:
        logits = model(resize(x.to(device), resolution))
        correct += int((logits.argmax(1) == y.to(device)).sum())
        total += len(y)
    return correct / max(1, total)


@dataclass
class SupernetFile:
    """What a supernet file holds besides its tensors: what it was trained on."""

    space: str
    space_fingerprint: str
    data: dict[str, Any]
    recipe: dict[str, Any]
    num_classes: int
    in_channels: int
    epochs: int
    # The last epoch's validation accuracies (val_acc_largest, _smallest, _random and each
    # watched random subnet's); empty in files written before they were recorded.
    validation: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return f"space {self.space}, data {self.data.get('name')}, {self.epochs} epochs"

    def trust_warning(self) -> str | None:
        """A warning (one line, to log at WARNING) when the watched random subnets kept less
        than half of the largest one's accuracy above chance: the weights then serve the
        subnets trained on every step, and what a search scores is neither (None when they
        did, or were not watched)."""
        v, chance = self.validation, 1.0 / self.num_classes
        if "val_acc_random" not in v or "val_acc_largest" not in v:
            return None
        largest, random_ = v["val_acc_largest"], v["val_acc_random"]
        if random_ - chance >= 0.5 * (largest - chance):
            return None
        return (f"this supernet's random subnets score {100 * random_:.1f}% on average against "
                f"{100 * largest:.1f}% for its largest (chance {100 * chance:.1f}%): the candidates a search "
                "scores inherit little that works, so its ranking may be noise; measure it with python -m "
                "nas.supernet validate, or train it longer")

    def resolution(self, g: Genotype, space: SearchSpace) -> int:
        """The resolution subnet `g` was trained at, and is scored at."""
        return max(8, round(self.recipe["resolution"] * g.resolution / space.reference.resolution))

    def top_resolution(self, space: SearchSpace) -> int:
        """The largest subnet's resolution: the data are loaded at it and resized down."""
        return self.resolution(replace(space.reference, resolution=max(space.resolution)), space)

    def bn_images(self, datamodule: Any) -> list[torch.Tensor]:
        """The fixed training batches every scored subnet re-estimates its BN statistics on."""
        bs = self.recipe["batch_size"]
        return list(datamodule.sample_batch(self.recipe["bn_batches"] * bs)[0].split(bs))

    def val_images(self, datamodule: Any, n: int) -> Iterable:
        """What a subnet is scored on: `n` fixed validation images (in batches), or, for `n` 0,
        the whole validation split."""
        if n <= 0:
            return datamodule.val_dataloader()
        x, y = datamodule.val_sample(n)
        bs = self.recipe["batch_size"]
        return list(zip(x.split(bs), y.split(bs), strict=True))


def data_identity(data: Any) -> dict[str, Any]:
    """The settings that make a dataset (a supernet trained on one is refused for another)."""
    from dataclasses import asdict

    from nas.common.config import CLUTTERED_ONLY

    d = asdict(data)
    keep = ["name", "root", "seed", "val_fraction", "test_fraction", "grayscale", "augment"]
    if d["name"] == "cluttered_digits":
        keep += list(CLUTTERED_ONLY)
    return {k: d[k] for k in keep}


def save_supernet(path: Path, net: SuperNet, meta: SupernetFile) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "meta": meta.__dict__, "state_dict": net.state_dict()}, tmp)
    tmp.replace(path)  # a reader never sees half a file


def load_supernet(path: str | Path, space: SearchSpace, data: dict[str, Any] | None = None,
                  key: str = "proxy.supernet") -> tuple[SuperNet, SupernetFile]:
    """The supernet in `path` (given as `key`), refused in one line when it was trained for
    another space or on other data than `data` (a `data_identity`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SupernetError(f"{key}={str(path)!r} does not exist: train one with python -m "
                            f"nas.supernet train +space={space.name} (same data= settings)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise SupernetError(f"{str(path)!r} is not a supernet file ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SupernetError(f"{str(path)!r} is not a supernet file (format {FORMAT} expected)")
    meta = SupernetFile(**payload["meta"])
    if meta.space != space.name or meta.space_fingerprint != space_fingerprint(space):
        raise SupernetError(f"{str(path)!r} was trained for space {meta.space} with other choices "
                            f"({meta.space_fingerprint}), not for {space.name} as chosen here "
                            f"({space_fingerprint(space)}); train one for this space")
    if data is not None and json.dumps(meta.data, sort_keys=True) != json.dumps(data, sort_keys=True):
        if meta.data.get("name") != data.get("name"):  # the other dataset's own keys would only add noise
            differ = ["name"]
        else:
            differ = sorted(k for k in set(meta.data) | set(data) if meta.data.get(k) != data.get(k))
        stored = ", ".join(f"data.{k}={meta.data.get(k)!r}" for k in differ)
        asked = ", ".join(f"data.{k}={data.get(k)!r}" for k in differ)
        raise SupernetError(f"{str(path)!r} was trained on other data ({stored}, not {asked}); use the same "
                            "data= settings or train a supernet on these")
    net = SuperNet(space, meta.num_classes, meta.in_channels, meta.recipe.get("unshared", ()))
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise SupernetError(f"{str(path)!r} does not hold the tensors its recipe names (truncated or "
                            "altered); train it again") from None
    return net, meta


def within(g: Genotype, max_mflops: float | None, num_classes: int, in_channels: int) -> bool:
    """Whether `g` (at its own resolution) costs at most `max_mflops`; any does when None."""
    from nas.arch.cost import cost

    return max_mflops is None or cost(g, num_classes, in_channels).mflops <= max_mflops


def sample_within(space: SearchSpace, rng: random.Random, max_mflops: float | None,
                  num_classes: int, in_channels: int, tries: int = 10_000) -> Genotype:
    """A random genotype of `space` within `max_mflops` (at its own resolution; any when None)."""
    for _ in range(tries):
        g = space.sample(rng)
        if within(g, max_mflops, num_classes, in_channels):
            return g
    raise ValueError(f"no genotype of {space.name} within {max_mflops:g} MFLOPs in {tries} draws")


def teacher_within(space: SearchSpace, max_mflops: float | None, num_classes: int, in_channels: int,
                   draws: int = 2_000) -> Genotype:
    """The sandwich rule's largest subnet: the space's largest when it fits `max_mflops`, else
    the one with the most MACs of `draws` random genotypes within it (fixed draws), each given
    the largest one's activations, placements and shortcuts where those keep it in the space
    and the budget (a teacher of the budget's size, trained like the largest)."""
    from nas.arch.cost import cost

    largest = space.extreme(True)
    if within(largest, max_mflops, num_classes, in_channels):
        return largest
    rng, best, best_macs = random.Random(0), None, -1
    for _ in range(draws):
        g = sample_within(space, rng, max_mflops, num_classes, in_channels)
        for i, big in enumerate(largest.stages):
            if g.stages[i].block != big.block:
                continue
            for style in (dict(act=big.act, place=big.place, residual=big.residual),
                          dict(act=big.act, place=big.place)):
                stages = list(g.stages)
                stages[i] = replace(stages[i], **style)
                try:
                    styled = replace(g, stages=tuple(stages))
                except GenotypeError:  # e.g. a shortcut this stage's shapes do not allow
                    continue
                if space.contains(styled) and within(styled, max_mflops, num_classes, in_channels):
                    g = styled
                    break
        macs = cost(g, num_classes, in_channels).macs
        if macs > best_macs:
            best, best_macs = g, macs
    return best


class SupernetModule(pl.LightningModule):
    """The sandwich rule with in-place distillation, over one `SuperNet`; with `max_mflops`,
    every subnet it trains is within that budget (AttentiveNAS's budget-aware sampling: the
    weights are spent on the subnets a search within it will score)."""

    def __init__(self, supernet: SuperNet, resolution_for: Callable[[Genotype], int], *,
                 max_mflops: float | None = None, random_subnets: int = 2, distill: bool = True,
                 largest_epochs: int = 0, epochs: int = 0, progressive: tuple[tuple[str, ...], ...] = (),
                 seed: int = 0, bn_batches: int = 10, optimizer: str = "sgd", lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 4e-5, schedule: str = "cosine",
                 warmup_epochs: float = 0.0, label_smoothing: float = 0.1, val_random: int = 0):
        super().__init__()
        self.supernet, self.resolution_for = supernet, resolution_for
        self.random_subnets, self.distill, self.largest_epochs = random_subnets, distill, largest_epochs
        self.seed, self.bn_batches = seed, bn_batches
        self.recipe = dict(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           schedule=schedule, warmup_epochs=warmup_epochs)
        self.label_smoothing = label_smoothing
        space, self.max_mflops = supernet.space, max_mflops
        self.largest = teacher_within(space, max_mflops, supernet.num_classes, supernet.in_channels)
        self.smallest = space.extreme(False)
        # Progressive shrinking (Once-for-All): the sandwich epochs in len(progressive) + 1
        # phases; phase j draws from the space with the genes of groups j.. held at the
        # teacher's value (the last phase: the whole space).
        self.epochs, self.progressive = epochs, tuple(tuple(group) for group in progressive)
        self._phases: list[tuple[SearchSpace, Genotype, tuple[str, ...]]] = []  # space, smallest, held
        for j in range(len(self.progressive)):
            held = tuple(gene for group in self.progressive[j:] for gene in group)
            narrowed = space.fixed_at(self.largest, held)
            self._phases.append((narrowed, narrowed.extreme(False), held))
        self._phases.append((space, self.smallest, ()))
        # Fixed random subnets scored every epoch beside the two the sandwich rule trains on
        # every step: what a search scores is neither, and may inherit nothing that works.
        rng = random.Random(7_919 + seed)
        self.watched = [sample_within(space, rng, max_mflops, supernet.num_classes, supernet.in_channels)
                        for _ in range(val_random)]
        self._scored: dict[str, nn.Module] = {}

    def subnets(self) -> list[Genotype]:
        """This step's subnets: the largest first (the teacher), then the smallest and random
        ones, drawn from (seed, step) so a resumed run draws what the first would have."""
        if self.current_epoch < self.largest_epochs:
            return [self.largest]
        space, smallest, _ = self._phases[self.phase(self.current_epoch)]
        rng = random.Random(self.seed * 1_000_003 + self.global_step)
        net = self.supernet
        others = [sample_within(space, rng, self.max_mflops, net.num_classes, net.in_channels)
                  for _ in range(self.random_subnets)]
        return [self.largest, smallest, *others]

    def phase(self, epoch: int) -> int:
        """The progressive-shrinking phase of a sandwich epoch: 0 .. len(progressive), an equal
        share of the epochs after `largest_epochs` each (the last phase: every gene elastic)."""
        if not self.progressive:
            return 0
        sandwich = max(1, self.epochs - self.largest_epochs)
        phases = len(self.progressive) + 1
        return min(phases - 1, (epoch - self.largest_epochs) * phases // sandwich)

    def phase_label(self, epoch: int) -> str:
        """' (largest only)', ' (phase j/J: genes elastic)' or '' for an epoch's line."""
        if epoch < self.largest_epochs:
            return " (largest only)"
        if not self.progressive:
            return ""
        j = self.phase(epoch)
        held = self._phases[j][2]
        note = f"held at the teacher's: {', '.join(sorted(held))}" if held else "every gene elastic"
        return f" (phase {j + 1}/{len(self._phases)}, {note})"

    def training_step(self, batch, batch_idx):
        x, y = batch
        total, teacher, losses = 0.0, None, []
        subnets = self.subnets()
        for g in subnets:
            logits = self.supernet(resize(x, self.resolution_for(g)), g)
            if teacher is None or not self.distill:
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
                if teacher is None:
                    teacher = logits.detach()
            else:
                loss = F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher, 1), reduction="batchmean")
            losses.append(loss.detach())
            total = total + loss
        # Each role's own loss (the smallest and the random ones: their distillation loss):
        # a random subnets' loss that stays high says the shared weights serve only the two
        # extremes.
        roles = [("largest", losses[:1]), ("smallest", losses[1:2]), ("random", losses[2:])]
        for role, part in roles:
            if part:
                self.log(f"train_loss_{role}", torch.stack(part).mean(), on_step=False, on_epoch=True,
                         batch_size=len(y), sync_dist=True)
        # The mean over the subnets: the shared weights get one network's step size, whatever
        # the number of subnets (their sum diverged at the proxy's learning rate).
        total = total / len(subnets)
        self.log("train_loss", total, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return total

    # ----- validation: the largest, the smallest and the watched random subnets, each scored
    # as a search scores a candidate ----
    def _validated(self) -> list[tuple[str, Genotype]]:
        return [("largest", self.largest), ("smallest", self.smallest),
                *((f"random_{i}", g) for i, g in enumerate(self.watched))]

    def on_validation_epoch_start(self) -> None:
        # On a fork of the random state: what is validated (a loader's shuffle, the extracted
        # networks' initial weights) draws nothing the training steps would draw.
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            loader = self.trainer.datamodule.train_dataloader()
            batches = []
            for i, (x, _) in enumerate(loader):
                if i >= self.bn_batches:
                    break
                batches.append(x.to(self.device))
            self._scored = {}
            for name, g in self._validated():
                model = self.supernet.extract(g).to(self.device)
                recalibrate_bn(model, (resize(x, self.resolution_for(g)) for x in batches))
                self._scored[name] = model

    def validation_step(self, batch, batch_idx):
        x, y = batch
        watched = []
        for name, g in self._validated():
            with torch.no_grad():
                logits = self._scored[name](resize(x, self.resolution_for(g)))
            acc = (logits.argmax(1) == y).float().mean()
            self.log(f"val_acc_{name}", acc, on_epoch=True, batch_size=len(y), sync_dist=True)
            if name.startswith("random_"):
                watched.append(acc)
        if watched:  # per batch the mean over the subnets, so the epoch's is the mean of theirs
            self.log("val_acc_random", torch.stack(watched).mean(), on_epoch=True, batch_size=len(y),
                     sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._scored = {}

    def configure_optimizers(self):
        decay, no_decay = [], []
        for key, p in self.supernet.weights.items():
            (no_decay if self.supernet.kind(key) in _NO_DECAY else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.recipe["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        recipe = {k: v for k, v in self.recipe.items() if k != "weight_decay"}
        return make_optimizer(groups, self.trainer, **recipe)


class _EpochLine(pl.Callback):
    """One line per epoch (with the progress bar off) and the epoch's row to W&B."""

    def __init__(self, tracker, progress: bool, epochs: int):
        self.tracker, self.progress, self.epochs = tracker, progress, epochs
        self._start = 0.0

    def on_train_epoch_start(self, trainer, module):
        import time

        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        # After the epoch's validation (Lightning runs it before this hook): both are known.
        import time

        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "seconds": time.perf_counter() - self._start, **m}
        self.tracker.log_epoch(row)
        phase = module.phase_label(trainer.current_epoch)
        nan = float("nan")
        log.info(f"epoch {trainer.current_epoch + 1}/{self.epochs}{phase}: val acc largest "
                 f"{m.get('val_acc_largest', nan):.4f}, smallest {m.get('val_acc_smallest', nan):.4f}"
                 f"{watched_line(m, len(module.watched))}, train loss {m.get('train_loss', nan):.3f} "
                 f"({row['seconds']:.0f} s)")


def watched_line(metrics: dict[str, float], n: int) -> str:
    """', N random subnets: mean (min-max)' of the watched random subnets' accuracies."""
    accs = [metrics[f"val_acc_random_{i}"] for i in range(n) if f"val_acc_random_{i}" in metrics]
    if not accs:
        return ""
    return f", {len(accs)} random {sum(accs) / len(accs):.4f} ({min(accs):.4f}-{max(accs):.4f})"


def train_supernet(space: SearchSpace, data: Any, cfg: Any, wandb: Any, path: Path, run_dir: Path,
                   on_accept: Callable[[], None] | None = None) -> SupernetFile:
    """Train (or resume, or find finished) the supernet of `space` on `data` with the
    `SupernetConfig` `cfg`; writes it to `path` and returns what it records."""
    from dataclasses import asdict

    from nas.common.tracking import Tracker
    from nas.training.data import datamodule_for
    from nas.training.train import claim_run_dir

    ident = data_identity(data)
    recipe = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in (
        "progress", "threads", "accelerator", "devices", "strategy", "channels_last", "val_random")}))
    if recipe.get("mflops") is None:  # the whole space: recorded as before the key existed
        recipe.pop("mflops", None)
    if not recipe.get("unshared"):  # every gene shared (the block types' own aside): as before
        recipe.pop("unshared", None)
    if not recipe.get("progressive"):  # every gene elastic from the start: as before
        recipe.pop("progressive", None)
    # A run directory holds one supernet; more epochs later resume it (the file records them).
    identity = {"space": space.name, "space_fingerprint": space_fingerprint(space), "data": ident,
                "recipe": {k: v for k, v in recipe.items() if k != "epochs"}}
    stored = _stored_supernet(path, space, ident, recipe)
    claim_run_dir(run_dir, json.loads(json.dumps(identity)))
    if on_accept is not None:
        on_accept()
    if stored is not None and stored.recipe == recipe:
        log.info(f"{path} already holds this supernet ({stored.describe()}); delete it to train again")
        return stored
    ref = space.reference.resolution
    top = cfg.resolution_for(max(space.resolution), ref)
    dm = datamodule_for(data, top, cfg.batch_size)
    dm.check()
    dm.setup()
    if cfg.threads > 0 and cfg.on_cpu():
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, verbose=False)
    net = SuperNet(space, dm.num_classes, dm.in_channels, cfg.unshared)
    last = run_dir / "checkpoints" / "last.ckpt"
    n_params = sum(p.numel() for p in net.parameters())
    log.info(f"supernet of {space.name}: {n_params / 1e6:.2f} M shared parameters, {cfg.epochs} epochs on "
             f"{data.name} (largest subnet at {top} px, {2 + cfg.random_subnets} subnets per step); run "
             f"directory {run_dir}" + (f"; resuming from {last}" if last.is_file() else "")
             + (f"; own weights per choice of {', '.join(cfg.unshared)}" if cfg.unshared else ""))
    from pytorch_lightning.utilities import rank_zero_only

    mode = wandb.mode if rank_zero_only.rank == 0 else "disabled"
    tracker = Tracker(mode, wandb.project, wandb.entity, f"supernet-{space.name}", run_dir)
    tracker.start_run(f"supernet-{space.name}-{data.name}", "supernet",
                      {**identity, "params_m": n_params / 1e6})
    try:
        trainer = _fit(_module(net, cfg, ref), dm, cfg, run_dir, tracker)
    finally:
        tracker.close()
    meta = SupernetFile(space=space.name, space_fingerprint=space_fingerprint(space), data=ident,
                        recipe=recipe, num_classes=dm.num_classes, in_channels=dm.in_channels,
                        epochs=trainer.current_epoch,
                        validation={k: float(v) for k, v in trainer.callback_metrics.items()
                                    if k.startswith("val_acc_")})
    if trainer.is_global_zero:
        _save(path, net, meta, trainer)
    return meta


def _stored_supernet(path: Path, space: SearchSpace, ident: dict[str, Any],
                     recipe: dict[str, Any]) -> SupernetFile | None:
    """What `path` records of the supernet it already holds (None when there is no file). A
    `SupernetError` when it holds something this training would overwrite at its end: another
    file, or a supernet of another space, data or recipe (more epochs continue one)."""
    if not path.exists():
        return None
    keep = "this training would overwrite it: give another out= or move the file"
    if not path.is_file():
        raise SupernetError(f"out={str(path)!r} is a folder, not a file to write the supernet to")
    try:
        _, meta = load_supernet(path, space, ident, key="out")
    except SupernetError as err:
        raise SupernetError(f"{err}; {keep}") from None
    other = sorted(k for k in set(meta.recipe) | set(recipe)
                   if k != "epochs" and meta.recipe.get(k) != recipe.get(k))
    if other:
        stored = ", ".join(f"supernet.{k}={meta.recipe.get(k)!r}" for k in other)
        asked = ", ".join(f"supernet.{k}={recipe.get(k)!r}" for k in other)
        raise SupernetError(f"out={str(path)!r} holds a supernet trained with {stored}, not {asked}; {keep}")
    return meta


def _module(net: SuperNet, cfg: Any, ref: int) -> SupernetModule:
    return SupernetModule(net, lambda g: cfg.resolution_for(g.resolution, ref), max_mflops=cfg.mflops,
                          random_subnets=cfg.random_subnets, distill=cfg.distill,
                          largest_epochs=cfg.largest_epochs, epochs=cfg.epochs,
                          progressive=cfg.phases(), seed=cfg.seed, bn_batches=cfg.bn_batches,
                          optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                          warmup_epochs=cfg.warmup_epochs, label_smoothing=cfg.label_smoothing,
                          val_random=cfg.val_random)


def _fit(module: SupernetModule, dm: Any, cfg: Any, run_dir: Path, tracker: Any) -> pl.Trainer:
    """Lightning's fit, resumed from the run directory's last checkpoint when there is one."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    strategy = "ddp_find_unused_parameters_true" if cfg.strategy == "ddp" else cfg.strategy
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}",
                                              auto_insert_metric_name=False, save_last=True,
                                              every_n_epochs=1, save_top_k=1),
                 _EpochLine(tracker, cfg.progress, cfg.epochs)]
    with quiet_lightning():
        trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
                             strategy=strategy, precision=cfg.precision, logger=False,
                             callbacks=callbacks, enable_progress_bar=cfg.progress,
                             enable_model_summary=False, deterministic=cfg.deterministic,
                             num_sanity_val_steps=0, default_root_dir=str(run_dir),
                             use_distributed_sampler=True)
        trainer.fit(module, datamodule=LightningData(dm), ckpt_path=str(last) if last.is_file() else None)
    return trainer


def _save(path: Path, net: SuperNet, meta: SupernetFile, trainer: pl.Trainer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_supernet(path, net.to("cpu"), meta)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info(f"supernet written to {path}: val acc largest {m.get('val_acc_largest', float('nan')):.4f}, "
             f"smallest {m.get('val_acc_smallest', float('nan')):.4f}"
             f"{watched_line(m, len(trainer.lightning_module.watched))}")


def pick_subnets(space: SearchSpace, n: int, seed: int, max_mflops: float | None = None,
                 num_classes: int = 10, in_channels: int = 3) -> list[Genotype]:
    """`n` distinct random genotypes of `space` drawn with `seed`, each within `max_mflops`
    (at its own resolution, for `num_classes` and `in_channels`) when given."""
    from nas.common.config import ConfigError

    rng = random.Random(seed)
    picked: dict[str, Genotype] = {}
    for _ in range(200 * n):
        g = space.sample(rng)
        if within(g, max_mflops, num_classes, in_channels):
            picked.setdefault(str(g), g)
        if len(picked) == n:
            return list(picked.values())
    raise ConfigError(f"validate.mflops={max_mflops} is not valid: only {len(picked)} of {200 * n} random "
                      f"genotypes of {space.name} fit it, {n} are needed (raise it)")


def standalone_recipe(cfg: Any) -> dict[str, Any]:
    """`train_proxy`'s keyword arguments for the recipe of `cfg` (a SupernetConfig): the
    stand-alone trainings a supernet's ranking is measured against."""
    return dict(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, label_smoothing=cfg.label_smoothing,
                bn_recalibration=cfg.bn_batches, deterministic=cfg.deterministic,
                accelerator=cfg.accelerator, precision=cfg.precision)


def reference_trainings(g: Genotype, datamodule: Any, runs: Iterable[tuple[str, int]],
                        recipe: dict[str, Any], seed: int) -> dict[str, float]:
    """`g` trained from scratch on `datamodule` (set up) for each `(key, epochs)` of `runs`, with
    `standalone_recipe`'s `recipe`: {key: validation accuracy, key_s: seconds}."""
    import time

    from nas.model.builder import build_model
    from nas.training.proxy import train_proxy

    out: dict[str, float] = {}
    for key, epochs in runs:
        torch.manual_seed(seed)
        model = build_model(g, datamodule.num_classes, datamodule.in_channels)
        t0 = time.perf_counter()
        out[key] = train_proxy(model, datamodule, epochs, seed=seed, **recipe).accuracy
        out[f"{key}_s"] = time.perf_counter() - t0
    return out


def agreement(rows: list[dict[str, Any]], key: str, truth: str = "standalone",
              seed: int = 0) -> dict[str, Any]:
    """Kendall tau and Spearman rho of `rows[*][key]` against `rows[*][truth]`, with 90%
    bootstrap intervals."""
    from nas.common.stats import bootstrap, kendall, spearman

    values, target = [r[key] for r in rows], [r[truth] for r in rows]
    return {"kendall_tau": kendall(values, target),
            "tau_interval": list(bootstrap(values, target, kendall, seed=seed)),
            "spearman_rho": spearman(values, target),
            "rho_interval": list(bootstrap(values, target, spearman, seed=seed))}


def validate_supernet(space: SearchSpace, data: Any, cfg: Any, vcfg: Any, path: Path, run_dir: Path,
                      on_accept: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train `vcfg.n` random subnets (within `vcfg.mflops`) stand-alone (`vcfg.epochs`, the `cfg`
    recipe) and with the short proxy (`vcfg.proxy_epochs`), score them with the supernet in
    `path`, and report the rank agreement of each evaluator with the stand-alone accuracy and
    the seconds each took (written to validate.json)."""
    import time

    from nas.training.data import datamodule_for
    from nas.training.train import write_json

    net, meta = load_supernet(path, space, data_identity(data), key="out")
    picked = pick_subnets(space, vcfg.n, vcfg.seed, vcfg.mflops, meta.num_classes, meta.in_channels)
    if on_accept is not None:
        on_accept()
    net.eval()
    if cfg.threads > 0 and cfg.on_cpu():
        torch.set_num_threads(cfg.threads)
    bs = meta.recipe["batch_size"]
    dm_top = datamodule_for(data, meta.top_resolution(space), bs)
    dm_top.setup()
    bn_images = meta.bn_images(dm_top)
    recipe = standalone_recipe(cfg)
    budget = f" within {vcfg.mflops:g} MFLOPs" if vcfg.mflops is not None else ""
    log.info(f"validating {path} on {vcfg.n} random subnets of {space.name}{budget}: supernet score, a "
             f"{vcfg.proxy_epochs}-epoch proxy and a {vcfg.epochs}-epoch stand-alone training each")
    rows, start = [], time.perf_counter()
    for i, g in enumerate(picked):
        res = meta.resolution(g, space)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"genotype": str(g), "resolution": res,
                               "supernet": score_subnet(net, g, res, bn_images, dm_top.val_dataloader())}
        row["supernet_s"] = time.perf_counter() - t0
        dm = datamodule_for(data, res, bs)
        dm.setup()
        row.update(reference_trainings(g, dm, (("proxy", vcfg.proxy_epochs), ("standalone", vcfg.epochs)),
                                       recipe, vcfg.seed + i))
        rows.append(row)
        log.info(f"[{time.perf_counter() - start:6.0f}s] {i + 1}/{vcfg.n}: supernet {row['supernet']:.4f} "
                 f"({row['supernet_s']:.1f}s), proxy {row['proxy']:.4f} ({row['proxy_s']:.0f}s), stand-alone "
                 f"{row['standalone']:.4f}")
    result: dict[str, Any] = {"supernet_file": str(path), "n": vcfg.n, "mflops": vcfg.mflops,
                              "epochs": vcfg.epochs, "proxy_epochs": vcfg.proxy_epochs, "rows": rows}
    log.info(f"\nagreement with the {vcfg.epochs}-epoch stand-alone accuracy ({vcfg.n} subnets; 90% "
             "bootstrap intervals):")
    for key in ("supernet", "proxy"):
        result[key] = a = agreement(rows, key, seed=vcfg.seed)
        seconds = sum(r[f"{key}_s"] for r in rows) / len(rows)
        label = "supernet (inherited weights)" if key == "supernet" else f"{vcfg.proxy_epochs}-epoch proxy"
        log.info(f"  {label:30} Kendall tau {a['kendall_tau']:+.3f} [{a['tau_interval'][0]:+.2f}, "
                 f"{a['tau_interval'][1]:+.2f}]   Spearman rho {a['spearman_rho']:+.3f} "
                 f"[{a['rho_interval'][0]:+.2f}, {a['rho_interval'][1]:+.2f}]   {seconds:.1f} s per subnet")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "validate.json", result)
    log.info(f"written to {run_dir / 'validate.json'}")
    return result
