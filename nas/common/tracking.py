"""Weights & Biases logging: one run per trial, grouped by study, plus a study summary run.

Offline by default (files under the run directory, `wandb sync` uploads them later),
`online` when the user is logged in, `disabled` to skip W&B entirely.

W&B is a record of the search, never a reason for it to fail: when W&B stops answering
(its service process was killed with the job's other processes by `scancel`, or the
network went away), the tracker logs one warning and the search goes on without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Tracker"]

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, mode: str, project: str, entity: str | None, group: str, run_dir: Path):
        self.mode = mode
        self.project, self.entity, self.group = project, entity, group
        self.run_dir = Path(run_dir)
        self._run = None
        self._wandb = None  # the module while W&B works; None when disabled or once it failed
        self._module = None  # the module, kept to shut W&B down at the end even after a failure
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self._wandb = self._module = wandb

    @property
    def enabled(self) -> bool:
        return self._wandb is not None

    def _guarded(self, what: str, call: Callable[[], Any]) -> Any:
        """`call()`, or None once W&B has failed: it is then switched off for this process."""
        if self._wandb is None:
            return None
        try:
            return call()
        except Exception as err:  # W&B raises many kinds (connection, protocol, timeouts)
            log.warning("W&B stopped working (%s: %s: %s); the search goes on without it",
                        what, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self._wandb, self._run = None, None
            return None

    def _init(self, name: str, job_type: str, config: dict[str, Any]):
        wandb = self._wandb
        settings = wandb.Settings(silent=True, console="off", quiet=True)
        return wandb.init(project=self.project, entity=self.entity, group=self.group,
                          job_type=job_type, name=name, config=config, dir=str(self.run_dir),
                          mode=self.mode, settings=settings, reinit="finish_previous")

    def start_run(self, name: str, job_type: str, config: dict[str, Any]) -> None:
        """Start one W&B run (finishing any open one first: two runs must never merge)."""
        if self.enabled:
            self.finish_trial({})
            self._run = self._guarded("init", lambda: self._init(name, job_type, config))

    def start_trial(self, number: int, config: dict[str, Any]) -> None:
        self.start_run(f"{self.group}-trial-{number}", "trial", config)

    def log_epoch(self, row: dict[str, Any]) -> None:
        run = self._run
        if run is not None:
            self._guarded("log", lambda: run.log({k: v for k, v in row.items()
                                                  if isinstance(v, (int, float))}))

    def finish_trial(self, summary: dict[str, Any]) -> None:
        run, self._run = self._run, None
        if run is None:
            return

        def finish() -> None:
            for key, value in summary.items():
                run.summary[key] = value
            run.finish()

        self._guarded("finish", finish)

    def study_summary(self, rows: list[dict[str, Any]], figure: Any | None,
                      summary: dict[str, Any]) -> None:
        """One run holding a table of every trial and the accuracy-vs-MFLOPs plot."""
        if not self.enabled:
            return
        wandb = self._wandb

        def log_summary() -> None:
            run = self._init(f"{self.group}-summary", "summary", summary)
            if rows:
                columns = sorted({k for r in rows for k in r})
                table = wandb.Table(columns=columns,
                                    data=[[_cell(r.get(c)) for c in columns] for r in rows])
                run.log({"trials": table})
            if figure is not None:
                run.log({"pareto_front": wandb.Plotly(figure)})
            for key, value in summary.items():
                run.summary[key] = value
            run.finish()

        self._guarded("summary", log_summary)

    def close(self) -> None:
        """Finish any open run and shut W&B's service down now, quietly if it is already gone
        (W&B's own exit hook would print a traceback then)."""
        self.finish_trial({})
        wandb, self._wandb, self._module = self._module, None, None
        if wandb is not None:
            try:
                wandb.teardown()
            except Exception as err:
                log.debug("W&B teardown: %s", err)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)
