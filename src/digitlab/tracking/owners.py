"""Runs whose process died without ending them (SIGKILL, out of memory, power cut): each run
records the process that owns it, and the next command on the store marks dead owners' runs
KILLED, keeping their last checkpoint, instead of leaving them RUNNING forever."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.tracking.tags import CHECKPOINT_DIR_TAG
from digitlab.tracking.uris import sqlite_path

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

    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    lines = []
    for run in client.search_runs([experiment_id], query, max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = int(tags.get(PID_TAG, "0") or 0)
        if not pid or is_alive(pid, tags.get(START_TAG, "")):
            continue
        last = Path(tags.get(CHECKPOINT_DIR_TAG, "/nonexistent")) / "last.ckpt"
        _remove_partial_writes(last.parent, pid)
        if last.is_file():
            client.log_artifact(run_id, str(last), "checkpoints")
        client.set_tag(run_id, "digitlab.killed_because", f"its process {pid} on {host} died")
        client.set_terminated(run_id, "KILLED")
        then = (
            f"last checkpoint logged; continue with: resume={run_id}"
            if last.is_file()
            else "it had saved no checkpoint"
        )
        lines.append(
            f"run {run_id} ({run.info.run_name}) was left RUNNING by process {pid}, "
            f"which died: marked KILLED, {then}"
        )
    for line in lines:
        log.warning(line)
    return lines


def _remove_partial_writes(folder: Path, pid: int) -> None:
    """The checkpoint files the dead owner ``pid`` was writing (``.last.ckpt.tmp-<pid>``, ...):
    only those exact names, in the folder the run's tag names."""
    for name in ("best.ckpt", "last.ckpt"):
        (folder / f".{name}.tmp-{pid}").unlink(missing_ok=True)


def _lock_folder(tracking_uri: str) -> Path:
    """Where the per-run lock files live: beside a SQLite store, else in the temp folder (a
    tracking server's runs can only be locked against this machine's own processes)."""
    import tempfile

    db = sqlite_path(tracking_uri)
    if db is not None:
        return db.parent / ".locks"
    return Path(tempfile.gettempdir()) / "digitlab-runs"


def claim_run(client, run_id: str):
    """Claim run ``run_id`` for this process before continuing it (``resume=``); returns the
    open lock file, held until closed (or the process dies).

    One process per run: an exclusive lock per run id closes the race of two resumes started
    together, and a run that is RUNNING under a live owner (its tags: host, pid, start) is
    refused too, for an owner on another machine that no lock here can see. Raises
    DigitlabError naming the owner.
    """
    import fcntl

    folder = _lock_folder(client.tracking_uri)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{run_id}.lock", "a+")  # noqa: SIM115 (held for the run's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise DigitlabError(
            f"run {run_id} is being trained by {owner}: {_wait_hint(run_id)}"
        ) from None
    if owner := _live_owner(client.get_run(run_id)):
        handle.close()
        raise DigitlabError(f"run {run_id} is RUNNING in {owner}: {_wait_hint(run_id)}")
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def _wait_hint(run_id: str) -> str:
    return (
        f"one process trains a run at a time; wait for it to end, or stop it (Ctrl-C), then "
        f"resume={run_id}"
    )


def _live_owner(run) -> str | None:
    """``"process PID on HOST"`` when ``run`` is RUNNING under an owner that is not known dead
    (on another host, whether it lives cannot be told from here), else None."""
    tags = run.data.tags
    host, pid = tags.get(HOST_TAG), int(tags.get(PID_TAG, "0") or 0)
    if run.info.status != "RUNNING" or not host or not pid:
        return None
    here = host == socket.gethostname()
    if here and (pid == os.getpid() or not is_alive(pid, tags.get(START_TAG, ""))):
        return None
    return f"process {pid} on {host}"
