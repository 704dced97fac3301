"""hydra-submitit-launcher's SLURM and local launchers, reporting every task.

Upstream's `launch` waits for the tasks in order and raises at the first one that did not
finish, so a cancelled task ends the submitting command with a raw traceback while the
other workers are still training. These launchers wait for all of them (polling `sacct`
at least every `poll_s` seconds, so a long sweep still returns soon after its last task),
print one line per task as it ends — finished, cancelled, timed out, failed, with its job
id — and exit with status 1 after the last one when any task did not finish.

The configs `hydra/launcher=slurm|slurm_gpu|local` (in `conf/`) select them. Without
the `cluster` extra the classes do not exist and those configs say what to install.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
except ImportError:  # the cluster extra is not installed
    BaseSubmititLauncher = None

__all__ = ["LocalLauncher", "SlurmLauncher", "TaskOutcome", "describe"]

log = logging.getLogger(__name__)
TIMED_OUT = "timed out (no requeue left: raise hydra.launcher.max_num_timeout or timeout_min)"


class TaskOutcome(NamedTuple):
    # Not a dataclass: Hydra's plugin scan executes this module outside sys.modules.
    finished: bool
    text: str  # "finished", "cancelled (...)", "timed out", "failed: ..."
    result: Any = None  # the task's JobReturn when it finished


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):  # our one-line refusals and interruptions first
        if line.startswith(("error:", "interrupted")):
            return line
    return lines[-1][:300] if lines else ""


def describe(state: str, stderr: str | None) -> str:
    """What a task that produced no result went through, from its scheduler state."""
    upper = (state or "UNKNOWN").upper()
    if upper.startswith("CANCELLED"):
        return f"cancelled ({state})"
    if upper.startswith("TIMEOUT"):
        return TIMED_OUT
    if upper.startswith("PREEMPTED"):
        return "preempted"
    if upper.startswith("OUT_OF_MEMORY"):
        return "out of memory (raise hydra.launcher.mem_gb)"
    if upper.startswith("NODE_FAIL"):
        return "its node failed"
    detail = _last_line(stderr or "")
    return f"failed ({state})" + (f": {detail}" if detail else "")


def outcome(job) -> TaskOutcome:
    """One finished submitit job's outcome."""
    from hydra.core.utils import JobStatus
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        ret = job.results()[0]
    except UncompletedJobError:
        return TaskOutcome(False, describe(job.state, job.stderr()))
    except FailedJobError as err:
        return TaskOutcome(False, f"failed: {_last_line(str(err))}")
    if getattr(ret, "status", None) == JobStatus.FAILED:
        error = getattr(ret, "_return_value", None)
        message = str(error).splitlines()[0] if error is not None and str(error) else type(error).__name__
        if "timed-out too many times" in message:
            return TaskOutcome(False, TIMED_OUT)
        return TaskOutcome(False, f"failed: {type(error).__name__}: {message}")
    return TaskOutcome(True, "finished", ret)


if BaseSubmititLauncher is not None:

    class _ReportingLauncher(BaseSubmititLauncher):
        poll_s = 10.0  # the longest wait between two scheduler queries

        def _executor(self):
            import submitit
            from omegaconf import OmegaConf

            params = dict(self.params)
            folder = params.pop("submitit_folder")
            init = {}
            if "max_num_timeout" in params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
            executor = submitit.AutoExecutor(folder=folder, cluster=self._EXECUTOR, **init)
            common = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{key if key in common else f"{self._EXECUTOR}_{key}": value
                                          for key, value in params.items()})
            return executor

        def launch(self, job_overrides, initial_job_idx):
            from hydra.core.singleton import Singleton
            from hydra.core.utils import filter_overrides

            assert self.config is not None and job_overrides
            executor = self._executor()
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
            numbers = [initial_job_idx + i for i in range(len(job_overrides))]
            for number, overrides in zip(numbers, job_overrides, strict=True):
                log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
            state = Singleton.get_state()
            n = len(numbers)
            jobs = executor.map_array(self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * n,
                                      numbers, [f"job_id_for_{k}" for k in numbers], [state] * n)
            kind = "SLURM job" if self._EXECUTOR == "slurm" else "job"
            print(f"submitted {len(jobs)} task(s) as {kind} {jobs[0].job_id.split('_')[0]}; waiting for "
                  f"them (logs in {self.params['submitit_folder']})", flush=True)
            outcomes = self._wait(jobs, numbers, kind)
            failed = [f"#{k}" for k, o in zip(numbers, outcomes, strict=True) if not o.finished]
            if failed:
                print(f"{len(failed)} of {len(jobs)} task(s) did not finish ({', '.join(failed)}); "
                      "rerun the same command to resume the study", file=sys.stderr, flush=True)
                sys.exit(1)
            return [o.result for o in outcomes]

        def _wait(self, jobs, numbers, kind) -> list[TaskOutcome]:
            """Wait for every task, printing each one's line as soon as it has ended."""
            outcomes: dict[int, TaskOutcome] = {}
            while len(outcomes) < len(jobs):
                # One forced scheduler query per round (it covers every job of the array).
                pending = [i for i in range(len(jobs)) if i not in outcomes]
                for k, i in enumerate(pending):
                    if jobs[i].done(force_check=k == 0):
                        outcomes[i] = outcome(jobs[i])
                        print(f"task #{numbers[i]} ({kind} {jobs[i].job_id}): {outcomes[i].text}",
                              file=sys.stdout if outcomes[i].finished else sys.stderr, flush=True)
                if len(outcomes) < len(jobs):
                    time.sleep(self.poll_s)
            return [outcomes[i] for i in range(len(jobs))]

    class SlurmLauncher(_ReportingLauncher):
        _EXECUTOR = "slurm"

    class LocalLauncher(_ReportingLauncher):
        _EXECUTOR = "local"
