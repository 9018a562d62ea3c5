"""Lightning callbacks: side effects of training that are not the loss (``conf/callbacks/``)."""

from digitlab.callbacks.guards import StampRunId, StopOnNonFiniteLoss
from digitlab.callbacks.throughput import EpochThroughput, TimeToFirstStep

__all__ = ["EpochThroughput", "StampRunId", "StopOnNonFiniteLoss", "TimeToFirstStep"]
