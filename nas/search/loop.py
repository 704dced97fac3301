"""The search loop: propose a genotype, check its budget, evaluate it, record it.

`Searcher.objective` is what each Optuna trial runs:
1. `propose`: the space decodes the trial into a genotype (the only place `suggest_*` is
   called); params and MFLOPs come from the analytic cost model, latency from the latency
   predictor, and all are stored on the trial;
2. `check_budget`: a genotype over any budget is rejected in milliseconds: recorded as
   PRUNED with the reason and its costs, and the sampler is told through `trial.set_constraint`;
3. `reuse_earlier`: a genotype seen before reuses the earlier result;
4. `prefilter`: with a zero-cost pre-filter, a candidate scoring below the cut is skipped;
5. `evaluate`: the evaluator (proxy training, or a zero-cost score) scores it, reporting
   each epoch to the pruner (Optuna's, or `pareto.pareto_verdict` for pareto studies).
What is instant (cost, latency prediction) and what needs training (the evaluator) meet
only here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from nas.arch.cost import Cost, cost
from nas.arch.genotype import Genotype
from nas.arch.space import SearchSpace
from nas.common.config import SearchConfig
from nas.common.tracking import Tracker
from nas.errors import UserError
from nas.search.evaluate import Evaluation, Evaluator, ProxyData, make_evaluator
from nas.search.interrupt import StopSignals, Terminated
from nas.search.pareto import pareto_verdict
from nas.search.report import counts, ranked
from nas.search.status import COUNTED, Status
from nas.search.study import Beat, fail_dead_workers, has_own_heartbeat, trained_count, worker_id

__all__ = ["BudgetError", "EpochReports", "InARow", "Searcher", "budget_violations", "check_budget_feasible",
           "scaled_reference", "set_threads"]

FAILURES_IN_A_ROW = 5  # trials failing one after another: the cause is not the genotype
MEASURED_REJECTIONS = 50  # proposals timed one by one (~1 s each) before giving up on a budget

log = logging.getLogger(__name__)


class BudgetError(UserError):
    """A budget that no genotype of the space can meet."""


def budget_violations(c: Cost, budget: dict[str, float], latency_ms: float | None = None) -> dict[str, float]:
    """Amount by which each budget is exceeded (<= 0 means within budget)."""
    measured = {"mflops": c.mflops, "params_m": c.params_m, "latency_ms": latency_ms}
    return {k: measured[k] - float(v) for k, v in budget.items() if measured[k] is not None}


def scaled_reference(space: SearchSpace, budget: dict[str, float], num_classes: int, in_channels: int,
                     latency=None, widths: Sequence[float] | None = None) -> Genotype | None:
    """The space's reference network at the largest width multiplier (0.05 to 1.40, in steps
    of 0.01, or among `widths`) that fits the budget, latency included when `latency` predicts
    it (found by bisection: latency grows with width, and each figure may be a measurement)."""
    def fits(g: Genotype, with_latency: bool) -> bool:
        ms = latency(g) if with_latency else None
        return all(v <= 0 for v in budget_violations(cost(g, num_classes, in_channels), budget, ms).values())

    steps = sorted(widths, reverse=True) if widths is not None else [step / 100 for step in range(140, 4, -1)]
    cheap = [g for g in (replace(space.reference, width=w) for w in steps) if fits(g, False)]  # analytic
    if latency is None or "latency_ms" not in budget:
        return cheap[0] if cheap else None
    lo, hi = 0, len(cheap)  # cheap[:lo] known too slow, cheap[hi:] not yet known to fit
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(cheap[mid], True):
            hi = mid
        else:
            lo = mid + 1
    return cheap[lo] if lo < len(cheap) else None


def check_budget_feasible(space: SearchSpace, budget: dict[str, float], num_classes: int,
                          in_channels: int, latency=None) -> dict[str, tuple[int, int]]:
    """The space's exact cost range; a `BudgetError` when a budget is below its minimum."""
    rng = space.cost_range(num_classes, in_channels)
    limits = {"mflops": ("macs", 1e6, "MFLOPs"), "params_m": ("params", 1e6, "M params")}
    for key, (field, scale, unit) in limits.items():
        if key in budget and rng[field][0] / scale > budget[key]:
            raise BudgetError(f"budget.{key}={budget[key]} is below the smallest genotype of space "
                              f"{space.name}: its minimum is {rng[field][0] / scale:.3f} {unit}")
    if latency is not None and "latency_ms" in budget:
        fastest = latency.minimum()
        if fastest is not None and fastest > budget["latency_ms"]:
            raise BudgetError(f"budget.latency_ms={budget['latency_ms']} is below the fastest genotype "
                              f"of space {space.name} on this device: its predicted minimum is "
                              f"{fastest:.3f} ms ({latency.source})")
    return rng


