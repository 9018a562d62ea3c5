"""Runs whose process died without ending them (SIGKILL, out of memory, power cut): each run
records the process that owns it, and the next command on the store marks dead owners' runs
KILLED, keeping their last checkpoint, instead of leaving them RUNNING forever."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, START_TAG = "digitlab.owner.host", "digitlab.owner.pid", "digitlab.owner.start"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: _start_time(pid)}


def is_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, if known) still runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return not start or _start_time(pid) in ("", start)


def reap_dead_owners(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``experiment_id`` whose owner process on this host is
    gone, logging their ``last.ckpt`` first; returns (and logs) one line per run.

    Runs owned on other hosts are left alone: whether their process lives cannot be told here.
    """
    from digitlab.tracking.run import CHECKPOINT_DIR_TAG

    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    lines = []
    for run in client.search_runs([experiment_id], query, max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = int(tags.get(PID_TAG, "0") or 0)
        if not pid or is_alive(pid, tags.get(START_TAG, "")):
            continue
        last = Path(tags.get(CHECKPOINT_DIR_TAG, "/nonexistent")) / "last.ckpt"
        if last.is_file():
            client.log_artifact(run_id, str(last), "checkpoints")
        client.set_tag(run_id, "digitlab.killed_because", f"its process {pid} on {host} died")
        client.set_terminated(run_id, "KILLED")
        then = (f"last checkpoint logged; continue with: resume={run_id}" if last.is_file()
                else "it had saved no checkpoint")
        lines.append(f"run {run_id} ({run.info.run_name}) was left RUNNING by process {pid}, "
                     f"which died: marked KILLED, {then}")
    for line in lines:
        log.warning(line)
    return lines
