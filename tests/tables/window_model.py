"""A reference model of windowed tables, written from the spec (not from the implementation).

Deliberately naive: window sets are computed by enumeration, every window of
every key lives in a plain dict, and nothing is indexed. It models one
(table, partition): stream time, which windows exist with which values,
which writes are late, which windows close at which write (with the value
they close with) and when windows expire.

Semantics (see the windowed-tables spec):

* tumbling(size): ``[t - t % size, +size)``; hopping(size, step): every
  ``[k*step, k*step + size)`` containing ``t``; due = end.
* sliding(size): ``left(p) = [p - size + 1, p + 1)`` for every record time
  ``p``, ``right(p) = [p + 1, p + 1 + size)`` when a record lies in it; a
  window's value merges the point aggregates inside it, oldest first; due = end.
  A write is late iff every window that can hold ``t`` is closed
  (``t + size + grace <= stream time``); otherwise its point aggregate is
  updated (``fn`` applies to the point) and every open window holding ``t``
  is set to the merge of its points (closed ones are neither updated nor created).
* session(gap): records within ``gap`` of each other (transitively) form
  ``[first, last + 1)``; merged value = merge(older, newer) by start, then
  the update; due = end + gap = last + 1 + gap (a record at exactly
  last + gap still joins). A write is late iff a session it would join, or
  the session it would make, is closed.
* Stream time: the highest event time of the writes that were not late.
  A window is closed when stream time >= due + grace, expired (gone) when
  stream time >= due + grace + retention. A write updates only its open
  windows; with none open it is late (dropped, counted).

One reading the spec leaves open is fixed here the way a store-backed
implementation can work: an expired session is forgotten, so a write near
it is judged against the sessions that still exist (with ``retention >= gap``
both readings agree).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "KINDS",
    "Closing",
    "WindowModel",
    "WriteOutcome",
    "brute_force_hopping",
    "brute_force_tumbling",
    "sessions_of",
    "sliding_windows_of",
]

KINDS = ("tumbling", "hopping", "sliding", "session")

Window = tuple[int, int]
_MISSING = object()


class Closing(NamedTuple):
    """A window that closed, with the value it closed with."""

    key: Any
    start: int
    end: int
    value: Any
    due: int


class WriteOutcome(NamedTuple):
    """What one write did: whether it was late, and the windows it closed (by due)."""

    late: bool
    closed: list[Closing]


# -- pure window arithmetic, by enumeration ---------------------------------------------


def brute_force_tumbling(t: int, size: int) -> Window:
    """The one window ``[n*size, (n+1)*size)`` containing ``t``, found by walking."""
    n = t // size  # a first guess; the loops below make it right whatever // does
    while n * size > t:
        n -= 1
    while (n + 1) * size <= t:
        n += 1
    return (n * size, n * size + size)


def brute_force_hopping(t: int, size: int, step: int) -> list[Window]:
    """Every window ``[k*step, k*step + size)`` with ``start <= t < end``, by start."""
    k = t // step + 1
    while k * step > t:
        k -= 1
    found = []
    while k * step + size > t:  # walk back while the window still reaches t
        found.append((k * step, k * step + size))
        k -= 1
    return sorted(found)


def sliding_windows_of(times: list[int], size: int) -> set[Window]:
    """The sliding windows of a key whose records have ``times``, by the spec's definition."""
    windows = {(p - size + 1, p + 1) for p in times}
    for p in times:
        if any(p + 1 <= q < p + 1 + size for q in times):
            windows.add((p + 1, p + 1 + size))
    return windows


def sessions_of(times: list[int], gap: int) -> list[tuple[int, int, list[int]]]:
    """Sessions of ``times`` (with no lateness): ``(start, end, indexes of the records)``.

    Found as connected components of "``|t1 - t2| <= gap``" (union-find over
    every pair, not by sorting, so it does not share the implementation's idea).
    """
    parent = list(range(len(times)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(times)):
        for j in range(i):
            if abs(times[i] - times[j]) <= gap:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(times)):
        groups.setdefault(find(i), []).append(i)
    return sorted(
        (min(times[i] for i in g), max(times[i] for i in g) + 1, g) for g in groups.values()
    )


# -- the stateful model --------------------------------------------------------------


