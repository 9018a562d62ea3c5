"""Checkpoint files written whole or not at all: to a temporary name beside the target, then
renamed over it (an atomic step on one file system)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from digitlab.errors import DigitlabError
from digitlab.tracking.owners import is_alive


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic.

    Lightning writes ``best.ckpt`` and ``last.ckpt`` in place, so a full disk (or a kill) in the
    middle of a write leaves a truncated file under the name that ``resume=`` and the test pass
    read. Here the bytes go to ``.<name>.tmp-<pid>`` first and replace the target only once
    complete; a failed write leaves the previous checkpoint intact and stops the run with one
    line naming the folder and the fix.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        remove_partial_writes(path)
        partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        except OSError as e:
            partial.unlink(missing_ok=True)
            raise DigitlabError(
                f"cannot write checkpoint {path} ({e.strerror or e}): free disk space in "
                f"{path.parent} or make it writable; the previous checkpoint there is intact"
            ) from None


def remove_partial_writes(path: Path, pid: int | None = None) -> list[Path]:
    """Delete the temporary files that processes killed mid-write (SIGKILL, out of memory) left
    beside ``path`` (``.<name>.tmp-<pid>``, hundreds of MB each); only ``pid``'s when given,
    else those of every process that no longer runs. Returns what was deleted."""
    removed = []
    for partial in path.parent.glob(f".{path.name}.tmp-*"):
        owner = partial.name.rsplit("-", 1)[-1]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        if (int(owner) == pid) if pid is not None else not is_alive(int(owner)):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed
