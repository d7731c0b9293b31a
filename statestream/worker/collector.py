"""How often Python's cyclic garbage collector runs while a worker runs.

The collector's youngest generation is collected after every 700 net
allocations of container objects by default, and every tenth collection
takes the next generation with it. A worker allocates a few objects per
record (messages, buffered entries, changelog records) and keeps many alive
(the table buffers, a windowed table's open windows), so at the default
pace the collector walks the same live objects over and over (figures in
docs/worker.md, "The garbage collector"). Table state forms no reference
cycles, so collecting less often frees nothing later that matters; it only
lets cyclic garbage (rare in a worker) wait a little longer.

:class:`CollectorPace` sets the youngest generation's threshold to
``gc_threshold`` allocations while :meth:`Worker.run` runs and puts the
previous thresholds back when it returns. ``0`` leaves the interpreter's
settings alone. The setting is process-wide (Python has one collector):
two workers in one process share it, and the last to stop restores what
the first found.

:meth:`CollectorPace.paused` holds the collector off while a commit round
runs: a round builds a few objects per changelog record (hundreds of
thousands in a second's worth of windowed writes) and frees them all when
it ends, so collections during it walk objects about to be freed; it was
most of the collector's time in the windowed benchmark
(benchmarks/README.md). With ``0`` it does nothing either.

Thread ownership: entered and left by the thread that runs the worker;
:meth:`CollectorPace.paused` from any thread (pauses nest across threads:
the collector runs again when the last one ends, if it ran before the first).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from types import TracebackType

__all__ = ["DEFAULT_GC_THRESHOLD", "CollectorPace"]

#: Allocations between two collections of the youngest generation while a
#: worker runs (Python's own default is 700).
DEFAULT_GC_THRESHOLD = 50_000


class _Pauses:
    """Pauses of the (one, process-wide) collector in progress, on any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.resume = False  # whether the collector ran before the first pause


_PAUSES = _Pauses()


class CollectorPace:
    """A context manager: the collector's youngest-generation threshold while inside."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._previous: tuple[int, int, int] | None = None

    def __enter__(self) -> CollectorPace:
        if self.threshold > 0:
            previous = gc.get_threshold()
            self._previous = previous
            # The older generations keep their ratios: each is still collected
            # after as many collections of the one below as before.
            gc.set_threshold(self.threshold, previous[1], previous[2])
        return self

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the collector off inside (see the module docstring); nothing with 0."""
        if self.threshold <= 0:
            yield
            return
        pauses = _PAUSES
        with pauses.lock:
            if pauses.count == 0:
                pauses.resume = gc.isenabled()
                gc.disable()
            pauses.count += 1
        try:
            yield
        finally:
            with pauses.lock:
                pauses.count -= 1
                if pauses.count == 0 and pauses.resume:
                    gc.enable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None
