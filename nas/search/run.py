"""One search, start to end: the space, the proxy's data and the latency predictor, the
study (created or resumed), the trials, the report. `run_search` is what
`python -m nas.search` runs in its run directory (see `nas.cli.search`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from nas.common.config import ConfigError, SearchConfig, uses_latency
from nas.errors import UserError

__all__ = [
    "RunLog",
    "SearchError",
    "apply_space_overrides",
    "claim_run_dir",
    "latency_predictor",
    "open_search_study",
    "run_search",
    "storage_url",
]

log = logging.getLogger(__name__)


def apply_space_overrides(cfg: SearchConfig):
    from search_spaces import get_space

    """The space `cfg.space` names, with its width/resolution choices as overridden (checked by
    `SpaceConfig.validate` and the schema's limits)."""
    space = get_space(cfg.space.name)
    if cfg.space.width:
        space = replace(space, width=tuple(cfg.space.width))
    if cfg.space.resolution:
        space = replace(space, resolution=tuple(cfg.space.resolution))
    return space


def storage_url(cfg: SearchConfig, shared_dir: Path) -> str:
    """The storage URL: `storage.url`, or a file of the chosen kind in `shared_dir`."""
    if cfg.storage.url:
        return cfg.storage.url
    shared_dir = shared_dir.expanduser().absolute()  # Hydra's sweep dir is relative by default
    if cfg.storage.name == "journal":
        return f"journal:{shared_dir / 'study.journal'}"
    if cfg.storage.name == "postgres":
        raise ConfigError("storage=postgres needs storage.url=postgresql+psycopg2://USER@HOST:PORT/DB "
                          "(or the NAS_STORAGE_URL environment variable)")
    return f"sqlite:///{shared_dir / 'study.db'}"


def latency_predictor(cfg: SearchConfig, space, num_classes: int, in_channels: int):
    """The latency predictor a latency budget or a latency pareto study needs (else None)."""
    if not uses_latency(dataclasses.asdict(cfg)):
        return None
    from nas.hardware.latency import LatencyPredictor

    lat = cfg.latency
    return LatencyPredictor(space, num_classes, in_channels, lat.lut, lat.dir, lat.backend, device=lat.device,
                            threads=lat.threads, channels_last=lat.channels_last, warmup=lat.warmup,
                            repeats=lat.repeats)


def open_search_study(cfg: SearchConfig, shared_dir: Path, seed: int):
    """Open (creating if needed) the study `cfg` describes; refuses a mismatched one."""
    from nas.search.study import (
        directions,
        make_pruner,
        make_sampler,
        open_storage,
        open_study,
        study_identity,
    )

    url = storage_url(cfg, shared_dir)
    shared_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, cfg.storage.heartbeat, cfg.storage.max_retry)
    name = cfg.study_name or cfg.default_study_name()
    dirs = directions(cfg)
    study, existed = open_study(storage, name, study_identity(cfg, dirs),
                                make_sampler(cfg, seed, len(dirs)), make_pruner(cfg))
    return study, existed, url


