"""The search loop: propose a genotype, check its budget, train it briefly, record it.

`Searcher.objective` is what each Optuna trial runs:
1. the space decodes the trial into a genotype (the only place `suggest_*` is called);
2. params and MFLOPs come from the analytic cost model and are stored on the trial;
3. a genotype over any budget is rejected in milliseconds: recorded as PRUNED with the
   reason and its costs, and the sampler is told through `trial.set_constraint`;
4. a genotype seen before reuses the earlier result;
5. otherwise it is trained with the proxy, reporting each epoch to the pruner.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from nas.builder import build_model
from nas.config import SearchConfig
from nas.cost import Cost, cost
from nas.data import ArrayDataModule, make_datamodule
from nas.errors import UserError
from nas.genotype import Genotype
from nas.proxy import train_proxy
from nas.report import counts, ranked
from nas.space import SearchSpace
from nas.study import Beat, fail_dead_workers, trained_count, worker_id
from nas.tracking import Tracker

FAILURES_IN_A_ROW = 5  # trials failing one after another: the cause is not the genotype
MEASURED_REJECTIONS = 50  # proposals timed one by one (~1 s each) before giving up on a budget


class Terminated(Exception):
    """The process was asked to stop (SIGTERM, Ctrl-C) while the search ran."""


class BudgetError(UserError):
    """A budget that no genotype of the space can meet."""


def budget_violations(c: Cost, budget: dict[str, float], latency_ms: float | None = None) -> dict[str, float]:
    """Amount by which each budget is exceeded (<= 0 means within budget)."""
    measured = {"mflops": c.mflops, "params_m": c.params_m, "latency_ms": latency_ms}
    return {k: measured[k] - float(v) for k, v in budget.items() if measured[k] is not None}


def scaled_reference(space: SearchSpace, budget: dict[str, float], num_classes: int,
                     in_channels: int) -> Genotype | None:
    """The space's reference network at the largest width multiplier that fits the budget."""
    for step in range(140, 4, -1):
        width = step / 100
        g = replace(space.reference, width=width)
        c = cost(g, num_classes, in_channels)
        if all(v <= 0 for v in budget_violations(c, budget).values()):
            return g
    return None


