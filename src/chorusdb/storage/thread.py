"""``StorageThread``: the only way the asyncio server touches its ``Store``.

SQLite calls block (an fsync takes milliseconds), so one dedicated thread owns the store (and
its connection: ``open_store`` runs on that thread) and the event loop never waits on it. The
loop hands work over through a queue and gets an ``asyncio.Future`` back:

- ``submit(writes)`` queues a batch of writes; its future resolves once they are committed
  (durable as the store's ``durability`` promises). Futures resolve in submission order. Log
  retention (``TrimLogBefore``), snapshot installs (``ResetLog``), truncations of a divergent
  suffix (``TruncateLogAfter``) and divergent rows (``PutDivergent``) are writes like the
  others, so they are group-committed in order with the appends around them.
- ``call(fn)`` runs ``fn(store)`` on the thread after everything queued before it (reads of the
  log, snapshots) and returns its result.
- ``close()`` finishes everything queued, closes the store and ends the thread.

**Group commit.** When the thread takes work it takes every commit batch waiting at the head of
the queue, up to ``group_writes_max`` writes and ``queue_batches_max`` batches, and commits them
with one ``commit_many``: one transaction and one fsync however many batches arrived while the
previous fsync ran. A group never passes a ``call`` (order is kept). It then resolves all the
group's futures with one ``loop.call_soon_threadsafe`` (one wake-up of the loop per group, not
per batch) and reports ``on_commit(batches_merged, writes, seconds)`` on the loop thread.

**Failure is final.** If a commit raises, the group's futures fail with that exception and the
thread refuses everything after it (``StorageStopped``, whose cause is the original error),
because the store's state is no longer known to match what the core believes it persisted: the
node must stop (the server does, on the first failed future) and recover from disk on restart.
An exception raised by a ``call`` only fails that call. Exceptions of every kind are handed to
the future that waits for the work (never swallowed, never left to kill the thread silently, which
would leave the loop waiting forever).

**Bounds.** At most ``queue_batches_max`` items wait in the queue; ``submit``/``call`` beyond
that raise ``StorageQueueFull``. The server never comes close: it has one ``Ready`` persisting at
a time. The thread is a daemon: if the process exits without ``close()``, whatever was not yet
committed was never acknowledged either, and SQLite rolls back a half-done transaction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from chorusdb import limits
from chorusdb.core.model import RecoveredState, Write
from chorusdb.storage.base import Store

T = TypeVar("T")

CommitCallback = Callable[[int, int, float], None]
"""``on_commit(batches_merged, writes, seconds)``."""


class StorageQueueFull(Exception):
    """More than ``queue_batches_max`` items are waiting for the storage thread."""


class StorageStopped(Exception):
    """A commit failed earlier (the cause); the storage thread accepts nothing more."""


@dataclass(slots=True)
class _Commit:
    writes: Sequence[Write]
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Call:
    function: Callable[[Store], object]
    future: asyncio.Future[object]


@dataclass(slots=True)
class _Close:
    future: asyncio.Future[None]


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class StorageThread:
    """The storage thread of one node; see the module docstring."""

    def __init__(self, open_store: Callable[[], Store], *, on_commit: CommitCallback | None = None,
                 group_writes_max: int = limits.group_commit_writes_max,
                 queue_batches_max: int = limits.storage_queue_batches_max) -> None:
        assert group_writes_max > 0 and queue_batches_max > 0
        self._open_store = open_store
        self._on_commit = on_commit
        self._group_writes_max = group_writes_max
        self._queue_batches_max = queue_batches_max
        self._queue: deque[_Commit | _Call | _Close] = deque()
        self._wakeup = threading.Condition(threading.Lock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        """The error of the failed commit; only the storage thread reads and writes it."""

    # --- the loop's side ------------------------------------------------------------------------

    async def start(self) -> RecoveredState:
        """Start the thread, open the store on it and return what it recovered."""
        assert self._thread is None, "already started"
        self._loop = asyncio.get_running_loop()
        started: asyncio.Future[RecoveredState] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name="chorusdb-storage", daemon=True)
        self._thread.start()
        try:
            return await started
        except BaseException:
            if not started.cancelled():             # the thread failed to open and has ended
                self._thread.join()
                self._thread = None
            raise                                   # if cancelled, it runs on until close()

    def submit(self, writes: Sequence[Write]) -> asyncio.Future[None]:
        """Queue ``writes`` (handed over: not to be changed afterwards) for one transaction;
        the future resolves when they are committed."""
        future = self._new_future()
        self._enqueue(_Commit(writes, future))
        return future

    async def call(self, function: Callable[[Store], T]) -> T:
        """``function(store)`` on the storage thread, after everything queued before it."""
        future = self._new_future()
        self._enqueue(_Call(function, future))
        return await future

    async def close(self) -> None:
        """Finish everything queued, close the store and end the thread. Idempotent."""
        if self._thread is None:
            return
        if self._closed is None:
            self._closed = self._new_future()
            with self._wakeup:
                self._queue.append(_Close(self._closed))
                self._wakeup.notify()
        await self._closed
        self._thread.join()

    def _new_future(self) -> asyncio.Future:
        assert self._loop is not None and self._thread is not None, "start() it first"
        assert self._closed is None, "the storage thread is closing"
        return self._loop.create_future()

    def _enqueue(self, item: _Commit | _Call) -> None:
        with self._wakeup:
            if len(self._queue) >= self._queue_batches_max:
                raise StorageQueueFull(f"{len(self._queue)} batches wait for the storage thread")
            self._queue.append(item)
            self._wakeup.notify()

    def _settle_group(self, futures: list[asyncio.Future], error: BaseException | None,
                      writes: int, seconds: float) -> None:
        """On the loop: resolve a committed group, in order, and report it."""
        for future in futures:
            _settle(future, None, error)
        if error is None and self._on_commit is not None:
            self._on_commit(len(futures), writes, seconds)

    # --- the storage thread's side --------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, *args)

    def _run(self, started: asyncio.Future[RecoveredState]) -> None:
        try:
            store = self._open_store()
        except BaseException as error:
            self._post(_settle, started, None, error)
            return
        try:
            recovered = store.recover()
        except BaseException as error:
            self._post(_settle, started, None, error)
            store.close()
            return
        self._post(_settle, started, recovered, None)
        while True:
            group = self._take()
            first = group[0]
            if type(first) is _Commit:
                self._commit(store, group)
            elif type(first) is _Call:
                self._call(store, first)
            else:
                assert type(first) is _Close
                self._close(store, first)
                return

    def _take(self) -> list:
        """Wait for work; return one call or close, or a group of commit batches."""
        with self._wakeup:
            while not self._queue:
                self._wakeup.wait()
            first = self._queue.popleft()
            group = [first]
            if type(first) is not _Commit:
                return group
            writes = len(first.writes)
            queue = self._queue
            while queue and len(group) < self._queue_batches_max:
                following = queue[0]
                if type(following) is not _Commit \
                        or writes + len(following.writes) > self._group_writes_max:
                    break
                group.append(queue.popleft())
                writes += len(following.writes)
            return group

    def _commit(self, store: Store, group: list[_Commit]) -> None:
        futures = [item.future for item in group]
        writes = sum(len(item.writes) for item in group)
        if self._failure is not None:
            self._post(self._settle_group, futures, self._stopped(), writes, 0.0)
            return
        started = time.perf_counter()
        try:
            store.commit_many([item.writes for item in group])
        except BaseException as error:
            self._failure = error
            self._post(self._settle_group, futures, error, writes, 0.0)
            return
        self._post(self._settle_group, futures, None, writes, time.perf_counter() - started)

    def _call(self, store: Store, item: _Call) -> None:
        if self._failure is not None:
            self._post(_settle, item.future, None, self._stopped())
            return
        try:
            result = item.function(store)
        except BaseException as error:
            self._post(_settle, item.future, None, error)
            return
        self._post(_settle, item.future, result, None)

    def _close(self, store: Store, item: _Close) -> None:
        try:
            store.close()
        except BaseException as error:
            self._post(_settle, item.future, None, error)
            return
        self._post(_settle, item.future, None, None)

    def _stopped(self) -> StorageStopped:
        error = StorageStopped("an earlier commit failed; the node must stop")
        error.__cause__ = self._failure
        return error
