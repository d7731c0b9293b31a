"""The worker: one poll thread, one thread per assigned partition."""

from statestream.worker.partition import PartitionTask
from statestream.worker.runner import Worker, WorkerStatus

__all__ = ["PartitionTask", "Worker", "WorkerStatus"]
