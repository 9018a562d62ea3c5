"""Lightning callbacks: side effects of training that are not the loss (``conf/callbacks/``)."""

from digitlab.callbacks.guards import StampRunId, StopOnNonFiniteLoss
from digitlab.callbacks.progress import EpochReport, SampleProgressBar
from digitlab.callbacks.throughput import EpochThroughput, TimeToFirstStep

__all__ = [
    "EpochReport",
    "EpochThroughput",
    "SampleProgressBar",
    "StampRunId",
    "StopOnNonFiniteLoss",
    "TimeToFirstStep",
]