def run_search(cfg: SearchConfig, run_dir: Path, shared_dir: Path | None = None,
               on_accept: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study described by `cfg`, writing results into `run_dir`.

    `shared_dir` holds the default storage file; workers of one multirun pass the sweep
    directory so that they share one study. `on_accept` is called once the study is open
    (a refused resume never calls it). The progress lines go to this module's loggers (the
    commands show them), and from then on also into `run_dir/search.log`. A refused search
    removes the lock file and the folders it made (the commands also remove what Hydra made).
    """
    from nas.common.tracking import Tracker
    from nas.search.study import quiet_optuna

    made = first_missing(run_dir)  # removed again if the search is refused before it starts
    run_dir.mkdir(parents=True, exist_ok=True)
    had_lock = (run_dir / ".lock").exists()
    lock = claim_run_dir(run_dir)
    name = cfg.study_name or cfg.default_study_name()
    tracker = Tracker(cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, name, run_dir)
    accepted = False
    run_log = RunLog(run_dir / "search.log")

    def accept() -> None:
        nonlocal accepted
        accepted = True
        run_log.open()  # the progress lines, kept with the run
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")  # who holds the folder, for the next one refused
        lock.flush()
        if on_accept is not None:
            on_accept()

    try:
        with quiet_optuna():
            return _search(cfg, run_dir, shared_dir, tracker, accept)
    except UserError:
        if not accepted:
            _remove_if_ours(made, run_dir, had_lock)
        raise
    finally:
        tracker.close()  # W&B's own exit hook would raise if its service is gone (a cancelled job)
        run_log.close()
        lock.close()


class RunLog:
    """A run's own copy of its progress lines: what the `nas` loggers log at INFO and above,
    appended to `path` between `open` and `close`, one plain line per record.

    While it is open, a `nas` logger left at NOTSET (nobody chose its level) logs INFO, so that
    the file gets the lines whether or not anything shows them; a level someone set is kept.
    """

    def __init__(self, path: Path):
        self.path = path
        self.handler: logging.Handler | None = None
        self.opened_level = False

    def open(self) -> None:
        logger = logging.getLogger("nas")
        self.handler = logging.FileHandler(self.path, mode="a")
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
            self.opened_level = True
        logger.addHandler(self.handler)

    def close(self) -> None:
        if self.handler is None:
            return
        logger = logging.getLogger("nas")
        logger.removeHandler(self.handler)
        self.handler.close()
        self.handler = None
        if self.opened_level:
            logger.setLevel(logging.NOTSET)
            self.opened_level = False


def _search(cfg: SearchConfig, run_dir: Path, shared_dir: Path | None, tracker,
            on_accept: Callable[[], None]) -> dict[str, Any]:
    from nas.search.evaluate import ProxyData, prepare
    from nas.search.interrupt import Interrupted, StopSignals
    from nas.search.loop import Searcher, check_budget_feasible, set_threads

    if cfg.proxy.on_cpu():  # torch's thread count concerns CPU ops only
        set_threads(cfg.proxy.threads)
    space = apply_space_overrides(cfg)
    data = ProxyData(cfg, space)  # reads and checks the data before any storage is touched
    latency = latency_predictor(cfg, space, data.num_classes, data.in_channels)
    rng = check_budget_feasible(space, cfg.budget, data.num_classes, data.in_channels, latency)
    cfg = prepare(cfg, space, shared_dir or run_dir)  # e.g. the supernet file, before the study
    study, existed, url = open_search_study(cfg, shared_dir or run_dir, cfg.seed + (cfg.worker or 0))
    on_accept()
    _record_study_attrs(cfg, study, data)
    signals = StopSignals()
    searcher = Searcher(cfg, space, study, data, tracker, latency, signals)
    log.info(_banner(cfg, space, rng, data, latency, existed, url, run_dir))
    with signals:
        reference = searcher.train_reference() if cfg.reference else None
        if not signals.expired():
            searcher.run()
        stopped = signals.expired()  # else the study was done before the time limit's grace ran out
    if stopped:
        # Stop quickly (a scheduler kills the job KillWait seconds after SIGTERM): no report,
        # nothing RUNNING, and the study resumes from here.
        log.info(f"stopping: {signals.reason}")
        raise Interrupted(signals.reason, signals.requeue())
    if searcher.abort:
        log.info(f"stopped early: {searcher.abort}")
    return _report(cfg, study, run_dir, reference, tracker, searcher.abort)


def _record_study_attrs(cfg: SearchConfig, study, data) -> None:
    """What an export needs later: the supernet file and the data's shape (also when another
    worker created the study)."""
    if cfg.proxy.kind == "supernet" and study.user_attrs.get("supernet") is None:
        study.set_user_attr("supernet", {"path": cfg.proxy.supernet})  # for the export's weights
    if study.user_attrs.get("data_shape") is None:
        study.set_user_attr("data_shape", {"num_classes": data.num_classes,
                                           "in_channels": data.in_channels})


def _banner(cfg: SearchConfig, space, rng, data, latency, existed: bool, url: str, run_dir: Path) -> str:
    """The search's first lines: the study, the space, the budget, the data and the evaluator."""
    name = cfg.study_name or cfg.default_study_name()
    px = cfg.proxy.resolution
    proxy = {"train": f"{cfg.proxy.epochs} epochs at {px}px",
             "supernet": f"supernet {cfg.proxy.supernet} (inherited weights, no training)"}.get(
                 cfg.proxy.kind, f"{cfg.proxy.kind} score (zero-cost, no training) at {px}px")
    return (f"study {name} ({'resumed' if existed else 'new'}) in {url}\n"
            f"space {space.name}: {space.size():.3e} genotypes, {rng['macs'][0] / 1e6:.1f} to "
            f"{rng['macs'][1] / 1e6:.1f} MFLOPs; budget "
            + ", ".join(f"{k} <= {v}" for k, v in cfg.budget.items())
            + f"; data {cfg.data.name} ({data.num_classes} classes); proxy {proxy}; "
            f"sampler {cfg.sampler.name}, pruner {cfg.pruner.name}; "
            + (f"latency {latency.source}; " if latency else "")
            + f"run directory {run_dir}")


