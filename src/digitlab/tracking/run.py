"""One MLflow run's life: created or resumed, recorded, and ended KILLED, FAILED or FINISHED."""

from __future__ import annotations

import errno
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Param, RunTag
from omegaconf import OmegaConf

from digitlab.errors import DigitlabError, Interrupted
from digitlab.tracking.owners import claim_run, owner_tags
from digitlab.tracking.signals import STOP
from digitlab.tracking.store import sqlite_path, store_locked
from digitlab.tracking.tags import CHECKPOINT_DIR_TAG, PRUNED_TAG

# The Hydra groups whose chosen option names the run, in this order.
NAME_GROUPS = ("model", "data", "optimizer", "experiment")
# The errors of a write the user fixes by freeing space or permissions, not a bug to trace.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class TrackedRun:
    """One MLflow run from creation (or reopening ``resume_run_id``) to its final status, as a
    context manager, in the one place its end is decided (:meth:`_end`): FINISHED; KILLED when
    pruned (:meth:`mark_pruned`) or stopped by a signal (:data:`STOP`: then ``last.ckpt`` is
    logged and :class:`Interrupted` says ``resume=<id>``); FAILED on any other exception. Tagged
    with its owner process (``tracking.owners``). Under DDP only global rank zero records it."""

    def __init__(
        self,
        client,
        experiment_id: str,
        config: Mapping[str, Any],
        checkpoint_dir: Path,
        name: str,
        tags: Mapping[str, str] | None = None,
        resume_run_id: str | None = None,
        owner: bool = True,
    ) -> None:
        self.client, self.experiment_id = client, experiment_id
        self.config, self.checkpoint_dir = config, Path(checkpoint_dir)
        self.name, self.tags = name, dict(tags or {})
        self.resume_run_id, self.owner = resume_run_id, owner
        self.run_id: str | None = None
        self.pruned: str | None = None
        self._claim: FileLock | None = None  # the lock file held while this process continues a run

    def opened_by(self, owner: bool) -> TrackedRun:
        """This run, where ``owner`` (global rank zero, known once the Trainer exists) records."""
        self.owner = owner
        return self

    def __enter__(self) -> TrackedRun:
        if self.owner:
            self._open()
        STOP.__enter__()
        return self

    def _open(self) -> None:
        client = self.client
        if self.resume_run_id:  # refused, in one line, while another process trains it
            self._claim = claim_run(client, self.resume_run_id)
            self.run_id = self.resume_run_id
            self.name = client.get_run(self.run_id).info.run_name
            client.update_run(self.run_id, status="RUNNING")
        else:
            run = client.create_run(self.experiment_id, run_name=self.name, tags=self.tags)
            self.run_id = run.info.run_id
        try:
            tags = {**owner_tags(), CHECKPOINT_DIR_TAG: str(self.checkpoint_dir)}
            if self.resume_run_id:  # a new run got its tags when created; a continued one now
                tags = {**self.tags, **tags}
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            log_params(client, self.run_id, flatten(self.config))
            text = OmegaConf.to_yaml(OmegaConf.create(dict(self.config)))
            client.log_text(self.run_id, text, "config.yaml")
        except BaseException:
            client.set_terminated(self.run_id, "FAILED")
            raise

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            return self._end(exc_type, exc, STOP.signal)
        finally:
            STOP.__exit__(None, None, None)
            if self._claim is not None:
                self._claim.release(force=True)

    def _end(self, exc_type, exc, received: signal.Signals | None) -> bool:
        if not self.owner:
            return False
        if exc_type is not None and store_locked(exc):
            # Past MLflow's busy timeout: ending the run would wait again, so it is left RUNNING
            # for the next command to mark KILLED.
            store = sqlite_path(self.client.tracking_uri) or self.client.tracking_uri
            raise DigitlabError(
                f"the MLflow store {store} stayed locked by another program while run "
                f"{self.run_id} was recorded: close what holds it (a program writing to it); the "
                f"next digitlab command on the store marks the run KILLED, then "
                f"resume={self.run_id} continues it"
            ) from None
        status = "KILLED" if self.pruned else "FINISHED"
        replacement: DigitlabError | None = None  # raised instead of ``exc``
        if isinstance(exc, Interrupted):  # a run inside this one (a fold) stopped and said so
            status = "KILLED"
        elif exc_type is not None and (
            received or issubclass(exc_type, KeyboardInterrupt | SystemExit)
        ):
            status = "KILLED"
            how = received.name if received else "an exit request"
            last, unlogged = self._log_last()
            hint = (
                f"last checkpoint {last}{unlogged or f' logged to run {self.run_id}'}; "
                f"continue with: resume={self.run_id}"
                if last
                else f"run {self.run_id} has no checkpoint yet (no epoch finished): start it again"
            )
            replacement = Interrupted(
                f"{how} stopped training; run {self.run_id} is KILLED; {hint}",
                signum=received or signal.SIGINT,
            )
        elif exc_type is not None:
            status = "FAILED"
            if isinstance(exc, OSError) and exc.errno in UNWRITABLE:  # e.g. the artifact folder
                exc = replacement = DigitlabError(
                    f"cannot write {exc.filename or 'to the MLflow store'} ({exc.strerror}): make "
                    "its folder writable, or free disk space there"
                )
            if isinstance(exc, DigitlabError):  # the user can fix it: keep the work done so far
                last, unlogged = self._log_last()
                kept = (
                    f"last good checkpoint {last}{unlogged}"
                    if last
                    else "no checkpoint was saved yet"
                )
                exc.args = (f"{exc}; run {self.run_id} is FAILED, {kept}",)
        self.client.set_terminated(self.run_id, status)
        if exc_type is None and received:
            # The signal came once no batch was left to stop at (the results were being
            # recorded): the run stands as it ended, and the command still stops (a sweep runs
            # no further job).
            replacement = Interrupted(
                f"{received.name} arrived as run {self.run_id} ended; it is {status}",
                signum=received,
            )
        if replacement is not None:
            raise replacement from None
        return False

    def mark_pruned(self, reason: str) -> None:
        """Stopped on purpose (a pruned trial): it ends KILLED (MLflow has no status for it)."""
        self.pruned = reason
        if self.run_id is not None:
            self.client.set_tag(self.run_id, PRUNED_TAG, "true")
            self.client.set_tag(self.run_id, "digitlab.stop_reason", reason)

    def _log_last(self) -> tuple[str | None, str]:
        """Log ``last.ckpt``: (its path or None, and why it was not logged, or "")."""
        last = self.checkpoint_dir / "last.ckpt"
        try:
            return self.log_checkpoint(last), ""
        except OSError as e:  # the artifact folder is what failed: the file is still on disk
            return str(last), f" (not logged to the run: {e.strerror or e})"

    def log_checkpoint(self, path: str | Path | None) -> str | None:
        """Log the checkpoint at ``path`` under the run's ``checkpoints/``, if it exists."""
        if self.run_id is None or not path or not Path(path).is_file():
            return None
        self.client.log_artifact(self.run_id, str(path), "checkpoints")
        return str(path)


