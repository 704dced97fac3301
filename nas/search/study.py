"""Optuna plumbing: storages, samplers, pruners, and studies that refuse a mismatched resume."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.common.config import CLUTTERED_ONLY, SearchConfig, result_settings, uses_latency
from nas.errors import UserError
from nas.search.status import COUNTED, Status

__all__ = [
    "IDENTITY_KEYS",
    "Beat",
    "StudyError",
    "directions",
    "fail_dead_workers",
    "file_digest",
    "has_own_heartbeat",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "population_for",
    "quiet_optuna",
    "study_identity",
    "trained_count",
    "worker_id",
]



@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Inside, Optuna logs errors only (not a line per trial on stderr: the search's progress
    lines report every trial, failures included) and warns of no experimental features; its
    verbosity and the warning filters from before come back on exit."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


class StudyError(UserError):
    """A storage that cannot be opened or a study that does not match the request."""


# What a study is about: resuming with any of these changed would mix incomparable trials.
IDENTITY_KEYS = ("space", "budget", "objective", "directions", "data", "proxy", "latency")
# Sections that hold every result-changing key of their schema since this version: a study made
# before records fewer, and resumes when the keys it has are unchanged (it then records them all).
GROWN_SECTIONS = ("data", "proxy")


def directions(cfg: SearchConfig) -> list[str]:
    """Accuracy is maximized; a pareto study also minimizes its cost."""
    return ["maximize", "minimize"] if cfg.objective == "pareto" else ["maximize"]


def study_identity(cfg: SearchConfig, directions: list[str]) -> dict[str, Any]:
    p = cfg.proxy
    return {
        "space": {"name": cfg.space.name, "width": cfg.space.width,
                  "resolution": cfg.space.resolution},
        "budget": {k: float(v) for k, v in sorted(cfg.budget.items())},
        "objective": cfg.objective if cfg.objective == "accuracy" else f"pareto:{cfg.pareto_cost}",
        "directions": directions,
        # Every key of the data and proxy schemas that changes what a trial measures (a new knob
        # joins by default; the supernet path is its file's digest below).
        "data": result_settings(cfg.data, () if cfg.data.name == "cluttered_digits" else CLUTTERED_ONLY),
        # (val_images at its default 0 is left out, as in studies from before it existed)
        "proxy": result_settings(p, ("supernet",) + (() if p.val_images else ("val_images",))),
        # A supernet study's values are its supernet's: another file is another study.
        **({"supernet": file_digest(p.supernet)} if p.kind == "supernet" else {}),
        # Milliseconds on ONNX Runtime are not milliseconds in PyTorch eager: a latency study
        # keeps its backend. Absent for torch, as in studies from before there were backends.
        **({"latency": {"backend": cfg.latency.backend}}
           if uses_latency(dataclasses.asdict(cfg)) and cfg.latency.backend != "torch" else {}),
    }


def file_digest(path: str | None) -> str | None:
    """A short hash of a file's bytes (a supernet study's identity holds its file's)."""
    import hashlib

    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def open_storage(url: str, heartbeat: int | None = None,
                 max_retry: int = 0) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`, or a `StudyError` saying why it cannot be opened.

    With `heartbeat` (seconds), a database storage marks a trial whose worker stopped
    beating (killed) FAIL after four intervals and re-queues it up to `max_retry` times.
    """
    is_journal = _journal_file(url) is not None
    if "://" not in url and not is_journal:
        raise StudyError(f"storage {url!r} is not a storage URL; valid: sqlite:///FILE, journal:FILE, "
                         "postgresql+psycopg2://USER@HOST:PORT/DB")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if path.exists():
            if not _is_sqlite(path):
                raise StudyError(f"storage {url!r} is not an SQLite database (file left untouched)")
        elif not path.parent.is_dir():
            raise StudyError(f"storage {url!r}: folder {str(path.parent)!r} does not exist")
    if is_journal:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = _journal_file(url)
        folder = Path(path).expanduser().absolute().parent
        if not folder.is_dir():
            raise StudyError(f"storage {url!r}: folder {str(folder)!r} does not exist (create it, on a "
                             "filesystem every worker sees)")
        try:
            return JournalStorage(JournalFileBackend(path))
        except Exception as err:
            raise StudyError(f"storage {url!r} cannot be opened: {_first_line(err)}") from None
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes may share the file: wait for locks instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        kwargs["heartbeat_interval"] = heartbeat
        kwargs["grace_period"] = heartbeat * 4
        if max_retry:
            kwargs["heartbeat_stale_trial_callback"] = \
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    storage = _connect(url, kwargs)
    if url.startswith("sqlite:///"):
        _fast_sqlite(storage)
    return storage


def open_read_only(url: str) -> optuna.storages.BaseStorage:
    """A storage opened only to be read (`nas.export`): a file that does not exist, or is not
    a study database, is refused and left as it was; nothing is created or written."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser()
        if not path.is_file():
            raise StudyError(f"storage {url!r}: no such file (nothing was created)")
        if not _holds_studies(path):
            raise StudyError(f"storage {url!r} is not a study database (no Optuna tables; file left "
                             "untouched)")
        return _connect(f"sqlite:///file:{path.resolve()}?{_read_mode(path)}&uri=true",
                        {"skip_table_creation": True, "skip_compatibility_check": True})
    journal = _journal_file(url)
    if journal is not None:
        path = Path(journal).expanduser()
        if not path.is_file() or path.stat().st_size == 0:
            raise StudyError(f"storage {url!r}: no such journal file, or an empty one (nothing was created)")
        return open_storage(url)
    if "://" not in url:
        return open_storage(url)  # its refusal
    return _connect(url, {"skip_table_creation": True})


def _journal_file(url: str) -> str | None:
    """The file of a journal storage URL (`journal:FILE`, `file:FILE`, `*.log`, `*.journal`), else None."""
    if url.startswith(("journal:", "file:")):
        return url.split(":", 1)[1]
    return url if url.endswith((".log", ".journal")) else None


def _read_mode(path: Path) -> str:
    """How to open an SQLite file only to read it. Without a write-ahead log beside it no process
    is writing: as immutable, so that not even SQLite's -wal/-shm files appear; with one a search
    is live: read-only."""
    return "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"


def _holds_studies(path: Path) -> bool:
    """Whether `path` is an SQLite database with Optuna's tables (asked read-only)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{_read_mode(path)}", uri=True, timeout=60)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return {"studies", "trials"} <= {r[0] for r in rows}


def _is_sqlite(path: Path) -> bool:
    """Whether `path` is an SQLite database (an empty file counts: SQLite will fill it).

    Asked through SQLite itself, read-only: a plain open() and close() of the file would
    drop the POSIX locks that this process's live connections hold on it, and another
    worker's writes could then corrupt what those connections read.
    """
    import sqlite3

    if not path.is_file():
        return False
    try:
        # as_uri() needs an absolute path: a relative sqlite:///study.db is relative to the cwd
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return "not a database" not in str(err)
    return True


def _connect(url: str, kwargs: dict[str, Any], attempts: int = 6) -> optuna.storages.RDBStorage:
    """Open an RDB storage, riding out workers that create its schema at the same moment.

    Two processes opening a fresh database together both try to create the tables and
    the version row; the loser sees an integrity error although the schema is now fine.
    """
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as err:
            text = f"{type(err).__name__} {err}"
            racing = any(sign in text for sign in ("IntegrityError", "already exists", "locked",
                                                    "malformed"))
            if not racing or attempt == attempts - 1:
                raise StudyError(f"storage {url!r} cannot be opened: {_first_line(err)}") \
                    from None
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)
    raise AssertionError("unreachable")


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging without an fsync per commit: halves the cost of each trial update.

    WAL needs a local filesystem; for a shared one use the journal storage.
    """
    from sqlalchemy import event

    def pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened so far predate the listener


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def population_for(n_trials: int) -> int:
    """NSGA-II's default generation size for a study of `n_trials` trained trials: a quarter of
    them, within [4, 50]. Only completed trials fill a generation, so a population of n_trials
    or more never breeds: with Optuna's fixed 50 (or our old 20) a 20-trial search was exactly
    random sampling, proposal for proposal."""
    return max(4, min(50, n_trials // 4))


def _tpe(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    s = cfg.sampler
    return optuna.samplers.TPESampler(seed=seed, multivariate=s.multivariate, group=s.multivariate,
                                      n_startup_trials=s.n_startup_trials, constant_liar=s.constant_liar)


def _nsga2(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    size = cfg.sampler.population_size or population_for(cfg.n_trials)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=size)


SAMPLERS = {"tpe": _tpe, "nsga2": _nsga2,
            "random": lambda cfg, seed: optuna.samplers.RandomSampler(seed=seed)}
PRUNERS = {
    "median": lambda cfg: optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner.n_startup_trials,
                                                      n_warmup_steps=cfg.pruner.n_warmup_steps),
    "hyperband": lambda cfg: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.proxy.epochs),
    "none": lambda cfg: optuna.pruners.NopPruner(),
}


def make_sampler(cfg: SearchConfig, seed: int, n_objectives: int = 1) -> optuna.samplers.BaseSampler:
    """The configured sampler; `auto` is TPE for one objective and NSGA-II for two."""
    name = cfg.sampler.name
    if name == "auto":
        name = "nsga2" if n_objectives > 1 else "tpe"
    if name not in SAMPLERS:
        raise StudyError(f"unknown sampler {cfg.sampler.name!r}; valid: auto, {', '.join(SAMPLERS)}")
    return SAMPLERS[name](cfg, seed)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner.name not in PRUNERS:
        raise StudyError(f"unknown pruner {cfg.pruner.name!r}; valid: {', '.join(PRUNERS)}")
    return PRUNERS[cfg.pruner.name](cfg)


def open_study(storage: optuna.storages.BaseStorage, name: str, identity: dict[str, Any],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
               create: bool = True) -> tuple[optuna.Study, bool]:
    """Load study `name` if it exists (refusing a mismatch), else create it.

    Returns the study and whether it already existed.
    """
    directions = identity["directions"]
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        stored = study.user_attrs.get("identity")
        if stored is None:
            raise StudyError(f"study {name!r} in this storage was not made by nas; choose another "
                             "study_name=")
        for key in IDENTITY_KEYS:
            differ = _differences(stored.get(key), identity.get(key), grown=key in GROWN_SECTIONS)
            if differ:
                raise StudyError(
                    f"study {name!r} exists with a different {key}: {differ}; to start a new study add "
                    f"study_name=<new name> (e.g. study_name={name}-2), or resume this one with its "
                    "original settings")
        upgraded = {**stored, **{k: _fill(stored.get(k), v) for k, v in identity.items()}}
        if upgraded != stored:  # a study from before a key joined the identity records it from now on
            study.set_user_attr("identity", upgraded)
        return study, True
    if not create:
        names = ", ".join(sorted(existing)) or "none"
        raise StudyError(f"no study {name!r} in this storage; studies: {names}")
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        # Another worker created it between our check and now: load and check it.
        return open_study(storage, name, identity, sampler, pruner, create=False)
    study.set_user_attr("identity", identity)
    return study, False


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _differences(stored: Any, requested: Any, grown: bool = False) -> str:
    """What differs between a stored identity section and a requested one ("" if nothing). In a
    `grown` section a key the stored one lacks was not recorded by the nas that made the study:
    not a difference."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        keys = [k for k in sorted(set(stored) | set(requested))
                if _short(stored.get(k)) != _short(requested.get(k)) and not (grown and k not in stored)]
        return ", ".join(f"{k} stored {_short(stored.get(k))}, requested {_short(requested.get(k))}"
                         for k in keys)
    if _short(stored) == _short(requested):
        return ""
    return f"stored {_short(stored)}, requested {_short(requested)}"


def _fill(stored: Any, requested: Any) -> Any:
    """A stored identity section completed with the requested keys it lacks."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        return {**requested, **stored}
    return requested if stored is None else stored


def trained_count(study: optuna.Study) -> int:
    """Trials that count toward n_trials: trained to the end or stopped by the pruner."""
    return sum(t.user_attrs.get("status") in COUNTED
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def has_own_heartbeat(study: optuna.Study) -> bool:
    """Whether the study's storage fails a dead worker's trial by itself (databases do; the
    journal file has no heartbeat, so workers write `beat` user attributes instead)."""
    return not isinstance(study._storage, optuna.storages.JournalStorage)


# ----- workers that died without a word (SIGKILL, node failure) ------------------------------
def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def fail_dead_workers(study: optuna.Study, heartbeat: int, max_retry: int) -> list[int]:
    """Fail RUNNING trials whose worker is gone, re-queueing each up to `max_retry` times.

    A worker is gone when it ran on this host and its process no longer exists, or when its
    trial's last beat (`beat` user attr, else its start) is older than four heartbeats. This
    is what the journal storage has instead of Optuna's database heartbeats; on databases it
    only catches same-host deaths sooner. Returns the failed trial numbers.
    """
    host, now, failed = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get("worker", ""))
        name, _, pid = owner.rpartition(":")
        last = t.user_attrs.get("beat") or (t.datetime_start.timestamp() if t.datetime_start else now)
        dead = (name == host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)))
        stale = heartbeat > 0 and now - float(last) > 4 * heartbeat
        if not (dead or stale):
            continue
        why = f"worker {owner or '?'} died" if dead else f"worker {owner or '?'} stopped beating"
        storage = study._storage
        try:
            storage.set_trial_user_attr(t._trial_id, "status", Status.FAILED)
            storage.set_trial_user_attr(t._trial_id, "reason", why)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        if max_retry:
            frozen = storage.get_trial(t._trial_id)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            retry(study, _without(frozen, ("status", "reason", "worker", "beat")))
    return failed


def _without(trial: optuna.trial.FrozenTrial, keys: tuple[str, ...]) -> optuna.trial.FrozenTrial:
    clone = copy.deepcopy(trial)
    for key in keys:
        clone.user_attrs.pop(key, None)
    return clone


class Beat:
    """Writes the trial's `beat` user attr every `interval` seconds while training runs."""

    def __init__(self, trial: optuna.Trial, interval: int):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("beat", time.time())
            except Exception:  # the trial ended under us; the main thread reports that
                return

    def __enter__(self) -> Beat:
        if self.interval > 0:
            self.trial.set_user_attr("beat", time.time())
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
