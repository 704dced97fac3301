"""Stopping a worker cleanly when it is asked to: Ctrl-C, SIGTERM (`scancel`, a requeue or
a preemption by the scheduler) or submitit's time-limit warning (SIGUSR2 by default,
`signal_delay_s` before the limit).

The handler only records the first signal; the worker acts on it at its next safe point
(`StopSignals.check`): before every training batch and at the start of a trial, where
`Terminated` ends the trial in flight (marked FAIL with the reason), and after each trial,
where the loop stops before the next one. A time-limit warning comes up to a minute (or
`signal_delay_s`) early: the worker goes on with its trials until `MARGIN_S` seconds before
the job's end (asked of `squeue`), so a trial that can finish does and no allocation ends
unused; SIGTERM and Ctrl-C stop it at once. An exception raised from inside the handler
could land anywhere (in a storage write, or in library code that swallows it), so it is
not raised there. Later signals are ignored, so the cleanup is never cut short. After the
cleanup, a time-limit warning is handed to submitit's own handler (`requeue`), which
requeues the job (a requeued worker resumes the study) or ends it when no requeue is left.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

__all__ = ["MARGIN_S", "Interrupted", "StopSignals", "Terminated", "job_end"]

MARGIN_S = 20.0  # left before a job's end for the cleanup and submitit's requeue


class Terminated(Exception):
    """The worker was asked to stop while it ran a trial.

    An Exception, not a KeyboardInterrupt: Lightning turns the latter into `exit(1)` without
    unwinding, which would leave the trial RUNNING.
    """


class Interrupted(KeyboardInterrupt):
    """The search stopped on a signal after its cleanup; `requeue`, when set, hands the
    signal on to submitit (requeue the job, or end it when no requeue is left)."""

    def __init__(self, reason: str, requeue: Callable[[], None] | None = None):
        super().__init__(reason)
        self.reason, self.requeue = reason, requeue


def _preempt_signal() -> signal.Signals | None:
    """The signal submitit's SLURM jobs are warned with before their time limit, when this
    process is a submitit job (submitit's handler is installed for it), else None."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    sig = getattr(signal, name, None)
    if sig is None:
        return None
    handler = signal.getsignal(sig)
    owner = getattr(handler, "__self__", None)
    return sig if owner is not None and type(owner).__module__.startswith("submitit.") else None


def job_end() -> float | None:
    """When this SLURM job reaches its time limit (a Unix time), or None when unknown."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return datetime.datetime.fromisoformat(out.splitlines()[0]).timestamp()
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def describe(signum: int) -> str:
    name = signal.Signals(signum).name
    if signum == signal.SIGINT:
        return f"{name} (Ctrl-C)"
    if signum == signal.SIGTERM:
        return f"{name} (the job was cancelled, requeued or preempted)"
    return f"{name} (the time limit is near)"


class StopSignals:
    """Handlers for SIGTERM, SIGINT and (in a submitit job) its time-limit signal, installed
    for the duration of a `with` block in the main thread (elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reason: str | None = None  # why the worker is stopping, once asked to
        self.deadline: float | None = None  # until when a trial in flight may go on
        self._previous: dict[int, object] = {}
        self._preempt: signal.Signals | None = None
        self._preempt_handler: object = None  # submitit's, kept past the block for `requeue`

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._preempt = _preempt_signal()
            for sig in (signal.SIGTERM, signal.SIGINT, self._preempt):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
            self._preempt_handler = self._previous.get(self._preempt)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False

    def _handle(self, signum: int, frame) -> None:
        if self.reason is None:  # later ones: already stopping, let the cleanup finish
            self.signum, self.reason = signum, describe(signum)
        elif signum != self._preempt:
            self.deadline = time.time()  # SIGTERM after the warning: no more grace

    def expired(self) -> bool:
        """Whether the worker must stop now: asked to, and past any grace a time-limit
        warning leaves."""
        if self.reason is None:
            return False
        if self.deadline is None:
            end = job_end() if self.signum == self._preempt else None
            self.deadline = end - MARGIN_S if end is not None else time.time()
        return time.time() >= self.deadline

    def check(self) -> None:
        """Raise `Terminated` once the worker must stop (see `expired`)."""
        if self.expired():
            raise Terminated(self.reason)

    def requeue(self) -> Callable[[], None] | None:
        """submitit's handler for the time-limit signal, bound to it, when that signal is what
        stopped the worker (call it after the cleanup, outside this block)."""
        handler = self._preempt_handler
        if self.signum is None or self.signum != self._preempt or not callable(handler):
            return None
        signum = self.signum
        return lambda: handler(signum, None)