# What says nothing about the settings (a rejected, duplicate or filtered proposal) neither
# counts as a failure nor ends a run of them.
NEUTRAL = (Status.REJECTED, Status.DUPLICATE, Status.FILTERED)


@dataclass
class InARow:
    """What went wrong one trial after another: the reasons of the trials that failed in a row,
    and the number of proposals in a row that the budget rejected."""

    failures: list[str] = dataclasses.field(default_factory=list)
    rejections: int = 0

    def count(self, trial: optuna.trial.FrozenTrial) -> None:
        status = trial.user_attrs.get("status")
        if trial.state == TrialState.FAIL:
            self.failures.append(str(trial.user_attrs.get("reason", "?")))
        elif status not in NEUTRAL:
            self.failures.clear()
        self.rejections = self.rejections + 1 if status == Status.REJECTED else 0


class EpochReports:
    """The `report(epoch, value)` a training trial calls after each epoch: it keeps the learning
    curve, stops the trial once other workers have filled the study, and otherwise asks the
    pruner (Optuna's, or `pareto_verdict` in a pareto study) whether to go on."""

    def __init__(self, searcher: Searcher, trial: optuna.Trial, cost_value: float | None):
        self.searcher, self.trial, self.cost_value = searcher, trial, cost_value
        self.curve: list[float] = []
        self.full_at: int | None = None  # the epoch at which the study turned out full, if it did

    def __call__(self, epoch: int, value: float) -> bool:
        s = self.searcher
        self.curve.append(value)
        if not s.pareto:
            self.trial.report(value, epoch)
        # Other workers may have filled the study meanwhile: finishing this trial would
        # only make the run overshoot n_trials, so stop it at this epoch boundary.
        if trained_count(s.study) >= s.cfg.n_trials:
            self.full_at = epoch
            return True
        if epoch >= s.cfg.proxy.epochs - 1:
            return False  # pruning after the last epoch saves nothing and loses a finished trial
        if s.pareto:
            return s.pareto_should_prune(epoch, value, self.cost_value)
        return self.trial.should_prune()