@dataclass
class WindowModel:
    """One windowed table on one partition.

    ``default=None`` means the table has no default (updating a window that
    does not exist raises ``KeyError``).
    """

    kind: str
    size: int = 0
    step: int = 0
    gap: int = 0
    grace: int = 0
    retention: int = 86_400_000
    default: Callable[[], Any] | None = int
    merge: Callable[[Any, Any], Any] = operator.add
    stream_time: int | None = None
    late: int = 0
    #: key -> {(start, end): value}: the windows that exist.
    windows: dict[Any, dict[Window, Any]] = field(default_factory=dict)
    #: sliding only: key -> {time: point aggregate}.
    points: dict[Any, dict[int, Any]] = field(default_factory=dict)
    #: hopping only: key -> {slice start: aggregate of the step from there}.
    slices: dict[Any, dict[int, Any]] = field(default_factory=dict)
    #: (key, start, end) -> value of every window that closed so far.
    closed: dict[tuple[Any, int, int], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown window kind {self.kind!r}")
        if self.kind == "hopping" and not self.step:
            self.step = self.size

    # -- arithmetic --------------------------------------------------------------

    def due(self, window: Window) -> int:
        end = window[1]
        return end + self.gap if self.kind == "session" else end

    def is_closed(self, window: Window, stream_time: int | None) -> bool:
        return stream_time is not None and stream_time >= self.due(window) + self.grace

    def is_expired(self, window: Window, stream_time: int | None) -> bool:
        return stream_time is not None and (
            stream_time >= self.due(window) + self.grace + self.retention
        )

    def containing(self, t: int) -> list[Window]:
        """tumbling/hopping: the windows containing ``t``."""
        if self.kind == "tumbling":
            return [brute_force_tumbling(t, self.size)]
        return brute_force_hopping(t, self.size, self.step)

    def _fresh(self) -> Any:
        if self.default is None:
            raise KeyError("no default")
        return self.default()

    # -- writes --------------------------------------------------------------------

    def write(self, key: Any, t: int, fn: Callable[[Any], Any]) -> WriteOutcome:
        """``table[key].update(fn)`` at event time ``t`` (``+=`` is ``fn = v + x``)."""
        return self._write(key, t, fn, assign=False)

    def assign(self, key: Any, t: int, value: Any) -> WriteOutcome:
        """``table[key] = value`` at event time ``t`` (not for sliding windows)."""
        if self.kind in ("sliding", "hopping"):
            raise TypeError(f"{self.kind} windows cannot be assigned")
        return self._write(key, t, lambda _old: value, assign=True)

    def _write(self, key: Any, t: int, fn: Callable[[Any], Any], assign: bool) -> WriteOutcome:
        st = t if self.stream_time is None else max(self.stream_time, t)
        if self.kind == "session":
            done = self._write_session(key, t, fn, st, assign)
        elif self.kind == "sliding":
            done = self._write_sliding(key, t, fn, st)
        else:
            done = self._write_fixed(key, t, fn, st, assign)
        if not done:
            self.late += 1
            return WriteOutcome(True, [])
        self.stream_time = st
        return WriteOutcome(False, self._advance())

    def _write_hopping(self, key: Any, t: int, fn: Callable[[Any], Any], st: int) -> bool:
        # A record goes to its step's slice; it is late once the oldest
        # window holding it closed. Windows are merges of their slices.
        s = t - t % self.step
        if self.is_closed((s + self.step - self.size, s + self.step), st):
            return False
        slices = self.slices.setdefault(key, {})
        old = slices.get(s, _MISSING)
        slices[s] = fn(self._fresh() if old is _MISSING else old)
        mine = self.windows.setdefault(key, {})
        for w in self.containing(t):
            inside = [slices[x] for x in sorted(slices) if w[0] <= x < w[1]]
            mine[w] = functools.reduce(self.merge, inside)
        return True

    def _write_fixed(
        self, key: Any, t: int, fn: Callable[[Any], Any], st: int, assign: bool
    ) -> bool:
        if self.kind == "hopping":
            return self._write_hopping(key, t, fn, st)
        open_windows = [w for w in self.containing(t) if not self.is_closed(w, st)]
        if not open_windows:
            return False
        mine = self.windows.setdefault(key, {})
        updates = {}
        for w in open_windows:
            old = mine.get(w, _MISSING)
            if old is _MISSING:
                old = None if assign else self._fresh()
            updates[w] = fn(old)
        mine.update(updates)
        return True

    def _write_session(
        self, key: Any, t: int, fn: Callable[[Any], Any], st: int, assign: bool
    ) -> bool:
        mine = self.windows.setdefault(key, {})
        near = sorted(
            w for w in mine if w[0] - self.gap <= t <= w[1] - 1 + self.gap
        )  # first - gap <= t <= last + gap
        new = (min([t] + [w[0] for w in near]), max([t + 1] + [w[1] for w in near]))
        if any(self.is_closed(w, st) for w in [*near, new]):
            return False
        if not near:
            value = fn(None if assign else self._fresh())
        else:
            value = fn(functools.reduce(self.merge, [mine[w] for w in near]))
            for w in near:
                del mine[w]
        mine[new] = value
        return True

    def _sliding_containing(self, key: Any, t: int) -> set[Window]:
        """Sliding windows containing ``t`` once a record at ``t`` exists."""
        size = self.size
        points = self.points.get(key, {})
        found = {(t - size + 1, t + 1)}
        found |= {(p - size + 1, p + 1) for p in points if t < p <= t + size - 1}
        found |= {(p + 1, p + 1 + size) for p in points if t - size <= p <= t - 1}
        return found

    def _sliding_value(self, key: Any, window: Window) -> Any:
        points = self.points[key]
        inside = [points[p] for p in sorted(points) if window[0] <= p < window[1]]
        return functools.reduce(self.merge, inside)

    def _write_sliding(self, key: Any, t: int, fn: Callable[[Any], Any], st: int) -> bool:
        # The last window that can hold t is [t, t + size).
        if self.is_closed((t, t + self.size), st):
            return False
        touched = [w for w in self._sliding_containing(key, t) if not self.is_closed(w, st)]
        points = self.points.setdefault(key, {})
        old = points.get(t, _MISSING)
        points[t] = fn(self._fresh() if old is _MISSING else old)
        right = (t + 1, t + 1 + self.size)
        if any(right[0] <= p < right[1] for p in points) and not self.is_closed(right, st):
            touched.append(right)
        mine = self.windows.setdefault(key, {})
        for w in touched:
            mine[w] = self._sliding_value(key, w)
        return True

    def _advance(self) -> list[Closing]:
        """Close what stream time reached, then expire; return the closings by due."""
        st = self.stream_time
        closings = []
        for key, mine in self.windows.items():
            for w, value in mine.items():
                if (key, *w) not in self.closed and self.is_closed(w, st):
                    closings.append(Closing(key, w[0], w[1], value, self.due(w)))
        for c in closings:
            self.closed[c.key, c.start, c.end] = c.value
        for key in list(self.windows):
            mine = self.windows[key]
            for w in [w for w in mine if self.is_expired(w, st)]:
                del mine[w]
            if not mine:
                del self.windows[key]
        return sorted(closings, key=lambda c: (c.due, repr(c.key), c.start))

    def delete(self, key: Any) -> None:
        """``del table[key]``: every window of the key (and its points) goes."""
        self.windows.pop(key, None)
        self.points.pop(key, None)
        self.slices.pop(key, None)

    # -- reads (stored windows; values as WindowedValue-shaped tuples) --------------

    def all(self, key: Any) -> list[tuple[int, int, Any]]:
        return sorted((s, e, v) for (s, e), v in self.windows.get(key, {}).items())

    def windows_at(self, key: Any, t: int) -> list[tuple[int, int, Any]]:
        return [w for w in self.all(key) if w[0] <= t < w[1]]

    def range(self, key: Any, t1: int, t2: int) -> list[tuple[int, int, Any]]:
        return [w for w in self.all(key) if w[0] < t2 and w[1] > t1]

    def latest(self, key: Any) -> tuple[int, int, Any] | None:
        windows = self.all(key)
        return windows[-1] if windows else None

    def at(self, key: Any, t: int) -> tuple[int, int, Any] | None:
        """What ``ws.at(t)`` / ``ws.current()`` return."""
        mine = self.windows.get(key, {})
        if self.kind == "session":
            found = [(s, e, v) for (s, e), v in mine.items() if s <= t < e]
            return found[0] if found else None
        # Sliding: the window ending with t; hopping: the latest start.
        w = (t - self.size + 1, t + 1) if self.kind == "sliding" else self.containing(t)[-1]
        return (w[0], w[1], mine[w]) if w in mine else None

    def live_keys(self) -> list[Any]:
        return [k for k, mine in self.windows.items() if mine]

    def items(self) -> list[tuple[Any, tuple[int, int, Any]]]:
        return [(k, w) for k in self.live_keys() for w in self.all(k)]
