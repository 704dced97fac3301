"""Weights & Biases logging: one run per trial, grouped by study, plus a study summary run.

Offline by default (files under the run directory, `wandb sync` uploads them later),
`online` when the user is logged in, `disabled` to skip W&B entirely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["Tracker"]


class Tracker:
    def __init__(self, mode: str, project: str, entity: str | None, group: str, run_dir: Path):
        self.mode = mode
        self.project, self.entity, self.group = project, entity, group
        self.run_dir = Path(run_dir)
        self._run = None
        self._wandb = None
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self._wandb = wandb

    @property
    def enabled(self) -> bool:
        return self._wandb is not None

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
            self._run = self._init(name, job_type, config)

    def start_trial(self, number: int, config: dict[str, Any]) -> None:
        self.start_run(f"{self.group}-trial-{number}", "trial", config)

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.log({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def finish_trial(self, summary: dict[str, Any]) -> None:
        if self._run is not None:
            for key, value in summary.items():
                self._run.summary[key] = value
            self._run.finish()
            self._run = None

    def study_summary(self, rows: list[dict[str, Any]], figure: Any | None,
                      summary: dict[str, Any]) -> None:
        """One run holding a table of every trial and the accuracy-vs-MFLOPs plot."""
        if not self.enabled:
            return
        wandb = self._wandb
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


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)
