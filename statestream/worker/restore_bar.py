"""``RestoreBar``: a live progress bar of restoring table partitions, for a terminal.

``statestream worker`` adds one as a listener (:mod:`statestream.listeners`)
when its standard error is a terminal, and none otherwise (a pipe or a file
gets the log lines of :mod:`statestream.worker.restore_log` only). While
any table partition restores it shows one row per table partition,
drawn by ``rich``::

    restoring counts[3] ━━━━━━━━━━━━━╺━━━━━━━━━━━━ 420,000/840,000  50% 120,000/s ETA 3.5 s

and removes the display when the last restore ends. Log lines written
meanwhile go above the rows: the logging handler given is pointed at the
display's console while it shows (rich also redirects ``sys.stdout`` and
``sys.stderr`` then), and back when it is gone.

Thread ownership: the listener methods run on the restoring partition
threads and take a lock; rich draws from a refresh thread of its own, so a
batch costs the restoring thread a few attribute updates. :meth:`close`
(any thread, e.g. the CLI's after the worker stopped) removes the display.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from statestream.listeners import BatchRestored, RestoreEnded, RestoreStarted
from statestream.worker.restore_log import format_seconds

__all__ = ["RestoreBar"]


class _ConsoleStream(io.TextIOBase):
    """A text stream that prints whole lines through a rich console (above its live display).

    Used by one logging handler, which writes under its own lock.
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._console.print(Text(lines), soft_wrap=True, highlight=False)
        return len(text)

    def writable(self) -> bool:
        return True


class RestoreBar:
    """Shows restore progress on ``stream``, a terminal (see the module docstring)."""

    def __init__(
        self,
        stream: IO[str],
        handler: logging.Handler | None = None,
        *,
        refresh_per_second: float = 4.0,
    ) -> None:
        self._stream = stream
        self._handler = handler if isinstance(handler, logging.StreamHandler) else None
        self._refresh = refresh_per_second
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._rows: dict[tuple[str, int], TaskID] = {}
        self._handler_stream: object = None

    def on_restore_start(self, event: RestoreStarted) -> None:
        with self._lock:
            progress = self._progress
            if progress is None:
                progress = self._progress = self._make()
            self._rows[(event.table, event.partition)] = progress.add_task(
                f"{event.table}[{event.partition}]",
                total=max(event.end - event.start, 1),
                rate="",
                eta="",
            )
            if len(self._rows) == 1:
                self._show(progress)

    def on_batch_restored(self, event: BatchRestored) -> None:
        with self._lock:
            row = self._rows.get((event.table, event.partition))
            if row is None or self._progress is None:
                return
            eta = event.eta
            self._progress.update(
                row,
                completed=event.done,
                total=max(event.done + event.remaining, 1),
                rate=f"{event.rate:,.0f}/s",
                eta="" if eta is None else f"ETA {format_seconds(eta)}",
            )

    def on_restore_end(self, event: RestoreEnded) -> None:
        with self._lock:
            row = self._rows.pop((event.table, event.partition), None)
            if row is None or self._progress is None:
                return
            self._progress.remove_task(row)
            if not self._rows:
                self._hide()

    def close(self) -> None:
        """Remove the display, if it shows (the worker stopped mid-restore)."""
        with self._lock:
            self._rows.clear()
            self._hide()

    # -- under the lock --------------------------------------------------------------

    def _make(self) -> Progress:
        console = Console(file=self._stream, force_terminal=True, stderr=True)
        return Progress(
            TextColumn("restoring {task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=True,
            refresh_per_second=self._refresh,
        )

    def _show(self, progress: Progress) -> None:
        progress.start()
        handler = self._handler
        if handler is not None:
            self._handler_stream = handler.setStream(_ConsoleStream(progress.console))

    def _hide(self) -> None:
        progress, self._progress = self._progress, None
        if progress is None:
            return
        handler = self._handler
        if handler is not None and self._handler_stream is not None:
            handler.setStream(self._handler_stream)
            self._handler_stream = None
        progress.stop()
