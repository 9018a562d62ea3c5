"""Ctrl-C and SIGTERM, for every digitlab command in one place (:data:`STOP`).

The first signal is recorded. While a run is open it is only recorded: Lightning stops at its
next batch (``tracking.logger.StopOnSignal`` raises there; SIGTERM also stops Lightning's own
loops) and the run ends KILLED with its ``resume=`` line (``tracking.run.TrackedRun``). Raised
inside a store call, an exception could leave the call's SQLite transaction open and this
process holding the store's lock. With no run open (a sweep's process waiting on its launcher's
jobs) it raises ``KeyboardInterrupt`` at once, and the sweep ends its parent run KILLED.

The second exits at once, in one line: the user will not wait. The store stays whole (each
SQLite write is a transaction), and each run left RUNNING names this process as its owner, so
the next command on the store marks it KILLED (``tracking.owners``). Outside the main thread (a
thread-based launcher) signals are left alone.
"""

from __future__ import annotations

import os
import signal
from typing import Any


class Stop:
    """The process's signal state: entered by each run (nested runs count), or watched for the
    rest of a sweep's command (:meth:`watch`)."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._runs = 0
        self._watching = False
        self._previous: dict[signal.Signals, Any] = {}

    def watch(self) -> None:
        self._install()
        self._watching = True

    def __enter__(self) -> Stop:
        if self._runs == 0:  # a new run, or the next job of a sweep: no signal came yet
            self.signal = None
            if not self._watching:
                self._install()
        self._runs += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._runs -= 1
        if self._runs == 0 and not self._watching:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._previous = {}

    def _install(self) -> None:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous.setdefault(s, signal.signal(s, self._received))
        except ValueError:  # not the main thread
            pass

    def _received(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
            if self._runs:
                return
            raise KeyboardInterrupt  # SIGTERM too: a sweep ends as for Ctrl-C
        os.write(
            2,
            (
                f"digitlab: interrupted: a second {signal.Signals(signum).name}, exiting at once; "
                "the next digitlab command on this store marks the run KILLED (resume=<run id> "
                "continues it from its last checkpoint)\n"
            ).encode(),
        )
        os._exit(128 + signum)

    def raise_if_received(self) -> None:
        """``KeyboardInterrupt`` once a signal came: what Lightning answers with its graceful
        shutdown (``on_exception`` hooks, ``trainer.interrupted``)."""
        if self.signal is not None:
            raise KeyboardInterrupt


STOP = Stop()
