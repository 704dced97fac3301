"""`python -m nas.search +space=mnv2 +budget.mflops=300`: the search, as a Hydra app.

Before Hydra starts, the command line is composed and validated once here, so that
bad input (an unknown space, a negative budget, a missing dataset path) ends with one
line on stderr and exit status 2 instead of a traceback, and before any storage is
touched. The search itself is `nas.search.run.run_search`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nas.cli.common import (
    CONF_DIR,
    UsageError,
    cannot_create,
    check_data,
    checked_main,
    config_keys,
    explain_override,
    first_line,
    note_run_dir,
)
from nas.common.config import SearchConfig, config_error, derive_study_name, register_schemas
from nas.errors import UserError
from nas.search.run import open_search_study, run_search

__all__ = ["GROUPS", "composition_error", "group_options", "main", "precheck"]




GROUPS = ("space", "data", "sampler", "pruner", "storage", "proxy")
register_schemas()  # conf/search.yaml extends search_schema


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
        raise UsageError(explain_override(str(err), (), ())) from None
    plain: list[str] = []
    run_dir: str | None = None
    pruner: str | None = None  # what the command line asks of a pruner, if anything
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
            if key == "hydra/launcher" and value.startswith("slurm"):
                _require_submitit(value)
            if key == "hydra.run.dir":
                run_dir = value
            continue
        if key in GROUPS and value not in group_options(key):
            raise UsageError(f"unknown {key} {value!r}; valid: {', '.join(group_options(key))}")
        if (key == "pruner" and value != "none") or key.startswith("pruner."):
            pruner = f"{key}={value}"
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
        raise composition_error(err, search_keys, GROUPS) from None
    cfg_obj = SearchConfig.from_container(container)
    from nas.search.run import apply_space_overrides

    apply_space_overrides(cfg_obj)  # the space's choices as overridden, checked
    if pruner is not None:
        from nas.search.evaluate import EVALUATORS

        if not EVALUATORS[cfg_obj.proxy.kind].reports_epochs:
            raise UsageError(f"{pruner} is not valid with proxy.kind={cfg_obj.proxy.kind}: it scores a "
                             "candidate at once, with no epochs for a pruner to stop; leave the pruner out "
                             "(or pruner=none), or use the training proxy (proxy=default)")
    target = run_dir or f"outputs/{cfg_obj.study_name}"
    _check_writable(target)
    note_run_dir(target)
    check_data(cfg_obj.data)
    return cfg_obj


def _require_submitit(launcher: str) -> None:
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise UsageError(f"hydra/launcher={launcher} needs hydra-submitit-launcher, which is not installed: "
                         "pip install 'nas[cluster]' (or hydra/launcher=local for workers on this machine)")


def composition_error(err: Exception, keys: Callable[[], list[str]], groups: tuple[str, ...]) -> UserError:
    """One line for Hydra's refusal to compose: the schema's type or key error (OmegaConf's,
    under Hydra's "Error merging override"), else the closest key and the `+` rule."""
    from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

    cause = err.__cause__ or err.__context__
    if isinstance(cause, OmegaConfBaseException) and not isinstance(cause, ConfigAttributeError):
        return config_error(cause)
    return UsageError(explain_override(first_line(err), keys(), groups))


def _check_writable(path: str) -> None:
    if "${" in path:
        path = "."
    target = Path(path).expanduser().absolute()
    problem = cannot_create(target)
    if problem:
        raise UsageError(f"output directory {str(target)!r} is not writable: {problem} (set "
                         "hydra.run.dir=<a writable folder>)")


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
    from nas.cli.common import hydra_task

    def job(scfg: SearchConfig, run_dir: Path, on_accept: Callable[[], None]) -> dict[str, Any]:
        shared = _shared_dir(run_dir)
        scfg, run_dir = task_slot(scfg, run_dir)
        return run_search(scfg, run_dir, shared_dir=shared, on_accept=on_accept)

    return hydra_task(cfg, SearchConfig.from_container, job).get("best_accuracy")


def task_slot(cfg: SearchConfig, run_dir: Path) -> tuple[SearchConfig, Path]:
    """Under SLURM with several tasks per array job (`tasks_per_node: k`), each task is a worker
    of its own: worker `w * k + task`, so it has its own seed and GPU share, and a run directory
    of its own (`worker-<w>/task-<task>`)."""
    from dataclasses import replace

    tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if tasks < 2 or cfg.worker is None:
        return cfg, run_dir
    task = int(os.environ.get("SLURM_LOCALID", os.environ.get("SLURM_PROCID", "0")) or 0)
    return replace(cfg, worker=cfg.worker * tasks + task), run_dir / f"task-{task}"


def create_before_fanout(cfg: SearchConfig, argv: list[str]) -> None:
    """In a multirun, create (and check) the shared study once, before workers start."""
    shared = _sweep_dir(cfg, argv)
    if cfg.proxy.kind == "supernet":
        path = Path(cfg.proxy.supernet).expanduser() if cfg.proxy.supernet else shared / "supernet.pt"
        if not path.is_file():
            raise UsageError(f"proxy=supernet in a multirun needs an existing supernet, and "
                             f"{str(path)!r} is not one: train it first (python -m nas.supernet train "
                             f"+space={cfg.space.name} with the same data= settings), then pass "
                             "proxy.supernet=<its supernet.pt>")
    if cfg.storage.name != "postgres" or cfg.storage.url:
        from nas.search.study import quiet_optuna

        with quiet_optuna():
            study, existed, url = open_search_study(cfg, shared.absolute(), cfg.seed)
        print(f"study {study.study_name} ({'resumed' if existed else 'created'}) in {url}; "
              "launching workers", flush=True)




def _precheck_and_create(argv: list[str]) -> SearchConfig:
    from nas.common.config import DEVICE_HERE

    multirun = any(a in ("-m", "--multirun") for a in argv)
    token = DEVICE_HERE.set(not multirun)  # a worker checks its own accelerator where it runs
    try:
        cfg = precheck(argv)
    finally:
        DEVICE_HERE.reset(token)
    if multirun:
        create_before_fanout(cfg, argv)
    return cfg


def _sweep_dir(cfg: SearchConfig, argv: list[str]) -> Path:
    return Path(next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")),
                     f"multirun/{cfg.study_name}")).expanduser()


def print_study_table(cfg: SearchConfig, argv: list[str]) -> None:
    """The results table of a multirun's shared study, once its workers have returned."""
    import optuna

    from nas.search import report
    from nas.search.run import storage_url
    from nas.search.study import StudyError, open_read_only

    try:
        study = optuna.load_study(study_name=cfg.study_name,
                                  storage=open_read_only(storage_url(cfg, _sweep_dir(cfg, argv))))
    except (StudyError, KeyError, ValueError) as err:  # a storage only the workers could reach
        print(f"(no results table: the study could not be read here: {first_line(err)})")
        return
    best = report.ranked(study)
    print(f"\nstudy {study.study_name}: {report.counts_line(report.counts(study), cfg.proxy.prefilter)}")
    print(report.format_table(best, study.user_attrs.get("reference"), cfg.top_k) if best
          else "no trial finished training")


def main() -> None:
    import sys

    argv, checked = sys.argv[1:], []

    def check(args: list[str]) -> SearchConfig:
        checked.append(_precheck_and_create(args))
        return checked[-1]

    checked_main(check, _task, command="nas.search")
    if checked and any(a in ("-m", "--multirun") for a in argv):
        print_study_table(checked[-1], argv)
