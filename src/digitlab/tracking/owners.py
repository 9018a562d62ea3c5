"""Runs whose process died without ending them (SIGKILL, out of memory, power cut): each run
records its owner process, and the next command on the store marks dead owners' runs KILLED.
A store is data, maybe someone else's: its owner tags are only looked up (psutil), never a
folder to touch; per-run locks (filelock) live in a private folder of this user's."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from digitlab.errors import DigitlabError
from digitlab.tracking.uris import sqlite_path

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, START_TAG = "digitlab.owner.host", "digitlab.owner.pid", "digitlab.owner.start"

# psutil's create_time() differs from one reading to the next by the clock's adjustments to the
# boot time: a start time within this many seconds is the same process.
_SAME_START_S = 1.0


def start_time(pid: int) -> str:
    """Process ``pid``'s start time as the owner tag holds it (a reused pid is told apart)."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, ValueError, OverflowError):
        return ""


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: start_time(pid)}


def tag_pid(text: object) -> int | None:
    """The pid an owner tag holds, or None ("abc", "-1" and 10**30 name no process)."""
    text = str(text or "").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,10}", text) and 0 < int(text) < 2**31 else None


def _tag_start(text: object) -> float | None:
    """An owner tag's start time, or None when empty or of another format (the clock ticks
    since boot that earlier versions stored say nothing here)."""
    text = str(text or "").strip()
    return float(text) if re.fullmatch(r"[0-9]{1,12}\.[0-9]{1,9}", text) else None


def is_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, if known) still runs on this machine. A
    process of another user counts as alive; a zombie as dead."""
    if not isinstance(pid, int) or not 0 < pid < 2**31 or not psutil.pid_exists(pid):
        return False
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:  # gone since, or a zombie: it will do nothing more
        return False
    except psutil.AccessDenied:  # it exists; when it started cannot be told
        return True
    then = _tag_start(start)
    return then is None or abs(created - then) < _SAME_START_S


def _printable(text: object, limit: int = 200) -> str:
    """A store's text as one line on the terminal: control characters shown as "?"."""
    return "".join(c if c.isprintable() else "?" for c in str(text))[:limit]


def reap_dead_owners(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``experiment_id`` whose owner process on this host is
    gone; returns (and logs) one line per run. Only the status and a tag change: no folder the
    store names is touched. Runs owned on other hosts, or by no pid, are left alone."""
    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    lines = []
    for run in client.search_runs([experiment_id], query, max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = tag_pid(tags.get(PID_TAG))
        if pid is None or is_alive(pid, tags.get(START_TAG, "")):
            continue
        client.set_tag(run_id, "digitlab.killed_because", f"its process {pid} on {host} died")
        client.set_terminated(run_id, "KILLED")
        lines.append(
            f"run {run_id} ({_printable(run.info.run_name)}) was left RUNNING by process {pid}, "
            "which died: marked KILLED; its job folder keeps its last.ckpt, if an epoch ended: "
            f"continue with: resume={run_id}"
        )
    for line in lines:
        log.warning(line)
    return lines


def lock_folder() -> Path:
    """This user's private folder (mode 0700) of per-run lock files: never the store's (maybe
    someone else's, links planted in it) nor a shared one; refused when it is not private."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    folder = Path(tempfile.gettempdir()) / f"digitlab-locks-{os.getuid()}"
    if runtime and os.path.isabs(runtime):
        folder = Path(runtime) / "digitlab-locks"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass  # checked below, as it is (never followed)
    except OSError as e:
        raise DigitlabError(
            f"cannot make the lock folder {folder} ({e.strerror or e}): make its parent "
            "writable, or set XDG_RUNTIME_DIR to a folder of yours"
        ) from None
    info = os.lstat(folder)
    mine = info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    if not stat.S_ISDIR(info.st_mode) or not mine:
        raise DigitlabError(
            f"the lock folder {folder} is not a real folder owned by you with mode 0700: "
            "remove it (digitlab makes it again), or set XDG_RUNTIME_DIR to a folder of yours"
        )
    return folder


def _lock_path(tracking_uri: str, run_id: str) -> Path:
    """Run ``run_id``'s lock file: named by a digest (a run id is the store's text, never a path)
    of the run and the store's real path."""
    store = os.path.realpath(db) if (db := sqlite_path(tracking_uri)) else tracking_uri
    digest = hashlib.sha256(f"{store}\0{run_id}".encode()).hexdigest()[:40]
    return lock_folder() / f"{digest}.lock"


def claim_run(client, run_id: str) -> FileLock:
    """Claim run ``run_id`` for this process before continuing it (``resume=``): its lock held
    until released (or the process dies), closing the race of two resumes started together; a
    run RUNNING under a live owner is refused too (on another machine no lock here can see)."""
    path = _lock_path(client.tracking_uri, run_id)
    lock = FileLock(path, timeout=0, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        owner = _owner(client.get_run(run_id)) or "another process"
        raise DigitlabError(
            f"run {run_id} is being trained by {owner}: {_wait_hint(run_id)}"
        ) from None
    except OSError as e:  # e.g. a link where the lock file goes: never followed
        raise DigitlabError(
            f"cannot lock run {run_id} with {path} ({e.strerror or e}): remove that file, "
            f"then resume={run_id} again"
        ) from None
    if live := _live_owner(client.get_run(run_id)):
        lock.release(force=True)
        raise DigitlabError(f"run {run_id} is RUNNING in {live}: {_wait_hint(run_id)}")
    return lock


def _wait_hint(run_id: str) -> str:
    return (
        f"one process trains a run at a time; wait for it to end, or stop it (Ctrl-C), then "
        f"resume={run_id}"
    )


def _owner(run) -> str | None:
    """``"process PID on HOST"`` of ``run``'s owner tags, unless known dead."""
    tags = run.data.tags
    host, pid = tags.get(HOST_TAG), tag_pid(tags.get(PID_TAG))
    if not host or pid is None:
        return None
    if host == socket.gethostname() and not is_alive(pid, tags.get(START_TAG, "")):
        return None
    return f"process {pid} on {_printable(host, 100)}"


def _live_owner(run) -> str | None:
    """:func:`_owner` of a RUNNING ``run`` owned by another process, else None."""
    tags = run.data.tags
    mine = tags.get(HOST_TAG) == socket.gethostname() and tag_pid(tags.get(PID_TAG)) == os.getpid()
    return _owner(run) if run.info.status == "RUNNING" and not mine else None
