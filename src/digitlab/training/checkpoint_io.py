"""Checkpoint files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from digitlab.errors import DigitlabError
from digitlab.tracking.owners import is_alive


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing ``.<name>.tmp-<pid>`` beside the target and
    renaming it over the target once complete (one file system: an atomic step).

    Lightning's own transaction stages the bytes in the system's temporary folder, whose move
    onto another file system is a copy that a full disk or a kill can cut short, leaving a
    truncated ``best.ckpt``/``last.ckpt`` under the name ``resume=`` and the test pass read.
    Here a failed write leaves the previous checkpoint intact and stops the run with one line.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        # what processes killed mid-write (SIGKILL, out of memory) left, hundreds of MB each
        for partial in path.parent.glob(f".{path.name}.tmp-*"):
            owner = partial.name.rsplit("-", 1)[-1]
            if owner.isdigit() and int(owner) != os.getpid() and not is_alive(int(owner)):
                partial.unlink(missing_ok=True)
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