class Searcher:
    """Runs the trials of one study: see the module docstring for what a trial does."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace, study: optuna.Study, data: ProxyData,
                 tracker: Tracker, latency=None, signals: StopSignals | None = None):
        self.cfg, self.space, self.study, self.data = cfg, space, study, data
        # Who asks the worker to stop; `run_search` installs its handlers around the loop.
        self.signals = signals or StopSignals()
        self.tracker, self.latency = tracker, latency
        self.num_classes, self.in_channels = data.num_classes, data.in_channels
        self.pareto = cfg.objective == "pareto"
        self.evaluator: Evaluator = make_evaluator(cfg.proxy.kind, data, cfg)
        prefilter = cfg.proxy.prefilter if cfg.proxy.kind == "train" else None
        self.prefilter_score = make_evaluator(prefilter, data, cfg) if prefilter else None
        self.proposals = 0
        self.in_a_row = InARow()  # trials gone wrong one after another, in this run
        self.abort: str | None = None  # why the loop stopped early, when it did
        self.started = time.perf_counter()

    # The seams tests and benchmarks hook into: training and zero-cost scoring.
    def train(self, g: Genotype, seed: int, report=None, on_epoch=None) -> Evaluation:
        return self.evaluator(g, seed, report, on_epoch, stop=self.signals.check)

    def zero_cost(self, g: Genotype, name: str) -> float:
        if self.evaluator.name != name:
            return make_evaluator(name, self.data, self.cfg)(g, self.cfg.seed).value
        return self.evaluator(g, self.cfg.seed).value

    # ----- the reference network -------------------------------------------------------
    def train_reference(self) -> dict[str, Any] | None:
        stored = self.study.user_attrs.get("reference")
        if stored is not None:
            return stored
        if self.cfg.worker not in (None, 0):  # one worker of a study trains it, not every one
            log.info("reference: left to worker 0 of this study")
            return None
        measured: dict[Genotype, float] = {}  # without a table each figure is a measurement

        def latency_of(g: Genotype) -> float:
            if g not in measured:
                measured[g] = self.latency(g)
            return measured[g]

        only = self.evaluator.space_only  # then the reference at one of the space's own widths
        g = scaled_reference(self.space, self.cfg.budget, self.num_classes, self.in_channels,
                             latency_of if self.latency is not None else None,
                             widths=self.space.width if only else None)
        if g is None:
            among = f" among the space's widths ({', '.join(map(str, self.space.width))})" if only else ""
            log.info(f"reference: no width multiplier of the reference network fits the budget{among}")
            return None
        if only and not self.space.contains(g):
            log.info(f"reference: the reference network at width {g.width} is not a genotype of this space, "
                     f"so the {self.evaluator.name} cannot score it; no reference row")
            return None
        c = cost(g, self.num_classes, self.in_channels)
        what = ("proxy accuracy" if self.evaluator.measures == "accuracy"
                else f"{self.evaluator.name} score")
        log.info(f"reference: {self.space.name} reference at width {g.width} "
                 f"({c.mflops:.1f} MFLOPs, {c.params_m:.3f} M params), {what} ...")
        try:
            result = self.train(g, seed=self.cfg.seed)
        except Terminated as err:
            log.info(f"reference: interrupted by {err}")
            return None
        ref = {"genotype": str(g), "width": g.width, "mflops": c.mflops, "params_m": c.params_m,
               "latency_ms": latency_of(g) if self.latency is not None else None,
               "accuracy": result.value, "seconds": result.seconds}
        self.study.set_user_attr("reference", ref)
        log.info(f"reference: {what} {result.value:.4f} in {result.seconds:.1f} s")
        return ref

    # ----- one trial ------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.proposals += 1
        start = time.perf_counter()
        trial.set_user_attr("worker", worker_id())
        beat = 0 if has_own_heartbeat(self.study) else self.cfg.storage.heartbeat
        try:
            self.signals.check()  # asked to stop between trials: this one never starts
            with Beat(trial, beat):
                return self.run_trial(trial)
        except Exception as err:
            # A Terminated is the one trial this worker had in flight. Any other error after the
            # worker was told to stop came from what the signal ended with the job (W&B's
            # service, loader processes), so the stop is its reason too. Optuna marks the trial
            # FAIL and re-raises the KeyboardInterrupt, which ends `study.optimize`.
            reason = str(err) if isinstance(err, Terminated) else self.signals.reason
            if reason is None:
                raise
            trial.set_user_attr("status", Status.FAILED)
            trial.set_user_attr("reason", f"interrupted by {reason}")
            raise KeyboardInterrupt(reason) from None
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)

    def run_trial(self, trial: optuna.Trial) -> float | tuple[float, float]:
        g, c, latency = self.propose(trial)
        self.check_budget(trial, c, latency)
        earlier = self.find_earlier(g.content_hash, trial.number)
        if earlier is not None:
            return self.reuse_earlier(trial, earlier)
        cost_value = {"mflops": c.mflops, "params_m": c.params_m, "latency_ms": latency}[
            self.cfg.pareto_cost]
        self.prefilter(trial, g)
        return self.evaluate(trial, g, c, cost_value)

    def propose(self, trial: optuna.Trial) -> tuple[Genotype, Cost, float | None]:
        """The trial's genotype and its costs, stored on the trial."""
        g = self.space.decode(lambda name, options: trial.suggest_categorical(name, options))
        c = cost(g, self.num_classes, self.in_channels)
        for key, value in (("genotype", str(g)), ("hash", g.content_hash), ("mflops", c.mflops),
                           ("params_m", c.params_m)):
            trial.set_user_attr(key, value)
        latency = None
        already_over = any(v > 0 for v in budget_violations(c, self.cfg.budget).values())
        # A table predicts in microseconds; measuring takes ~1 s, wasted on a candidate that
        # its MFLOPs or params already reject (the sampler still sees it as infeasible).
        if self.latency is not None and (self.latency.table is not None or not already_over):
            latency = self.latency(g)
            trial.set_user_attr("latency_ms", latency)
        return g, c, latency

    def check_budget(self, trial: optuna.Trial, c: Cost, latency: float | None) -> None:
        """Tell the sampler each budget's violation; reject (prune) a candidate over any."""
        violations = budget_violations(c, self.cfg.budget, latency)
        for key, amount in violations.items():
            trial.set_constraint(key, amount)
        over = {k: v for k, v in violations.items() if v > 0}
        if over:
            reason = "over budget: " + ", ".join(
                f"{k} {v + self.cfg.budget[k]:.3f} > {self.cfg.budget[k]}" for k, v in over.items())
            self.stop(trial, Status.REJECTED, reason)

    @staticmethod
    def stop(trial: optuna.Trial, status: Status, reason: str, **attrs: Any) -> None:
        """Record why the trial ends without a value, and end it as PRUNED."""
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)

    def reuse_earlier(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial):
        trial.set_user_attr("duplicate_of", earlier.number)
        if earlier.state != TrialState.COMPLETE:
            self.stop(trial, Status.DUPLICATE, f"same genotype as pruned trial {earlier.number}")
        trial.set_user_attr("status", Status.DUPLICATE)
        return tuple(earlier.values) if self.pareto else earlier.value

    def prefilter(self, trial: optuna.Trial, g: Genotype) -> None:
        """With a zero-cost pre-filter, skip a candidate scoring below the top-`keep` cut."""
        if self.prefilter_score is None:
            return
        score = self.prefilter_score(g, self.cfg.seed).value
        trial.set_user_attr("zero_cost", score)
        cut = self.prefilter_cut(trial.number)
        if cut is not None and score < cut:
            self.stop(trial, Status.FILTERED, f"{self.prefilter_score.name} score {score:.4g} below the "
                                              f"top-{self.cfg.proxy.prefilter_keep:g} cut {cut:.4g}")

    def evaluate(self, trial: optuna.Trial, g: Genotype, c: Cost, cost_value: float | None):
        """Score the candidate with the evaluator; its value is the trial's objective."""
        if not self.evaluator.reports_epochs:  # one value, nothing to prune on the way
            return self.score(trial, g, cost_value)
        self.tracker.start_trial(trial.number, {"genotype": str(g), "hash": g.content_hash,
                                                "mflops": c.mflops, "params_m": c.params_m,
                                                "trial": trial.number, **trial.params})
        reports = EpochReports(self, trial, cost_value)
        try:
            result = self.train(g, seed=self.cfg.seed + trial.number, report=reports,
                                on_epoch=self.tracker.log_epoch)
        except Terminated as err:
            self.tracker.finish_trial({"state": "FAIL", "reason": f"interrupted by {err}"})
            raise
        except Exception as err:
            self.tracker.finish_trial({"state": "FAIL", "reason": self.record_failure(trial, err)})
            raise
        return self.record_training(trial, result, reports, cost_value)

    def score(self, trial: optuna.Trial, g: Genotype, cost_value: float | None):
        """The value of an evaluator that reports no epochs (a zero-cost score, a supernet's)."""
        try:
            score = self.evaluator(g, self.cfg.seed, stop=self.signals.check).value
            if not math.isfinite(score):
                raise RuntimeError(f"{self.evaluator.name} value is {score}")
        except Terminated:
            raise
        except Exception as err:
            self.record_failure(trial, err)
            raise
        trial.set_user_attr("accuracy" if self.evaluator.measures == "accuracy" else "zero_cost", score)
        trial.set_user_attr("status", Status.TRAINED)
        return (score, cost_value) if self.pareto else score

    def record_training(self, trial: optuna.Trial, result: Evaluation, reports: EpochReports,
                        cost_value: float | None):
        """Store a finished training on the trial; one cut short (the study filled up meanwhile,
        or the pruner stopped it) ends PRUNED with the reason."""
        trial.set_user_attr("accuracy", result.value)
        trial.set_user_attr("epochs", len(result.history))
        trial.set_user_attr("curve", reports.curve)
        if not math.isfinite(result.value):
            raise RuntimeError(f"validation accuracy is {result.value}")
        if reports.full_at is not None:
            self.tracker.finish_trial({"state": "PRUNED", "accuracy": result.value,
                                       "stopped_at": reports.full_at})
            self.stop(trial, Status.STOPPED, f"stopped after epoch {reports.full_at}: the study reached "
                                             "n_trials meanwhile")
        if result.pruned_at is not None:
            self.tracker.finish_trial({"state": "PRUNED", "accuracy": result.value,
                                       "pruned_at": result.pruned_at})
            self.stop(trial, Status.PRUNED, f"pruned after epoch {result.pruned_at}",
                      pruned_at=result.pruned_at)
        trial.set_user_attr("status", Status.TRAINED)
        self.tracker.finish_trial({"state": "COMPLETE", "accuracy": result.value})
        return (result.value, cost_value) if self.pareto else result.value

    @staticmethod
    def record_failure(trial: optuna.Trial, err: Exception) -> str:
        """Mark the trial FAILED with the first line of the error; returns that reason."""
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        trial.set_user_attr("status", Status.FAILED)
        trial.set_user_attr("reason", reason)
        return reason

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
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=finished):
            if (t.number != number and t.user_attrs.get("hash") == digest
                    and t.user_attrs.get("status") in COUNTED):
                return t
        return None

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        target = self.cfg.n_trials
        self.reap_dead_workers()
        done = trained_count(self.study)
        if done >= target:
            log.info(f"study {self.study.study_name} already has {done} trained trials "
                     f"(n_trials={target}); nothing to do")
            return
        if done:
            log.info(f"resuming study {self.study.study_name}: {done} of {target} trained trials done")
        self.in_a_row = InARow()
        try:
            self.study.optimize(self.objective, n_trials=None, callbacks=[self.after_trial],
                                catch=(Exception,), gc_after_trial=False)
        except KeyboardInterrupt:  # a trial of ours was interrupted (and marked FAIL)
            if self.signals.reason is None:
                raise

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's callback after every trial: the progress line (for a rejected proposal, one in
        a hundred), and the end of the run when `time_to_stop` says so."""
        if trial.user_attrs.get("status") != Status.REJECTED or self.proposals % 100 == 0:
            self.progress(trial)
            self.reap_dead_workers()
        self.in_a_row.count(trial)
        if self.time_to_stop(study):
            study.stop()

    def time_to_stop(self, study: optuna.Study) -> bool:
        """Whether to start no other trial: a signal arrived, the study is full, or the run can
        go nowhere (then `abort` says why)."""
        if self.signals.expired() or trained_count(study) >= self.cfg.n_trials:
            return True
        failures, rejections = self.in_a_row.failures, self.in_a_row.rejections
        if len(failures) >= FAILURES_IN_A_ROW:
            self.abort = (f"{len(failures)} trials in a row failed, the last with: {failures[-1]}; "
                          "stopping (the data or the settings do not fit these networks)")
            return True
        if (self.latency is not None and self.latency.table is None and trained_count(study) == 0
                and rejections >= MEASURED_REJECTIONS):
            self.abort = (f"none of {rejections} proposals measured met "
                          f"budget.latency_ms={self.cfg.budget.get('latency_ms')}; build a latency "
                          f"table (python -m nas.latency build +space={self.space.name}) to find "
                          "the space's fastest genotype, or raise the budget")
            return True
        if self.proposals >= (self.cfg.max_proposals or 50 * self.cfg.n_trials):
            n = counts(study)
            log.info(f"stopping after {self.proposals} proposals (max_proposals): "
                     f"{n['rejected']} over the budget, {n['failed']} failed"
                     + ("; the budget rejects most of the space: loosen it or narrow the space"
                        if n["rejected"] > n["failed"] else ""))
            return True
        return False

    def reap_dead_workers(self) -> None:
        """Fail (and re-queue) trials left RUNNING by workers that died without a word."""
        beat = 0 if has_own_heartbeat(self.study) else self.cfg.storage.heartbeat
        dead = fail_dead_workers(self.study, beat, self.cfg.storage.max_retry)
        if dead:
            requeued = " (re-queued)" if self.cfg.storage.max_retry else ""
            log.info(f"failed {len(dead)} trial(s) left RUNNING by dead workers: "
                     f"{', '.join(map(str, dead))}{requeued}")

    def progress(self, trial: optuna.trial.FrozenTrial) -> None:
        if not self.cfg.progress:
            return
        n = counts(self.study)
        best = ranked(self.study)
        # A zero-cost study's objective is a score, not an accuracy: say which.
        what = "acc" if self.evaluator.measures == "accuracy" else self.evaluator.name
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
        if ua.get("reason") and status == Status.FAILED:
            this += f" ({ua['reason']})"
        elapsed = time.perf_counter() - self.started
        log.info(f"[{elapsed:6.0f}s] trained {n['trained'] + n['pruned']}/{self.cfg.n_trials} "
                 f"(pruned {n['pruned']}) rejected {n['rejected']} duplicate {n['duplicate']} "
                 f"failed {n['failed']} | {best_text} | {this}")


def set_threads(threads: int) -> None:
    """Torch threads for this process (0: leave torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
