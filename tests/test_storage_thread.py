"""``StorageThread``: group commit, order, draining on close, and failure being final.

Group sizes are made deterministic with a gated store: its first commit blocks (as a slow fsync
does) until the test has queued everything else, so what the thread takes next is known.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from chorusdb.core.model import (
    NO_EXPIRY,
    AppendEntry,
    Kind,
    LogEntry,
    Position,
    PutMeta,
    PutRecord,
    Record,
    ResetLog,
    SetValue,
    TrimLogBefore,
    Write,
)
from chorusdb.storage.memory_store import MemoryStore
from chorusdb.storage.sqlite_store import SqliteStore
from chorusdb.storage.thread import StorageQueueFull, StorageStopped, StorageThread

scenario_timeout_s = 30.0
gate_timeout_s = 10.0


def run(scenario) -> None:
    async def bounded():
        async with asyncio.timeout(scenario_timeout_s):
            await scenario()
    asyncio.run(bounded())


def transaction(index: int) -> list[Write]:
    key = b"k%d" % index
    return [PutRecord(key, Record(Kind.STRING, b"v", NO_EXPIRY, index)),
            AppendEntry(LogEntry(Position(1, index), SetValue(key, b"v", NO_EXPIRY)))]


class GatedStore(MemoryStore):
    """Its first commit waits for ``gate``; ``groups`` records the batches of every commit."""

    def __init__(self) -> None:
        super().__init__(durability="fsync")
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.groups: list[int] = []

    def commit_many(self, batches: Sequence[Sequence[Write]]) -> None:
        self.entered.set()
        assert self.gate.wait(gate_timeout_s)
        self.groups.append(len(batches))
        super().commit_many(batches)


async def hold_first_commit(thread: StorageThread, store: GatedStore) -> asyncio.Future:
    """Submit transaction 1 and return once the thread is blocked committing it."""
    first = thread.submit(transaction(1))
    assert await asyncio.to_thread(store.entered.wait, gate_timeout_s)
    return first


def test_batches_that_queue_up_are_committed_together_and_resolve_in_order():
    async def scenario():
        store = GatedStore()
        reports = []
        thread = StorageThread(lambda: store, on_commit=lambda *report: reports.append(report))
        await thread.start()
        futures = [await hold_first_commit(thread, store)]
        futures += [thread.submit(transaction(index)) for index in range(2, 1001)]
        resolved = []
        for index, future in enumerate(futures, start=1):
            future.add_done_callback(lambda _, index=index: resolved.append(index))
        store.gate.set()
        await asyncio.gather(*futures)
        assert resolved == list(range(1, 1001))
        assert store.groups == [1, 999]
        assert [(merged, writes) for merged, writes, _ in reports] == [(1, 2), (999, 1998)]
        assert store.commits_total == 2 and store.writes_total == 2000
        await thread.close()
        assert store.recover().last_position == Position(1, 1000)
    run(scenario)


def test_a_group_is_bounded_in_writes_and_in_batches():
    async def scenario():
        store = GatedStore()
        thread = StorageThread(lambda: store, group_writes_max=100, queue_batches_max=1000)
        await thread.start()
        futures = [await hold_first_commit(thread, store)]
        futures += [thread.submit(transaction(index)) for index in range(2, 1001)]
        store.gate.set()
        await asyncio.gather(*futures)
        assert store.groups == [1] + [50] * 19 + [49]     # 2 writes per batch, 100 per group
        await thread.close()

        store = GatedStore()
        thread = StorageThread(lambda: store, queue_batches_max=30)
        await thread.start()
        futures = [await hold_first_commit(thread, store)]
        futures += [thread.submit(transaction(index)) for index in range(2, 32)]
        with pytest.raises(StorageQueueFull):
            thread.submit(transaction(32))
        store.gate.set()
        await asyncio.gather(*futures)
        assert store.groups == [1, 30]
        await thread.close()
    run(scenario)


def test_trims_and_resets_are_committed_in_a_group_in_order():
    async def scenario():
        store = GatedStore()
        thread = StorageThread(lambda: store)
        await thread.start()
        futures = [await hold_first_commit(thread, store)]
        futures += [thread.submit(transaction(index)) for index in range(2, 6)]
        futures.append(thread.submit([TrimLogBefore(4)]))
        futures.append(thread.submit([PutMeta("epoch", 2), ResetLog(Position(2, 3))]))
        futures.append(thread.submit([AppendEntry(LogEntry(Position(2, 4),
                                                           SetValue(b"k", b"v", NO_EXPIRY)))]))
        futures.append(thread.submit([TrimLogBefore(5), PutMeta("trimmed", 1)]))
        store.gate.set()
        await asyncio.gather(*futures)
        assert store.groups == [1, 8]
        assert await thread.call(lambda s: s.log_bounds()) == (5, 4)
        await thread.close()
        recovered = store.recover()
        assert (recovered.last_position, recovered.log) == (Position(2, 4), ())
        assert recovered.meta == {"epoch": 2, "trimmed": 1}
    run(scenario)


def test_a_call_runs_after_everything_submitted_before_it():
    async def scenario():
        store = GatedStore()
        store.gate.set()
        thread = StorageThread(lambda: store)
        await thread.start()
        futures = [thread.submit(transaction(index)) for index in range(1, 11)]
        entries = await thread.call(lambda s: s.read_log(0, 100))
        assert [entry.position.index for entry in entries] == list(range(1, 11))
        assert all(future.done() for future in futures)

        def fails(_store):
            raise KeyError("not fatal")
        with pytest.raises(KeyError):
            await thread.call(fails)
        await thread.submit(transaction(11))        # a failed call does not stop the thread
        await thread.close()
    run(scenario)


def test_close_drains_what_was_submitted_into_sqlite(tmp_path):
    async def scenario():
        thread = StorageThread(lambda: SqliteStore(tmp_path, durability="os"))
        recovered = await thread.start()
        assert recovered.records == {}
        futures = [thread.submit(transaction(index)) for index in range(1, 201)]
        await thread.close()
        assert all(future.done() and future.exception() is None for future in futures)
        await thread.close()                        # idempotent

        thread = StorageThread(lambda: SqliteStore(tmp_path, durability="os"))
        recovered = await thread.start()
        assert len(recovered.records) == 200
        assert recovered.last_position == Position(1, 200)
        await thread.close()
    run(scenario)


class FailingStore(MemoryStore):
    """Fails its second commit, as a full disk would."""

    def __init__(self) -> None:
        super().__init__(durability="fsync")
        self.error = OSError(28, "No space left on device")
        self.commits_tried = 0

    def commit_many(self, batches: Sequence[Sequence[Write]]) -> None:
        self.commits_tried += 1
        if self.commits_tried == 2:
            raise self.error
        super().commit_many(batches)


def test_a_failed_commit_fails_its_futures_and_everything_after_it():
    async def scenario():
        store = FailingStore()
        thread = StorageThread(lambda: store)
        await thread.start()
        await thread.submit(transaction(1))
        with pytest.raises(OSError) as failed:
            await thread.submit(transaction(2))
        assert failed.value is store.error
        for attempt in (thread.submit([PutMeta("m", 1)]), thread.call(lambda s: s.log_bounds())):
            with pytest.raises(StorageStopped) as stopped:
                await attempt
            assert stopped.value.__cause__ is store.error
        assert store.commits_tried == 2             # nothing reached the store after the failure
        await thread.close()
        assert store.recover().last_position == Position(1, 1)
    run(scenario)


def test_a_store_that_cannot_open_fails_start():
    async def scenario():
        def open_store():
            raise PermissionError("data_dir is read-only")
        thread = StorageThread(open_store)
        with pytest.raises(PermissionError):
            await thread.start()
        await thread.close()                        # nothing to close; returns at once
    run(scenario)


def test_start_returns_what_the_store_recovers():
    store = MemoryStore()
    store.recover()
    store.commit(transaction(1) + [PutMeta("vote", "n2")])

    async def scenario():
        thread = StorageThread(lambda: store)
        recovered = await thread.start()
        assert recovered.meta == {"vote": "n2"}
        assert recovered.last_position == Position(1, 1)
        await thread.close()
    run(scenario)
