"""Lightning's MLflow logger, patient with a SQLite store that parallel jobs keep busy."""

from __future__ import annotations

import sys
import time

from lightning.pytorch.loggers import MLFlowLogger


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` whose ``finalize`` retries while the store is locked.

    Lightning calls ``finalize("failed")`` from its interrupt handler (Ctrl-C, SIGTERM); with
    other jobs writing the same SQLite file, that read can meet "database is locked" and the
    process would exit with a traceback instead of the one-line interrupt message and KILLED run.
    """

    patience_s = 30.0

    def finalize(self, status: str = "success") -> None:
        from mlflow.exceptions import MlflowException

        from digitlab.tracking.run import store_locked

        if store_locked(sys.exc_info()[1]):
            # Lightning ends a fit that failed on a store another program holds: waiting here
            # too would only double the wait; digitlab.tracking.run says what to do instead.
            return None
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                return super().finalize(status)
            except MlflowException as error:
                if "database is locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
