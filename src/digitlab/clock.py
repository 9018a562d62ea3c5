"""Where ``time_to_first_step_s`` counts from: the command's start (``digitlab.STARTED``,
imports and set-up included), or the start of the job that trains, when it began later."""

from __future__ import annotations

import time

import digitlab

# The job timed now, (its start, what the log line calls it); None: the command itself.
job: tuple[float, str] | None = None


def job_started(label: str = "the job started") -> None:
    """Count from now, naming the moment ``label`` in the log line: called as each job of a sweep
    starts (a later job runs in a process started long before it, by the sweep or a launcher's
    worker) and as ``digitlab.fit`` is called (a notebook imported digitlab whenever it did)."""
    global job
    job = time.time(), label


def since() -> tuple[float, str]:
    """(the moment counted from, what the log line calls it)."""
    return job or (digitlab.STARTED, "the command started")
