"""`python -m nas.search +space=mnv2 +budget.mflops=300`: the search, as a Hydra app.

Before Hydra starts, the command line is composed and validated once here, so that
bad input (an unknown space, a negative budget, a missing dataset path) ends with one
line on stderr and exit status 2 instead of a traceback, and before any storage is
touched.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nas.cli import UsageError, config_keys, explain_override, first_line
from nas.config import MAX_RESOLUTION, ConfigError, SearchConfig, derive_study_name
from nas.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("space", "data", "sampler", "pruner", "storage", "proxy")


def _study_name(*, _root_: DictConfig) -> str:
    return derive_study_name(OmegaConf.to_container(_root_, resolve=False))


OmegaConf.register_new_resolver("nas_study_name", _study_name, replace=True)


def _worker_dir(*, _root_: DictConfig) -> str:
    worker = _root_.get("worker")
    return f"/worker-{worker}" if worker is not None else ""


OmegaConf.register_new_resolver("nas_worker_dir", _worker_dir, replace=True)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def search_keys() -> list[str]:
    """Every key of the search config with its default groups (for "did you mean")."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=["+space=mnv2"])
    return config_keys(OmegaConf.to_container(cfg, resolve=False))


def precheck(argv: list[str]) -> SearchConfig:
    """Compose and validate the command line as Hydra would, raising `UserError`s."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as err:
        raise UsageError(f"cannot parse the command line: {first_line(err)}") from None
    plain: list[str] = []
    run_dir: str | None = None
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            if not values:
                raise UsageError(f"{key}: empty sweep")
            value = values[0]
        else:
            value = o.get_value_element_as_str()
        if key.startswith("hydra"):
            if key == "hydra.run.dir":
                run_dir = value
            continue
        if key in GROUPS and value not in group_options(key):
            raise UsageError(f"unknown {key} {value!r}; valid: {', '.join(group_options(key))}")
        prefix = o.get_key_element()[: len(o.get_key_element()) - len(key)]
        plain.append(f"{prefix}{key}={value}")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("search", overrides=plain)
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", None) or "a value"
        raise UsageError(f"{key} is required here: add {key}=<value>") from None
    except Exception as err:
        raise UsageError(explain_override(first_line(err), search_keys(), GROUPS)) from None
    if "space" not in container:
        from search_spaces import NAMES

        raise ConfigError(f"no search space chosen: add +space=NAME; valid: {', '.join(NAMES)}")
    cfg_obj = SearchConfig.from_container(container)
    _check_writable(run_dir or f"outputs/{cfg_obj.study_name}")
    if cfg_obj.data.root is not None and cfg_obj.data.name != "digits":
        from nas.data import make_datamodule

        make_datamodule(cfg_obj.data.name, root=cfg_obj.data.root).check()
    return cfg_obj


def _check_writable(path: str) -> None:
    if "${" in path:
        path = "."
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {str(target)!r} is not writable (set hydra.run.dir=<a "
                         "writable folder>)")


def apply_space_overrides(cfg: SearchConfig):
    from search_spaces import get_space

    space = get_space(cfg.space.name)
    if cfg.space.width:
        if any(not 0 < w <= 4 for w in cfg.space.width):
            raise ConfigError(f"space.width={cfg.space.width} is not valid: widths must be in (0, 4]")
        space = replace(space, width=tuple(cfg.space.width))
    if cfg.space.resolution:
        if any(not 8 <= r <= MAX_RESOLUTION for r in cfg.space.resolution):
            raise ConfigError(f"space.resolution={cfg.space.resolution} is not valid: resolutions "
                              f"must be in [8, {MAX_RESOLUTION}]")
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


def open_search_study(cfg: SearchConfig, shared_dir: Path, seed: int):
    """Open (creating if needed) the study `cfg` describes; refuses a mismatched one."""
    from nas.study import directions, make_pruner, make_sampler, open_storage, open_study, study_identity

    url = storage_url(cfg, shared_dir)
    shared_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, cfg.storage.heartbeat, cfg.storage.max_retry)
    name = cfg.study_name or cfg.default_study_name()
    dirs = directions(cfg)
    study, existed = open_study(storage, name, study_identity(cfg, dirs),
                                make_sampler(cfg, seed, len(dirs)), make_pruner(cfg))
    return study, existed, url


def run_search(cfg: SearchConfig, run_dir: Path, out=sys.stdout,
               shared_dir: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the study described by `cfg`, writing results into `run_dir`.

    `shared_dir` holds the default storage file; workers of one multirun pass the sweep
    directory so that they share one study.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = claim_run_dir(run_dir)
    try:
        return _search(cfg, run_dir, out, shared_dir)
    finally:
        lock.close()


def _search(cfg: SearchConfig, run_dir: Path, out, shared_dir: Path | None) -> dict[str, Any]:
    from nas import report
    from nas.runner import Searcher, set_threads
    from nas.tracking import Tracker

    set_threads(cfg.proxy.threads)
    space = apply_space_overrides(cfg)
    name = cfg.study_name or cfg.default_study_name()
    tracker = Tracker(cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, name, run_dir)
    searcher = Searcher(cfg, space, None, run_dir, tracker, out)  # loads and checks the data
    rng = searcher.check_budget_feasible()
    seed = cfg.seed + (cfg.worker or 0)
    study, existed, url = open_search_study(cfg, shared_dir or run_dir, seed)
    searcher.study = study
    if not existed:
        study.set_user_attr("data_shape", {"num_classes": searcher.num_classes,
                                           "in_channels": searcher.in_channels})
    searcher.print(
        f"study {name} ({'resumed' if existed else 'new'}) in {url}\n"
        f"space {space.name}: {space.size():.3e} genotypes, {rng['macs'][0] / 1e6:.1f} to "
        f"{rng['macs'][1] / 1e6:.1f} MFLOPs; budget "
        + ", ".join(f"{k} <= {v}" for k, v in cfg.budget.items())
        + f"; data {cfg.data.name} ({searcher.num_classes} classes); proxy "
        + (f"{cfg.proxy.kind} score (zero-cost, no training)" if cfg.proxy.kind != "train"
           else f"{cfg.proxy.epochs} epochs") + f" at {cfg.proxy.resolution}px; "
        f"sampler {cfg.sampler.name}, pruner {cfg.pruner.name}; "
        + (f"latency {searcher.judge.source}; " if searcher.judge else "")
        + f"run directory {run_dir}")
    reference = searcher.train_reference() if cfg.reference else None
    with _sigterm_as_interrupt():
        searcher.run()
    if searcher.abort:
        searcher.print(f"stopped early: {searcher.abort}")

    best = report.ranked(study)
    n = report.counts(study)
    csv_path, json_path = report.write_tables(study, run_dir)
    plot_cost = cfg.pareto_cost if cfg.objective == "pareto" else "mflops"
    plots = report.write_plots(study, run_dir, reference, plot_cost)
    searcher.print(f"\n{n['trained'] + n['pruned']} trained ({n['pruned']} pruned), {n['rejected']} "
                   f"rejected before training, {n['duplicate']} duplicates, {n['failed']} failed"
                   + (f", {n['filtered']} skipped by the {cfg.proxy.prefilter} pre-filter"
                      if n["filtered"] else "")
                   + (f", {n['stopped']} stopped when the study was full" if n["stopped"] else ""))
    if best and cfg.objective == "pareto":
        front = report.pareto_front(best, cfg.pareto_cost)
        searcher.print(f"Pareto front of accuracy and {cfg.pareto_cost} ({len(front)} trials):")
        searcher.print(report.format_table(front, reference, len(front)))
    elif best:
        searcher.print(report.format_table(best, reference, cfg.top_k))
    else:
        searcher.print("no trial finished training")
    searcher.print(f"all trials: {csv_path} and {json_path}; plots: "
                   + (", ".join(p.name for p in plots) or "none"))
    summary = {"study": name, "best_accuracy": best[0]["accuracy"] if best else None,
               "best_mflops": best[0]["mflops"] if best else None,
               "best_genotype": best[0]["genotype"] if best else None,
               "reference_accuracy": reference.get("accuracy") if reference else None, **n}
    tracker.study_summary(report.rows(study), report.pareto_figure(study, reference, plot_cost),
                          summary)
    if not best and (searcher.abort or n["failed"] or n["rejected"]):
        raise SearchError(searcher.abort or (
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
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


class SearchError(UserError):
    """A search that could not train a single genotype."""


class _sigterm_as_interrupt:
    """SIGTERM or Ctrl-C (a scheduler ending the job, a user stopping it) stops the search
    cleanly: the trial in training is marked FAIL with the reason, no trial is left
    RUNNING, and the process exits with status 130."""

    def __enter__(self):
        import signal
        import threading

        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        import signal

        from nas.runner import Terminated

        # An Exception, not KeyboardInterrupt: Lightning turns the latter into exit(1)
        # without unwinding, which would leave the trial RUNNING.
        raise Terminated(signal.Signals(signum).name)

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _shared_dir(run_dir: Path) -> Path:
    """The sweep directory in a multirun (one study for all workers), else the run directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir)
    # A worker started by hand (+worker=N) runs in outputs/<study>/worker-N, beside its study.
    return run_dir.parent if run_dir.name.startswith("worker-") else run_dir