class Searcher:
    def __init__(self, cfg: SearchConfig, space: SearchSpace, study: optuna.Study,
                 run_dir: Path, tracker: Tracker, out=sys.stdout):
        self.cfg, self.space, self.study = cfg, space, study
        self.run_dir, self.tracker, self.out = Path(run_dir), tracker, out
        self._data: dict[int, ArrayDataModule] = {}
        probe = self.datamodule(cfg.proxy.resolution)
        self.num_classes, self.in_channels = probe.num_classes, probe.in_channels
        self._seen: dict[str, int] = {}
        self.judge = None
        self.pareto = cfg.objective == "pareto"
        if "latency_ms" in cfg.budget or (self.pareto and cfg.pareto_cost == "latency_ms"):
            from nas.latency import Judge

            lat = cfg.latency
            self.judge = Judge(space, self.num_classes, self.in_channels, lat.lut, lat.dir,
                               device=lat.device, threads=lat.threads,
                               channels_last=lat.channels_last, warmup=lat.warmup,
                               repeats=lat.repeats)
        self.proposals = 0
        self.abort: str | None = None  # why the loop stopped early, when it did
        self.started = time.perf_counter()

    # ----- data -----------------------------------------------------------------------
    def datamodule(self, resolution: int) -> ArrayDataModule:
        if resolution not in self._data:
            d, p = self.cfg.data, self.cfg.proxy
            dm = make_datamodule(d.name, root=d.root, resolution=resolution,
                                 batch_size=p.batch_size, val_fraction=d.val_fraction,
                                 test_fraction=d.test_fraction, subset=p.subset, seed=d.seed,
                                 augment=d.augment, grayscale=d.grayscale)
            dm.setup()
            self._data[resolution] = dm
        return self._data[resolution]

    def proxy_resolution(self, g: Genotype) -> int:
        p = self.cfg.proxy
        if not p.scale_resolution:
            return p.resolution
        return max(8, round(p.resolution * g.resolution / self.space.reference.resolution))

    def train(self, g: Genotype, seed: int, report=None, on_epoch=None):
        p = self.cfg.proxy
        proxy_g = replace(g, width=g.width * p.width_scale)
        torch.manual_seed(seed)  # initial weights from the trial's seed, not the process's history
        model = build_model(proxy_g, self.num_classes, self.in_channels)
        dm = self.datamodule(self.proxy_resolution(g))
        return train_proxy(model, dm, p.epochs, report=report, on_epoch=on_epoch, seed=seed,
                           deterministic=p.deterministic, optimizer=p.optimizer, lr=p.lr,
                           momentum=p.momentum, weight_decay=p.weight_decay, schedule=p.schedule,
                           warmup_epochs=p.warmup_epochs, label_smoothing=p.label_smoothing,
                           bn_recalibration=p.bn_recalibration)

    # ----- checks before any trial --------------------------------------------------------
    def check_budget_feasible(self) -> dict[str, tuple[int, int]]:
        rng = self.space.cost_range(self.num_classes, self.in_channels)
        limits = {"mflops": ("macs", 1e6, "MFLOPs"), "params_m": ("params", 1e6, "M params")}
        for key, (field, scale, unit) in limits.items():
            if key in self.cfg.budget and rng[field][0] / scale > self.cfg.budget[key]:
                raise BudgetError(
                    f"budget.{key}={self.cfg.budget[key]} is below the smallest genotype of space "
                    f"{self.space.name}: its minimum is {rng[field][0] / scale:.3f} {unit}")
        if self.judge is not None and "latency_ms" in self.cfg.budget:
            fastest = self.judge.minimum()
            if fastest is not None and fastest > self.cfg.budget["latency_ms"]:
                raise BudgetError(
                    f"budget.latency_ms={self.cfg.budget['latency_ms']} is below the fastest genotype "
                    f"of space {self.space.name} on this device: its predicted minimum is "
                    f"{fastest:.3f} ms ({self.judge.source})")
        return rng

    # ----- the reference network -------------------------------------------------------
    def train_reference(self) -> dict[str, Any] | None:
        stored = self.study.user_attrs.get("reference")
        if stored is not None:
            return stored
        g = scaled_reference(self.space, self.cfg.budget, self.num_classes, self.in_channels)
        if g is None:
            self.print("reference: no width multiplier of the reference network fits the budget")
            return None
        c = cost(g, self.num_classes, self.in_channels)
        self.print(f"reference: {self.space.name} reference at width {g.width} "
                   f"({c.mflops:.1f} MFLOPs, {c.params_m:.3f} M params), training with the proxy ...")
        if self.cfg.proxy.kind != "train":  # a zero-cost study: score it like the trials
            t0 = time.perf_counter()
            accuracy = self.zero_cost(g, self.cfg.proxy.kind)
            seconds = time.perf_counter() - t0
        else:
            result = self.train(g, seed=self.cfg.seed)
            accuracy, seconds = result.accuracy, result.seconds
        ref = {"genotype": str(g), "width": g.width, "mflops": c.mflops, "params_m": c.params_m,
               "accuracy": accuracy, "seconds": seconds}
        self.study.set_user_attr("reference", ref)
        what = f"{self.cfg.proxy.kind} score" if self.cfg.proxy.kind != "train" else "proxy accuracy"
        self.print(f"reference: {what} {accuracy:.4f} in {seconds:.1f} s")
        return ref

    # ----- one trial ------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> float:
        self.proposals += 1
        start = time.perf_counter()
        trial.set_user_attr("worker", worker_id())
        with Beat(trial, self.beat_interval()):
            return self._objective(trial, start)

    def beat_interval(self) -> int:
        """Our own trial heartbeat, for storages without Optuna's (the journal file)."""
        journal = isinstance(self.study._storage, optuna.storages.JournalStorage)
        return self.cfg.storage.heartbeat if journal else 0

    def _objective(self, trial: optuna.Trial, start: float) -> float | tuple[float, float]:
        g = self.space.decode(lambda name, options: trial.suggest_categorical(name, options))
        c = cost(g, self.num_classes, self.in_channels)
        trial.set_user_attr("genotype", str(g))
        trial.set_user_attr("hash", g.content_hash)
        trial.set_user_attr("mflops", c.mflops)
        trial.set_user_attr("params_m", c.params_m)
        latency = None
        already_over = any(v > 0 for v in budget_violations(c, self.cfg.budget).values())
        # A table predicts in microseconds; measuring takes ~1 s, wasted on a candidate that
        # its MFLOPs or params already reject (the sampler still sees it as infeasible).
        if self.judge is not None and (self.judge.table is not None or not already_over):
            latency = self.judge(g)
            trial.set_user_attr("latency_ms", latency)
        violations = budget_violations(c, self.cfg.budget, latency)
        for key, amount in violations.items():
            trial.set_constraint(key, amount)
        over = {k: v for k, v in violations.items() if v > 0}
        if over:
            reason = "over budget: " + ", ".join(
                f"{k} {v + self.cfg.budget[k]:.3f} > {self.cfg.budget[k]}" for k, v in over.items())
            trial.set_user_attr("status", "rejected")
            trial.set_user_attr("reason", reason)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            raise optuna.TrialPruned(reason)

        earlier = self.find_earlier(g.content_hash, trial.number)
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier.number)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            if earlier.state == TrialState.COMPLETE:
                trial.set_user_attr("status", "duplicate")
                return tuple(earlier.values) if self.pareto else earlier.value
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("reason", f"same genotype as pruned trial {earlier.number}")
            raise optuna.TrialPruned(f"duplicate of pruned trial {earlier.number}")

        cost_value = {"mflops": c.mflops, "params_m": c.params_m, "latency_ms": latency}[
            self.cfg.pareto_cost]
        p = self.cfg.proxy
        if p.kind != "train" or p.prefilter:
            name = p.kind if p.kind != "train" else p.prefilter
            zscore = self.zero_cost(g, name)
            trial.set_user_attr("zero_cost", zscore)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            if p.kind != "train":  # the score is the result: no training at all
                trial.set_user_attr("status", "trained")
                return (zscore, cost_value) if self.pareto else zscore
            cut = self.prefilter_cut(trial.number)
            if cut is not None and zscore < cut:
                reason = f"{name} score {zscore:.4g} below the top-{p.prefilter_keep:g} cut {cut:.4g}"
                trial.set_user_attr("status", "filtered")
                trial.set_user_attr("reason", reason)
                raise optuna.TrialPruned(reason)

        config = {"genotype": str(g), "hash": g.content_hash, "mflops": c.mflops,
                  "params_m": c.params_m, "trial": trial.number, **trial.params}
        self.tracker.start_trial(trial.number, config)

        full: list[int] = []  # the epoch at which the study turned out full, if it did
        curve: list[float] = []

        def report(epoch: int, value: float) -> bool:
            curve.append(value)
            if not self.pareto:
                trial.report(value, epoch)
            # Other workers may have filled the study meanwhile: finishing this trial would
            # only make the run overshoot n_trials, so stop it at this epoch boundary.
            if trained_count(self.study) >= self.cfg.n_trials:
                full.append(epoch)
                return True
            if epoch >= self.cfg.proxy.epochs - 1:
                return False  # pruning after the last epoch saves nothing and loses a finished trial
            if self.pareto:
                return self.pareto_should_prune(epoch, value, cost_value)
            return trial.should_prune()

        try:
            result = self.train(g, seed=self.cfg.seed + trial.number, report=report,
                                on_epoch=self.tracker.log_epoch)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", reason)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            self.tracker.finish_trial({"state": "FAIL", "reason": reason})
            if isinstance(err, Terminated):
                # Optuna marks the trial FAIL and re-raises this, ending the loop.
                raise KeyboardInterrupt(str(err)) from None
            raise
        trial.set_user_attr("seconds", time.perf_counter() - start)
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("epochs", len(result.history))
        trial.set_user_attr("curve", curve)
        if not math.isfinite(result.accuracy):
            raise RuntimeError(f"validation accuracy is {result.accuracy}")
        if full:
            reason = f"stopped after epoch {full[0]}: the study reached n_trials meanwhile"
            trial.set_user_attr("status", "stopped")
            trial.set_user_attr("reason", reason)
            self.tracker.finish_trial({"state": "PRUNED", "accuracy": result.accuracy,
                                       "stopped_at": full[0]})
            raise optuna.TrialPruned(reason)
        if result.pruned_at is not None:
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("pruned_at", result.pruned_at)
            trial.set_user_attr("reason", f"pruned after epoch {result.pruned_at}")
            self.tracker.finish_trial({"state": "PRUNED", "accuracy": result.accuracy,
                                       "pruned_at": result.pruned_at})
            raise optuna.TrialPruned(f"pruned after epoch {result.pruned_at}")
        trial.set_user_attr("status", "trained")
        self.tracker.finish_trial({"state": "COMPLETE", "accuracy": result.accuracy})
        return (result.accuracy, cost_value) if self.pareto else result.accuracy

    def zero_cost(self, g: Genotype, name: str) -> float:
        """Zero-cost score of the proxy stand-in of `g` on a fixed training mini-batch."""
        from nas import zero_cost

        p = self.cfg.proxy
        dm = self.datamodule(self.proxy_resolution(g))
        split = dm.split("train")
        n = min(p.zero_cost_batch, len(split.labels))
        x = (split.images[:n].float() / 255.0 - dm.mean) / dm.std
        # one seed for the initial weights and any dropout draws, whatever ran before
        torch.manual_seed(self.cfg.seed)
        model = build_model(replace(g, width=g.width * p.width_scale), self.num_classes,
                            self.in_channels)
        value = zero_cost.score(name, model, x, split.labels[:n])
        return value if math.isfinite(value) else -1e30  # e.g. naswot's log det of a singular kernel

    def prefilter_cut(self, number: int) -> float | None:
        """Score a candidate must reach to be trained: the top `prefilter_keep` fraction of the
        scores seen so far in the study (None while fewer than `prefilter_warmup`)."""
        p = self.cfg.proxy
        scores = sorted(t.user_attrs["zero_cost"] for t in self.study.get_trials(deepcopy=False)
                        if t.number != number and "zero_cost" in t.user_attrs)
        if len(scores) < max(1, p.prefilter_warmup):
            return None
        return scores[min(len(scores) - 1, int(len(scores) * (1 - p.prefilter_keep)))]

    def pareto_should_prune(self, epoch: int, value: float, cost_value: float) -> bool:
        p = self.cfg.pruner
        if p.name == "none":
            return False
        return pareto_verdict(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                              epoch, value, cost_value, p.n_startup_trials, p.n_warmup_steps)

    def find_earlier(self, digest: str, number: int) -> optuna.trial.FrozenTrial | None:
        """The first finished trial of the study that trained the same genotype."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if (t.number != number and t.user_attrs.get("hash") == digest
                    and t.user_attrs.get("status") in ("trained", "pruned")):
                return t
        return None

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        target = self.cfg.n_trials
        max_proposals = self.cfg.max_proposals or 50 * target
        self.reap_dead_workers()
        self._first_number = len(self.study.get_trials(deepcopy=False))
        done = trained_count(self.study)
        if done >= target:
            self.print(f"study {self.study.study_name} already has {done} trained trials "
                       f"(n_trials={target}); nothing to do")
            return
        if done:
            self.print(f"resuming study {self.study.study_name}: {done} of {target} trained trials done")

        failures: list[str] = []  # reasons of the trials that failed in a row
        rejections = [0]  # proposals rejected in a row

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            status = trial.user_attrs.get("status")
            if status != "rejected" or self.proposals % 100 == 0:
                self.progress(trial)
                self.reap_dead_workers()
            failures[:] = [*failures, str(trial.user_attrs.get("reason", "?"))] \
                if trial.state == TrialState.FAIL else []
            rejections[0] = rejections[0] + 1 if status == "rejected" else 0
            if trained_count(study) >= target:
                study.stop()
            elif len(failures) >= FAILURES_IN_A_ROW:
                self.abort = (f"{len(failures)} trials in a row failed, the last with: {failures[-1]}; "
                              "stopping (the data or the settings do not fit these networks)")
                study.stop()
            elif (self.judge is not None and self.judge.table is None and trained_count(study) == 0
                  and rejections[0] >= MEASURED_REJECTIONS):
                self.abort = (f"none of {rejections[0]} proposals measured met "
                              f"budget.latency_ms={self.cfg.budget.get('latency_ms')}; build a latency "
                              f"table (python -m nas.latency build +space={self.space.name}) to find "
                              "the space's fastest genotype, or raise the budget")
                study.stop()
            elif self.proposals >= max_proposals:
                n = counts(study)
                self.print(f"stopping after {self.proposals} proposals (max_proposals): "
                           f"{n['rejected']} over the budget, {n['failed']} failed"
                           + ("; the budget rejects most of the space: loosen it or narrow the space"
                              if n["rejected"] > n["failed"] else ""))
                study.stop()

        try:
            self.study.optimize(self.objective, n_trials=None, callbacks=[after_trial],
                                catch=(Exception,), gc_after_trial=False)
        except Terminated as err:  # arrived outside training: nothing of ours is running
            raise KeyboardInterrupt(str(err)) from None
        failed_by_signal = [t for t in self.study.get_trials(deepcopy=False)
                            if str(t.user_attrs.get("reason", "")).startswith("Terminated")]
        if failed_by_signal and failed_by_signal[-1].number >= self._first_number:
            raise KeyboardInterrupt(failed_by_signal[-1].user_attrs["reason"])

    def reap_dead_workers(self) -> None:
        """Fail (and re-queue) trials left RUNNING by workers that died without a word."""
        dead = fail_dead_workers(self.study, self.beat_interval(), self.cfg.storage.max_retry)
        if dead:
            requeued = " (re-queued)" if self.cfg.storage.max_retry else ""
            self.print(f"failed {len(dead)} trial(s) left RUNNING by dead workers: "
                       f"{', '.join(map(str, dead))}{requeued}")

    def progress(self, trial: optuna.trial.FrozenTrial) -> None:
        if not self.cfg.progress:
            return

        n = counts(self.study)
        best = ranked(self.study)
        # A zero-cost study's objective is a score, not an accuracy: say which.
        what = "acc" if self.cfg.proxy.kind == "train" else self.cfg.proxy.kind
        best_text = (f"best {what} {best[0]['accuracy']:.4f} @ {best[0]['mflops']:.1f} MFLOPs"
                     if best else "best -")
        ua = trial.user_attrs
        status = ua.get("status") or trial.state.name.lower()
        value = trial.values[0] if trial.values else ua.get("accuracy")
        this = f"trial {trial.number} {status}"
        if value is not None:
            this += f" {what} {value:.4f}"
        if ua.get("mflops") is not None:
            this += f" {ua['mflops']:.1f} MFLOPs"
        if ua.get("seconds") is not None:
            this += f" {ua['seconds']:.1f}s"
        if ua.get("reason") and status in ("failed",):
            this += f" ({ua['reason']})"
        elapsed = time.perf_counter() - self.started
        self.print(f"[{elapsed:6.0f}s] trained {n['trained'] + n['pruned']}/{self.cfg.n_trials} "
                   f"(pruned {n['pruned']}) rejected {n['rejected']} duplicate {n['duplicate']} "
                   f"failed {n['failed']} | {best_text} | {this}")

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def pareto_verdict(trials: list[optuna.trial.FrozenTrial], epoch: int, value: float,
                   cost_value: float, n_startup_trials: int, n_warmup_steps: int) -> bool:
    """Whether a pareto trial at `epoch` with accuracy `value` and cost `cost_value` should stop.

    Optuna's pruners cannot run on multi-objective studies. A trial is stopped when its
    accuracy at this epoch is below the median, at the same epoch, of the trained trials
    that cost no more than it does: such a trial is on its way to being dominated.
    Comparing only with cheaper trials keeps the cheap end of the front from being pruned
    for being less accurate than expensive networks.
    """
    if epoch < n_warmup_steps:
        return False
    peers = []
    for t in trials:
        curve = t.user_attrs.get("curve") or []
        if (t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "trained"
                and len(curve) > epoch and t.values and t.values[1] <= cost_value):
            peers.append(curve[epoch])
    if len(peers) < max(1, n_startup_trials):
        return False
    return value < statistics.median(peers)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