def _report(cfg: SearchConfig, study, run_dir: Path, reference, tracker, abort: str | None) -> dict[str, Any]:
    """The final tables, files, plots and W&B summary of a search that ran to its end."""
    from nas.search import report

    best = report.ranked(study)
    n = report.counts(study)
    csv_path, json_path = report.write_tables(study, run_dir)
    plot_cost = cfg.pareto_cost if cfg.objective == "pareto" else "mflops"
    plots = report.write_plots(study, run_dir, reference, plot_cost)
    log.info(f"\n{report.counts_line(n, cfg.proxy.prefilter)}")
    if best and cfg.objective == "pareto":
        front = report.pareto_front(best, cfg.pareto_cost)
        log.info(f"Pareto front of accuracy and {cfg.pareto_cost} ({len(front)} trials):")
        log.info(report.format_table(front, reference, len(front)))
    elif best:
        log.info(report.format_table(best, reference, cfg.top_k))
    else:
        log.info("no trial finished training")
    log.info(f"all trials: {csv_path} and {json_path}; plots: "
             + (", ".join(p.name for p in plots) or "none"))
    summary = {"study": cfg.study_name or cfg.default_study_name(),
               "best_accuracy": best[0]["accuracy"] if best else None,
               "best_mflops": best[0]["mflops"] if best else None,
               "best_genotype": best[0]["genotype"] if best else None,
               "reference_accuracy": reference.get("accuracy") if reference else None, **n}
    tracker.study_summary(report.rows(study), report.pareto_figure(study, reference, plot_cost),
                          summary)
    if not best and (abort or n["failed"] or n["rejected"]):
        raise SearchError(abort or (
            f"no trial finished training: {n['rejected']} proposals over the budget, {n['failed']} "
            f"failed (reasons in {json_path})"))
    return summary


def claim_run_dir(run_dir: Path):
    """An exclusive lock on `run_dir`, held until the returned file is closed (or the process
    ends): two searches writing one folder would train the same genotypes and overwrite each
    other's tables and W&B files."""
    import fcntl

    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held for the process's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SearchError(f"run directory {str(run_dir)!r} is in use by another search ({owner}); "
                          "wait for it to end, or add a worker to its study with +worker=N (a run "
                          "directory of its own) or a multirun (-m)") from None
    return handle


def first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None if `path` exists)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_ours(top: Path | None, run_dir: Path, had_lock: bool) -> None:
    """Undo what a refused search made: its lock file (unless one was there before), and the
    folders it created (`top` down to `run_dir`) when nothing else is in them."""
    run_dir = run_dir.absolute()
    lock = run_dir / ".lock"
    if not had_lock and lock.is_file() and lock.stat().st_size == 0:
        lock.unlink()
    if top is not None:
        remove_empty(run_dir, top)


def remove_empty(folder: Path, top: Path) -> None:
    """Remove `folder` and the folders above it up to `top` (included), each only while it is
    empty: undoing what a refused run made."""
    top = top.absolute()
    for p in [folder.absolute(), *folder.absolute().parents]:
        try:
            p.rmdir()  # an empty folder only
        except OSError:
            return
        if p == top:
            return


class SearchError(UserError):
    """A search that could not train a single genotype."""