@hydra.main(config_path=str(CONF_DIR), config_name="search", version_base="1.3")
def _task(cfg: DictConfig) -> float | None:
    from nas.cli import hydra_task

    def job(scfg: SearchConfig, run_dir: Path) -> dict[str, Any]:
        return run_search(scfg, run_dir, shared_dir=_shared_dir(run_dir))

    return hydra_task(cfg, SearchConfig.from_container, job).get("best_accuracy")


def create_before_fanout(cfg: SearchConfig, argv: list[str]) -> None:
    """In a multirun, create (and check) the shared study once, before workers start."""
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")),
                 f"multirun/{cfg.study_name}")
    shared = Path(sweep).expanduser()
    if cfg.storage.name != "postgres" or cfg.storage.url:
        study, existed, url = open_search_study(cfg, shared.absolute(), cfg.seed)
        print(f"study {study.study_name} ({'resumed' if existed else 'created'}) in {url}; "
              "launching workers", flush=True)


HELP_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion",
              "-sc", "--resolve")


def main() -> None:
    if any(a.split("=")[0] in HELP_FLAGS for a in sys.argv[1:]):
        _task()
        return
    try:
        cfg = precheck(sys.argv[1:])
        if any(a in ("-m", "--multirun") for a in sys.argv[1:]):
            create_before_fanout(cfg, sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _task()


if __name__ == "__main__":
    main()