def run_name(choices: Mapping[str, Any], seed: int, swept: Mapping[str, str] | None = None) -> str:
    """A readable name from the chosen options, e.g. ``lenet-mnist-sgd-s42``, then a sweep's
    ``swept`` values it does not say, by their key's last part unless two share it:
    ``mlp-mnist-sgd-s42-lr=0.1``. Long decimals (an Optuna trial's) keep 4 significant digits."""
    parts = [str(choices[g]) for g in NAME_GROUPS if choices.get(g)]
    parts.append(f"s{seed}")
    said = {"seed", *(g for g in NAME_GROUPS if choices.get(g))}
    extra = {k: v for k, v in (swept or {}).items() if k not in said}
    last = [k.rsplit(".", 1)[-1] for k in extra]
    for (key, value), short in zip(extra.items(), last, strict=True):
        label = short if last.count(short) == 1 else key
        parts.append(f"{label}={_short_decimal(value)}")
    return "-".join(parts)


def _short_decimal(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and "." in value else value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.hidden": "[128, 64]", ...}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(folder: Path) -> str | None:
    """The commit the code runs from (with ``-dirty`` for uncommitted changes), if in git."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(folder), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    """Log the flat config; a resumed run keeps the values it has and tags what changed."""
    params = {k: v[:6000] for k, v in params.items()}
    logged = client.get_run(run_id).data.params
    # ``resume`` itself differs on every resume: a change of what trains is what the tag is for
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != v and k != "resume"}
    if changed:  # MLflow params are write-once; a resume may legitimately raise max_epochs
        note = "; ".join(f"{k}: {logged[k]} -> {v}" for k, v in changed.items())
        client.log_batch(run_id, tags=[RunTag("digitlab.resume_changes", note[:5000])])
    items = [Param(k, v) for k, v in params.items() if k not in logged]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start : start + 100])
