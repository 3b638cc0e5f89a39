"""Keyed async locks for one process, with contention statistics (seed 002, fixed).

One :class:`KeyedLocks` serves every resource: a lock is a name, and
``"balance"``, ``"position/BTC-USD"``, ``"order/7f3a"`` and ``"trade"`` are just
names. A lock exists only while a task holds it or waits for it, so names that
come and go (order ids) do not grow memory::

    locks = KeyedLocks()
    async with locks.hold("balance", "position/BTC-USD", timeout=5):
        ...  # check the balance, deduct, update the position

**Order.** The names of one :meth:`~KeyedLocks.hold` are taken in sorted order,
whatever order they are given in, so two holds over overlapping names cannot
deadlock. A nested hold may take more names only if each sorts *after* every
name the task holds already; one that sorts before raises
:class:`LockOrderError` at once, before anything is taken or waited for (taking
it would be lock-order inversion, the deadlock the ordering exists to prevent):
take such names together in the outer hold.

**Reentrancy.** A task may hold a name again inside a nested hold: it is not
waited for, the lock stays held until the outermost hold ends, and it counts as
one acquisition. Only the task that took a lock holds it; a task it starts does
not (it waits like any other).

**Failure.** ``timeout`` seconds (for all the names together) raise
:class:`~statekit.errors.LockTimeout`; a timeout, a cancellation or an error
while waiting releases the names already taken, and an error in the body
releases everything on the way out. Waiters are served first come, first served.

These locks order the tasks of **one process**. Across processes use leases
(docs/leases.md); for one key the store's compare-and-set (``expect=``,
``update()``) needs no lock at all.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import current_task
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from types import TracebackType
from typing import Final

from statekit.backend import JSON
from statekit.errors import StatekitError, ValidationError
from statekit.trading.errors import LockTimeout

__all__ = ["DEFAULT_MAX_STATS_NAMES", "Hold", "KeyedLocks", "LockOrderError", "LockStatistics"]

log = logging.getLogger(__name__)

DEFAULT_MAX_STATS_NAMES: Final = 10_000
"""Names with statistics of their own, at most; further names count under their family."""

_NS_PER_MS: Final = 1_000_000
_SPARE_LOCKS: Final = 32


class LockOrderError(StatekitError):
    """A nested hold asked for a name that sorts before one its task holds already.

    Nothing was taken by the nested hold. Take the names together in the outer hold.

    :param names: the names the nested hold asked for.
    :param held: the name the task holds that ``name`` sorts before.
    :param name: the first offending name.
    """

    def __init__(self, message: str, *, names: tuple[str, ...], held: str, name: str) -> None:
        super().__init__(message)
        self.names = names
        self.held = held
        self.name = name


@dataclass(frozen=True, slots=True)
class LockStatistics:
    """What one lock name (or family, see :class:`KeyedLocks`) has seen since the last reset.

    :param name: the lock name, or ``"<family>/*"`` for names counted together.
    :param acquisitions: times the lock was taken (a reentrant hold does not count again).
    :param contended: acquisitions that had to wait for another task.
    :param contention_rate_pct: ``contended`` as a percentage of ``acquisitions``.
    :param mean_wait_ms: mean wait over all acquisitions (uncontended ones wait 0).
    :param max_wait_ms: the longest wait of an acquisition.
    :param mean_hold_ms: mean time from acquisition to release.
    :param max_hold_ms: the longest hold.
    :param timeouts: waits for this lock that ended in LockTimeout.
    :param cancelled: waits for this lock that ended by cancellation.
    :param held: a task holds it now.
    :param waiting: tasks waiting for it now.
    """

    name: str
    acquisitions: int
    contended: int
    contention_rate_pct: float
    mean_wait_ms: float
    max_wait_ms: float
    mean_hold_ms: float
    max_hold_ms: float
    timeouts: int
    cancelled: int
    held: bool
    waiting: int

    def as_dict(self) -> dict[str, JSON]:
        """The fields as JSON-ready values (``json.dumps`` takes it as is)."""
        return {
            "name": self.name,
            "acquisitions": self.acquisitions,
            "contended": self.contended,
            "contention_rate_pct": self.contention_rate_pct,
            "mean_wait_ms": self.mean_wait_ms,
            "max_wait_ms": self.max_wait_ms,
            "mean_hold_ms": self.mean_hold_ms,
            "max_hold_ms": self.max_hold_ms,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "held": self.held,
            "waiting": self.waiting,
        }


class _Counters:
    """Running totals of one statistics name; nanoseconds, to keep the hot path integer."""

    __slots__ = (
        "acquisitions",
        "cancelled",
        "contended",
        "hold_max",
        "hold_ns",
        "timeouts",
        "wait_max",
        "wait_ns",
    )

    def __init__(self) -> None:
        self.acquisitions = 0
        self.contended = 0
        self.wait_ns = 0
        self.wait_max = 0
        self.hold_ns = 0
        self.hold_max = 0
        self.timeouts = 0
        self.cancelled = 0


class _Lock:
    """One live lock: its owner, how deep the owner holds it, the tasks waiting.

    It is in :attr:`KeyedLocks._locks` exactly while it has an owner; a release
    with nobody waiting drops it, a release with waiters hands it to the first.
    """

    __slots__ = ("acquired_ns", "counters", "depth", "name", "owner", "waiters")

    name: str
    owner: object
    depth: int
    acquired_ns: int
    counters: _Counters

    def __init__(self) -> None:
        # The other fields are set by KeyedLocks._new_lock, which reuses dropped locks.
        self.waiters: deque[tuple[object, asyncio.Future[bool]]] | None = None


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def _refuse_name(name: object) -> None:
    raise ValidationError(f"a lock name is a non-empty string, not {name!r}", reason="names")


def _family(name: str) -> str:
    head, slash, _ = name.partition("/")
    return f"{head}/*" if slash else "*"


class KeyedLocks:
    """In-process async locks by name, taken several at once in sorted order.

    See the module docstring for the ordering and reentrancy rules.

    :param max_stats_names: names that get statistics of their own; once that
        many are tracked, statistics of a new name go to its family
        (``"order/*"`` for ``"order/9f1"``, ``"*"`` for a name without ``/``),
        so a stream of order ids cannot grow them without bound.
    :param logger: where :meth:`log_statistics` writes (default ``statekit.trading.locks``).
    """

    def __init__(
        self,
        *,
        max_stats_names: int = DEFAULT_MAX_STATS_NAMES,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_stats_names < 0:
            raise ValidationError(
                f"max_stats_names must be >= 0, not {max_stats_names}", reason="max_stats_names"
            )
        self.max_stats_names = max_stats_names
        self.logger = logger or log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: dict[str, _Lock] = {}
        # Dropped lock objects kept for reuse (at most _SPARE_LOCKS): building one
        # is a good part of an uncontended hold's cost.
        self._spare: list[_Lock] = []
        self._counters: dict[str, _Counters] = {}
        # The greatest name each task holds, for the nested-hold order rule.
        self._top: dict[object, str] = {}

    def hold(self, *names: str, timeout: float | None = None) -> Hold:
        """An ``async with`` that holds every name in ``names`` (sorted, duplicates ignored).

        :param names: one or more non-empty lock names.
        :param timeout: seconds to wait for all of them together; None waits as
            long as it takes, 0 takes them only if nobody holds them.
        :raises ~statekit.errors.LockTimeout: on entering, when ``timeout`` ran out;
            nothing is held then.
        :raises LockOrderError: on entering a nested hold that breaks the order rule.
        :raises ~statekit.errors.ValidationError: no names, or a name that is not
            a non-empty string.
        """
        ordered: tuple[str, ...]
        if len(names) == 1:
            if type(names[0]) is not str or not names[0]:
                _refuse_name(names[0])
            ordered = names
        else:
            for name in names:
                if type(name) is not str or not name:
                    _refuse_name(name)
            ordered = tuple(sorted(set(names)))
            if not ordered:
                raise ValidationError("hold() needs at least one lock name", reason="names")
        if timeout is not None and timeout < 0:
            raise ValidationError(f"timeout must be >= 0, not {timeout}", reason="timeout")
        return Hold(self, ordered, timeout)

    def locked(self, name: str) -> bool:
        """Some task holds ``name`` now."""
        return name in self._locks

    @property
    def live(self) -> int:
        """Locks in memory now: names held, and so possibly waited for."""
        return len(self._locks)

    def _current_task(self) -> asyncio.Task[object]:
        # current_task(loop) is several times cheaper than current_task(), which
        # looks the running loop up first: that is most of the uncontended cost.
        task = None if self._loop is None else asyncio.current_task(self._loop)
        if task is None:
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                if self._locks:
                    raise StatekitError(
                        "these KeyedLocks are held in another event loop; "
                        "use one KeyedLocks per event loop"
                    )
                self._loop = loop
            task = asyncio.current_task(loop)
            if task is None:
                raise StatekitError("hold() must be entered inside an asyncio task")
        return task

    def _counters_for(self, name: str) -> _Counters:
        counters = self._counters.get(name)
        if counters is None:
            if len(self._counters) >= self.max_stats_names:
                name = _family(name)
                counters = self._counters.get(name)
            if counters is None:
                counters = self._counters[name] = _Counters()
        return counters

    def _release(self, lock: _Lock) -> None:
        """``lock``'s owner is done: hand it to the first live waiter, or drop it."""
        waiters = lock.waiters
        while waiters:  # None (never waited for) or empty: nobody to hand it to
            task, waiter = waiters.popleft()
            if not waiter.done():  # not timed out, not cancelled
                lock.owner = task
                lock.depth = 1
                waiter.set_result(True)
                return
        self._drop(lock)

    def _drop(self, lock: _Lock) -> None:
        del self._locks[lock.name]
        if len(self._spare) < _SPARE_LOCKS:
            lock.owner = None
            lock.waiters = None
            self._spare.append(lock)

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> dict[str, LockStatistics]:
        """Statistics per lock name (or family), in name order."""
        out: dict[str, LockStatistics] = {}
        for name in sorted(self._counters):
            c = self._counters[name]
            lock = self._locks.get(name)
            n = c.acquisitions
            out[name] = LockStatistics(
                name=name,
                acquisitions=n,
                contended=c.contended,
                contention_rate_pct=round(100 * c.contended / n, 3) if n else 0.0,
                mean_wait_ms=round(c.wait_ns / n / _NS_PER_MS, 6) if n else 0.0,
                max_wait_ms=round(c.wait_max / _NS_PER_MS, 6),
                mean_hold_ms=round(c.hold_ns / n / _NS_PER_MS, 6) if n else 0.0,
                max_hold_ms=round(c.hold_max / _NS_PER_MS, 6),
                timeouts=c.timeouts,
                cancelled=c.cancelled,
                held=lock is not None,
                waiting=0
                if lock is None or lock.waiters is None
                else sum(not w.done() for _, w in lock.waiters),
            )
        return out

    def as_dict(self) -> dict[str, dict[str, JSON]]:
        """:meth:`statistics` as JSON-ready dicts, by name: what ``doctor`` and the API export."""
        return {name: stats.as_dict() for name, stats in self.statistics().items()}

    def log_statistics(self, level: int = logging.INFO) -> None:
        """Write one log line per lock name to :attr:`logger`."""
        for s in self.statistics().values():
            self.logger.log(
                level,
                "lock %s: %d acquisitions, %.1f%% contended, wait mean %.3f ms max %.3f ms, "
                "hold mean %.3f ms max %.3f ms, %d timeouts, %d cancelled",
                s.name,
                s.acquisitions,
                s.contention_rate_pct,
                s.mean_wait_ms,
                s.max_wait_ms,
                s.mean_hold_ms,
                s.max_hold_ms,
                s.timeouts,
                s.cancelled,
            )

    def reset_statistics(self) -> None:
        """Forget every count; locks held now keep being held."""
        self._counters.clear()
        for lock in self._locks.values():
            lock.counters = self._counters_for(lock.name)


class Hold:
    """What :meth:`KeyedLocks.hold` returns: enter it with ``async with`` (once at a time)."""

    __slots__ = ("_locks", "_names", "_previous_top", "_task", "_timeout")

    def __init__(self, locks: KeyedLocks, names: tuple[str, ...], timeout: float | None) -> None:
        self._locks = locks
        self._names = names
        self._timeout = timeout
        self._task: object = None  # who holds it: set on entering, cleared on leaving
        # _previous_top is set on entering.

    @property
    def names(self) -> tuple[str, ...]:
        """The names, in the order they are taken."""
        return self._names

    async def __aenter__(self) -> Hold:
        # The hot path is kept flat on purpose (no helper calls while nobody else
        # holds the names): an uncontended hold is meant to cost a few microseconds.
        owner = self._locks
        loop = owner._loop
        task: object = None if loop is None else current_task(loop)
        if task is None:
            task = owner._current_task()
        if self._task is not None:
            raise StatekitError("a Hold is entered once at a time; call hold() again")
        tops = owner._top
        top = tops.get(task)
        if top is not None:
            self._check_order(task, top)
        locks = owner._locks
        deadline: float | None = None
        for index, name in enumerate(self._names):
            lock = locks.get(name)
            if lock is None:  # free: take it (KeyedLocks._new_lock, inlined)
                spare = owner._spare
                lock = locks[name] = spare.pop() if spare else _Lock()
                lock.name = name
                lock.owner = task
                lock.depth = 1
                counters = lock.counters = owner._counters.get(name) or owner._counters_for(name)
                counters.acquisitions += 1
                lock.acquired_ns = perf_counter_ns()
            elif lock.owner is task:
                lock.depth += 1
            else:
                deadline = await self._wait(lock, task, deadline, index)
        self._task = task
        self._previous_top = top
        last = self._names[-1]
        if top is None or last > top:
            tops[task] = last
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = self._locks
        top = self._previous_top
        if top is None:
            del owner._top[self._task]
        else:
            owner._top[self._task] = top
        self._task = None
        self._release(len(self._names))

    def _release(self, count: int) -> None:
        """Release the first ``count`` names, last first (all of them on leaving)."""
        owner = self._locks
        locks = owner._locks
        names = self._names
        for index in range(count - 1, -1, -1):
            lock = locks[names[index]]
            lock.depth -= 1
            if lock.depth == 0:
                held = perf_counter_ns() - lock.acquired_ns
                c = lock.counters
                c.hold_ns += held
                if held > c.hold_max:
                    c.hold_max = held
                if lock.waiters:
                    owner._release(lock)
                else:
                    owner._drop(lock)

    def _check_order(self, task: object, top: str) -> None:
        locks = self._locks._locks
        for name in self._names:
            lock = locks.get(name)
            if name < top and (lock is None or lock.owner is not task):
                raise LockOrderError(
                    f"this task holds lock {top!r} and asks for {name!r}, which sorts "
                    f"before it; a nested hold may only add names that sort after the ones "
                    f"held (that order is what rules deadlocks out): take "
                    f"{name!r} in the outer hold together with {top!r}",
                    names=self._names,
                    held=top,
                    name=name,
                )

    async def _wait(
        self, lock: _Lock, task: object, deadline: float | None, index: int
    ) -> float | None:
        """Queue for ``lock`` (the ``index``-th name) until it is handed over; returns
        the hold's deadline. On a timeout, a cancellation or any other interruption,
        leave the queue and release the names taken before it."""
        loop = asyncio.get_running_loop()
        if deadline is None and self._timeout is not None:
            deadline = loop.time() + self._timeout
        waiter: asyncio.Future[bool] = loop.create_future()
        entry = (task, waiter)
        if lock.waiters is None:
            lock.waiters = deque()
        lock.waiters.append(entry)
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        started = perf_counter_ns()
        try:
            got = await waiter
        except BaseException:
            # Cancelled (or interrupted) while queued. The lock may have been handed
            # over in the same loop step: then it is ours, and must be passed on.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._locks._release(lock)
            else:
                _leave(lock, entry)
            lock.counters.cancelled += 1
            self._release(index)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not got:
            _leave(lock, entry)
            lock.counters.timeouts += 1
            self._release(index)
            raise LockTimeout(
                f"timed out after {self._timeout} s waiting for lock {lock.name!r} "
                f"(held by another task) while taking {', '.join(map(repr, self._names))}",
                names=self._names,
                timeout=self._timeout or 0.0,
            )
        now = perf_counter_ns()
        lock.acquired_ns = now
        waited = now - started
        c = lock.counters
        c.acquisitions += 1
        c.contended += 1
        c.wait_ns += waited
        if waited > c.wait_max:
            c.wait_max = waited
        return deadline


def _leave(lock: _Lock, entry: tuple[object, asyncio.Future[bool]]) -> None:
    try:
        if lock.waiters is not None:
            lock.waiters.remove(entry)
    except ValueError:
        pass  # already popped by a release that skipped it
