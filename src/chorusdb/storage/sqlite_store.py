"""The node's durable state in one SQLite file (WAL mode): the ``Store`` of a real node.

The file is ``data_dir/chorus.sqlite3`` and holds six tables (schema version 2, kept in
``PRAGMA user_version``)::

    data(key BLOB PRIMARY KEY, kind INTEGER, value BLOB, expire_at_ms INTEGER, version INTEGER)
    data_journal(seq INTEGER PRIMARY KEY, key BLOB, kind INTEGER, value BLOB,
                 expire_at_ms INTEGER, version INTEGER)   -- kind NULL: the key was deleted
    log(idx INTEGER PRIMARY KEY, epoch INTEGER, entry BLOB, crc INTEGER)
    meta(name TEXT PRIMARY KEY, value)          -- int, str or bytes, as SQLite keeps them
    log_base(id = 0, epoch INTEGER, idx INTEGER) -- the last position retention removed, or
                                                 -- the one a reset or a snapshot set: the
                                                 -- log's last position when it is empty
    divergent(id INTEGER PRIMARY KEY, epoch INTEGER, idx INTEGER, entry BLOB, crc INTEGER,
              leader TEXT, removed_at_ms INTEGER, removed_by TEXT, verified INTEGER,
              resolution TEXT, resolved_by TEXT, resolved_at_ms INTEGER)

Values and log entries are encoded by ``storage.encoding``; ``crc`` is the CRC32C of ``entry``
and its position, in ``log`` and in ``divergent`` alike (a divergent row is a removed log entry
plus who removed it, when, and how it was resolved; ``verified`` is 0 or 1). The divergent
table joined schema version 1 after its first release: a table added is not a new version
(an older ChorusDB ignores it), so opening a file that lacks it creates it.

**Commits.** One ``BEGIN IMMEDIATE ... COMMIT`` per ``commit``/``commit_many``, however many
batches it carries. The writes are checked first (``base.LogCheck``), then folded per
table: data writes into the final state of each key touched (a later write of a key replaces an
earlier one, a ``ClearRecords`` forgets everything before it), meta writes into the final value
of each name, divergent rows into the final row of each id, log writes into steps kept in order:
runs of appends (one ``executemany`` each), trims, truncations and resets (a ``ResetLog`` drops
the steps before it, whose rows it would delete anyway). Tables are independent, so this gives
the same result as applying the writes one by one; a batch without trims, truncations, resets
or divergent rows takes at most five statements: ``DELETE FROM data`` and ``data_journal`` (if
cleared), journal inserts, meta upserts, log inserts. The SQL strings are constants, so
``sqlite3``'s statement cache prepares each once.

**The data journal.** A commit does not update ``data`` in place: it appends the final state of
each key it touched to ``data_journal``, and once the journal holds ``journal_fold_rows`` rows
the same transaction folds it into ``data`` (two ``INSERT ... SELECT``/``DELETE`` statements
that keep the newest row of each key, run inside SQLite without the interpreter) and empties
it. The state of the keys is ``data`` with the journal replayed in ``seq`` order, in every
committed transaction, so a crash between folds loses nothing; ``recover`` and ``snapshot``
fold first. Why: an upsert of a random key dirties one B-tree leaf of ``data``, and every
commit writes each dirty page to the WAL again (about a 4 KiB page per 16-byte SET at 50 SETs a
commit), while appending to the journal touches its last page only; a fold writes each leaf
once however often its keys changed since the last one. Measured with the schema above, 50 and
300 SETs a commit over 100,000 random keys, folding every 16,384 rows: 11.9 → 9.0 and 9.4 → 7.8
µs CPU per SET.

**Retention, resets and truncations.** A trim (``TrimLogBefore``, and ``truncate_log_before``,
which commits one) deletes the rows below its index and records the last one it deleted in
``log_base``; a ``ResetLog`` deletes every row and sets ``log_base`` to its position; a
``TruncateLogAfter`` deletes the rows after its position, which is a row that stays or
``log_base`` itself (``base.LogCheck`` makes sure), so it leaves ``log_base`` alone. ``log_base``
is read for the last position only when the log is empty, so the last position survives trims.

**Durability.** ``"fsync"`` sets ``synchronous=FULL``: in WAL mode each commit fsyncs the WAL
before it returns, so ``commits_total`` counts fsyncs. ``"os"`` sets ``synchronous=NORMAL``: the
WAL is written (a process crash loses nothing) and only synced at checkpoints (a power loss may
lose the last commits, never corrupt the file).

**Checks.** ``read_log`` checks the CRC (and position) of every entry it returns; ``recover``
reads the newest ``base.recover_log_entries_max`` entries back (``RecoveredState.log``) through
the same check. A failed check raises ``CorruptRecord``: SQLite keeps no checksums of its own,
so a corrupt entry is bit rot, and the data rows that were committed with it cannot be rolled
back; the node stops and is re-seeded from a snapshot.

**Snapshots** hold data and meta at the last position, an empty log whose ``log_base`` is that
position (the tag) and an empty divergent table (its rows are the node's own). They are written
in one read transaction with the file attached to the same connection (``INSERT INTO
snapshot.data SELECT ... FROM main.data``) rather than with ``VACUUM INTO`` or the backup API,
which would copy the log and the divergent rows too; the file is fsynced and renamed
into ``data_dir/snapshots/snapshot-EPOCH-INDEX.sqlite3``, where the caller owns it (ship it, keep
it as a backup, delete it). ``restore`` copies the image next to the store file, checks it,
copies the store's divergent rows into it, checkpoints and closes the connection, removes the
emptied WAL, renames the copy over the store and reopens: a crash at any step leaves either the
old store or the new one.

The connection belongs to the thread that built the store (``check_same_thread=True``): the
storage thread in the server.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chorusdb import limits
from chorusdb.core.model import (
    AppendEntry,
    ClearRecords,
    DeleteRecord,
    DivergentEntry,
    LogEntry,
    Position,
    PutDivergent,
    PutMeta,
    PutRecord,
    Record,
    RecoveredState,
    ResetLog,
    TrimLogBefore,
    TruncateLogAfter,
    Write,
)
from chorusdb.storage import base
from chorusdb.storage.base import (
    LogCheck,
    LogCompacted,
    Snapshot,
    check_durability,
)
from chorusdb.storage.encoding import (
    CorruptRecord,
    decode_entry,
    decode_record,
    encode_entry,
    encode_value,
)

store_file_name = "chorus.sqlite3"
snapshot_directory_name = "snapshots"
schema_version = 2
schema_versions_upgraded = (1,)
"""Earlier schemas this version opens and upgrades: 1 lacked ``data_journal`` (and meant every
key's state is in ``data``), so adding the empty table is the whole upgrade. A file of version
2 is refused by a ChorusDB that knows only version 1, which would ignore an unfolded journal."""
journal_fold_rows = 4_096
"""Journal rows that make a commit fold the journal into ``data`` (a quarter of a second of
replicated SETs on a 2-core machine), and the most that recovery replays. A fold stalls the
commit that carries it, so this trades throughput against the tail: a replicated SET workload
(W = 2, fsync, 100,000 keys) ran at 14.7k/s with p99 56 ms writing ``data`` in place, and
16.3-16.6k/s, p99 79-86 ms with 4,096 rows; 15.6-16.9k/s, p99 126 ms with 16,384; 16.9-17.9k/s,
p99 249 ms with 65,536."""
statement_cache_size = 64
"""Prepared statements ``sqlite3`` keeps per connection (ours are fewer than 20)."""

_SYNCHRONOUS = {"fsync": ("FULL", 2), "os": ("NORMAL", 1)}
"""``PRAGMA synchronous`` by durability: the name to set and the level SQLite reports back."""

_JOURNAL_DATA = ("INSERT INTO data_journal (key, kind, value, expire_at_ms, version) "
                 "VALUES (?, ?, ?, ?, ?)")
_CLEAR_DATA = "DELETE FROM data"
_CLEAR_JOURNAL = "DELETE FROM data_journal"
_COUNT_JOURNAL = "SELECT count(*) FROM data_journal"
_NEWEST_JOURNAL_ROWS = "SELECT max(seq) FROM data_journal GROUP BY key"
# The newest journal row of each key: put (an upsert in place, where INSERT OR REPLACE would
# delete the row and insert it again; the WHERE also lets the parser tell the upsert's ON from
# a join's), or delete.
_FOLD_PUTS = ("INSERT INTO data (key, kind, value, expire_at_ms, version) "
              "SELECT key, kind, value, expire_at_ms, version FROM data_journal "
              f"WHERE seq IN ({_NEWEST_JOURNAL_ROWS}) AND kind IS NOT NULL "
              "ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, value = excluded.value, "
              "expire_at_ms = excluded.expire_at_ms, version = excluded.version")
_FOLD_DELETES = ("DELETE FROM data WHERE key IN (SELECT key FROM data_journal "
                 f"WHERE seq IN ({_NEWEST_JOURNAL_ROWS}) AND kind IS NULL)")
_UPSERT_META = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"
_APPEND_LOG = "INSERT INTO log (idx, epoch, entry, crc) VALUES (?, ?, ?, ?)"
_SELECT_DATA = "SELECT key, kind, value, expire_at_ms, version FROM data"
_SELECT_META = "SELECT name, value FROM meta"
_SELECT_LOG_AFTER = "SELECT idx, epoch, entry, crc FROM log WHERE idx > ? ORDER BY idx LIMIT ?"
_SELECT_LOG_TAIL = "SELECT idx, epoch, entry, crc FROM log ORDER BY idx DESC LIMIT ?"
_SELECT_LAST_ENTRY = "SELECT epoch, idx FROM log ORDER BY idx DESC LIMIT 1"
_SELECT_LAST_ENTRY_BEFORE = "SELECT epoch, idx FROM log WHERE idx < ? ORDER BY idx DESC LIMIT 1"
_SELECT_LOG_BASE = "SELECT epoch, idx FROM log_base"
_SELECT_LOG_BOUNDS = "SELECT min(idx), max(idx) FROM log"
_DELETE_LOG_BEFORE = "DELETE FROM log WHERE idx < ?"
_DELETE_LOG = "DELETE FROM log"
_DELETE_LOG_AFTER = "DELETE FROM log WHERE idx > ?"
_UPDATE_LOG_BASE = "UPDATE log_base SET epoch = ?, idx = ?"
_DIVERGENT_COLUMNS = ("id, epoch, idx, entry, crc, leader, removed_at_ms, removed_by, verified, "
                      "resolution, resolved_by, resolved_at_ms")
_UPSERT_DIVERGENT = (f"INSERT OR REPLACE INTO divergent ({_DIVERGENT_COLUMNS}) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT_DIVERGENT = f"SELECT {_DIVERGENT_COLUMNS} FROM divergent ORDER BY id"


page_cache_kib = 64 * 1024
"""SQLite's page cache: the data table's upper B-tree levels and hot leaves stay in memory, so
a commit of random keys does not read pages back from the OS (the default is 2 MiB)."""
wal_autocheckpoint_pages = 8192
"""Pages in the WAL before a commit copies them into the database (SQLite's default is 1000):
fewer, larger checkpoints, each inside some commit, at the cost of a WAL of up to ~32 MiB."""


class SchemaMismatch(Exception):
    """The file was written by a version of ChorusDB with another schema."""


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk read. Decoding builds several objects
    per row, none in a cycle, and every few hundred allocations the collector would scan them
    again: measured, that was a third to a half of a 100k-entry ``recover``. Nothing is leaked,
    only collected later; a collector someone else paused stays paused."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _divergent_table(schema: str) -> str:
    """The statement that creates the divergent table in ``schema`` unless it is there."""
    return (f"CREATE TABLE IF NOT EXISTS {schema}.divergent (id INTEGER PRIMARY KEY, "
            "epoch INTEGER NOT NULL, idx INTEGER NOT NULL, entry BLOB NOT NULL, "
            "crc INTEGER NOT NULL, leader TEXT NOT NULL, removed_at_ms INTEGER NOT NULL, "
            "removed_by TEXT NOT NULL, verified INTEGER NOT NULL, resolution TEXT NOT NULL, "
            "resolved_by TEXT NOT NULL, resolved_at_ms INTEGER NOT NULL)")


def _journal_table(schema: str) -> str:
    """The statement that creates the data journal in ``schema`` (version 2's addition)."""
    return (f"CREATE TABLE {schema}.data_journal (seq INTEGER PRIMARY KEY, key BLOB NOT NULL, "
            "kind INTEGER, value BLOB, expire_at_ms INTEGER, version INTEGER)")


def _schema(schema: str) -> tuple[str, ...]:
    """The statements that create an empty store in the attached database ``schema``."""
    return (
        f"CREATE TABLE {schema}.data (key BLOB PRIMARY KEY, kind INTEGER NOT NULL, "
        "value BLOB NOT NULL, expire_at_ms INTEGER NOT NULL, version INTEGER NOT NULL) "
        "WITHOUT ROWID",
        _journal_table(schema),
        f"CREATE TABLE {schema}.log (idx INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, "
        "entry BLOB NOT NULL, crc INTEGER NOT NULL)",
        f"CREATE TABLE {schema}.meta (name TEXT PRIMARY KEY, value NOT NULL)",
        f"CREATE TABLE {schema}.log_base (id INTEGER PRIMARY KEY CHECK (id = 0), "
        "epoch INTEGER NOT NULL, idx INTEGER NOT NULL)",
        f"INSERT INTO {schema}.log_base (id, epoch, idx) VALUES (0, 0, 0)",
        _divergent_table(schema),
        f"PRAGMA {schema}.user_version = {schema_version}",
    )


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _entry_row(entry: LogEntry) -> tuple[int, int, bytes, int]:
    data, crc = encode_entry(entry)
    return entry.position.index, entry.position.epoch, data, crc


def _journal_row(key: bytes, record: Record | None) -> tuple[object, ...]:
    """The journal row of ``key``'s new state: its record's columns, or NULLs for a delete."""
    if record is None:
        return key, None, None, None, None
    return key, record.kind.value, encode_value(record), record.expire_at_ms, record.version


def _divergent_row(item: DivergentEntry) -> tuple[object, ...]:
    index, epoch, data, crc = _entry_row(item.entry)
    return (item.entry_id, epoch, index, data, crc, item.leader, item.removed_at_ms,
            item.removed_by, int(item.verified), item.resolution, item.resolved_by,
            item.resolved_at_ms)


def _decode_divergent(row: tuple) -> DivergentEntry:
    """The ``DivergentEntry`` of a divergent row, its entry CRC-checked; ``CorruptRecord`` if
    the row does not hold one."""
    (entry_id, epoch, index, data, crc, leader, removed_at_ms, removed_by, verified, resolution,
     resolved_by, resolved_at_ms) = row
    entry = decode_entry(Position(epoch, index), data, crc)
    if verified not in (0, 1):
        raise CorruptRecord(f"divergent row {entry_id}: verified is {verified!r:.40}")
    return DivergentEntry(entry_id, entry, leader, removed_at_ms, removed_by, verified == 1,
                          resolution, resolved_by, resolved_at_ms)


_LogStep = list[tuple[int, int, bytes, int]] | TrimLogBefore | TruncateLogAfter | ResetLog
"""One step of a commit's log changes: a run of appended rows, a trim, a truncation or a
reset."""


def _trim_log(connection: sqlite3.Connection, index: int) -> int:
    """Delete the log rows below ``index``, keeping the last one deleted as ``log_base``;
    returns how many were deleted."""
    removed_last = connection.execute(_SELECT_LAST_ENTRY_BEFORE, (index,)).fetchone()
    if removed_last is None:
        return 0
    connection.execute(_UPDATE_LOG_BASE, removed_last)
    return connection.execute(_DELETE_LOG_BEFORE, (index,)).rowcount


class SqliteStore:
    """The SQLite ``Store``; see the module docstring. Build it on the thread that will use it."""

    def __init__(self, data_dir: Path, *, durability: str = "fsync",
                 fold_rows: int = journal_fold_rows) -> None:
        assert fold_rows >= 1, fold_rows
        self.durability = check_durability(durability)
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / store_file_name
        self.commits_total = 0
        self.writes_total = 0
        self.folds_total = 0
        self.fold_rows = fold_rows
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._connection: sqlite3.Connection | None = self._connect()
        self._journal_rows = self._count_journal()
        self._log_base, self._last_position = self._read_log_ends()

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True,
                                     cached_statements=statement_cache_size)
        try:
            (journal_mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            assert journal_mode == "wal", journal_mode
            synchronous_name, synchronous_level = _SYNCHRONOUS[self.durability]
            connection.execute(f"PRAGMA synchronous = {synchronous_name}")
            connection.execute(f"PRAGMA cache_size = -{page_cache_kib}")
            connection.execute(f"PRAGMA wal_autocheckpoint = {wal_autocheckpoint_pages}")
            (applied,) = connection.execute("PRAGMA synchronous").fetchone()
            assert applied == synchronous_level, (applied, self.durability)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version == 0:
                connection.execute("BEGIN IMMEDIATE")
                for statement in _schema("main"):
                    connection.execute(statement)
                connection.execute("COMMIT")
            elif version in schema_versions_upgraded:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(_divergent_table("main"))
                connection.execute(_journal_table("main"))
                connection.execute(f"PRAGMA main.user_version = {schema_version}")
                connection.execute("COMMIT")
            elif version != schema_version:
                raise SchemaMismatch(f"{self.path} has schema version {version}; this version "
                                     f"of ChorusDB reads versions "
                                     f"{(*schema_versions_upgraded, schema_version)}")
            else:
                connection.execute(_divergent_table("main"))
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def _open(self) -> sqlite3.Connection:
        assert self._connection is not None, f"{self.path} is closed"
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the body returns, rolled back if it raises."""
        connection = self._open
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # --- the data journal -----------------------------------------------------------------------

    def _count_journal(self) -> int:
        (rows,) = self._open.execute(_COUNT_JOURNAL).fetchone()
        return rows

    def _fold(self, connection: sqlite3.Connection) -> None:
        """Fold the journal into ``data`` inside the caller's transaction and empty it."""
        if self._journal_rows == 0:
            return
        connection.execute(_FOLD_PUTS)
        connection.execute(_FOLD_DELETES)
        connection.execute(_CLEAR_JOURNAL)
        self._journal_rows = 0
        self.folds_total += 1

    def _fold_now(self) -> None:
        """Fold in a transaction of its own (before reading or copying ``data`` whole)."""
        if self._journal_rows:
            rows = self._journal_rows
            try:
                with self._transaction() as connection:
                    self._fold(connection)
            except BaseException:
                self._journal_rows = rows
                raise

    # --- reads ----------------------------------------------------------------------------------

    def _read_log_ends(self) -> tuple[Position, Position]:
        """The log's base and last position."""
        connection = self._open
        log_base = Position(*connection.execute(_SELECT_LOG_BASE).fetchone())
        row = connection.execute(_SELECT_LAST_ENTRY).fetchone()
        return log_base, log_base if row is None else Position(*row)

    def _entry_before(self, index: int) -> Position | None:
        row = self._open.execute(_SELECT_LAST_ENTRY_BEFORE, (index,)).fetchone()
        return None if row is None else Position(*row)

    def recover(self) -> RecoveredState:
        self._fold_now()
        connection = self._open
        with _collector_paused():
            log = [decode_entry(Position(epoch, index), data, crc) for index, epoch, data, crc
                   in connection.execute(_SELECT_LOG_TAIL, (base.recover_log_entries_max,))]
            log.reverse()                           # read newest first, handed back oldest first
            records = {key: decode_record(kind, value, expire_at_ms, version)
                       for key, kind, value, expire_at_ms, version
                       in connection.execute(_SELECT_DATA)}
            divergent = tuple(_decode_divergent(row)
                              for row in connection.execute(_SELECT_DIVERGENT))
        meta = dict(connection.execute(_SELECT_META).fetchall())
        self._log_base, self._last_position = self._read_log_ends()
        return RecoveredState(records, meta, self._last_position, tuple(log), divergent)

    def log_bounds(self) -> tuple[int, int]:
        first, last = self._open.execute(_SELECT_LOG_BOUNDS).fetchone()
        if first is None:
            last = self._last_position.index
            return last + 1, last
        return first, last

    def read_log(self, after_index: int, limit: int) -> list[LogEntry]:
        assert 0 < limit <= limits.log_read_entries_max, limit
        assert after_index >= 0, after_index
        first, _ = self.log_bounds()
        if after_index < first - 1:
            raise LogCompacted(after_index, first)
        rows = self._open.execute(_SELECT_LOG_AFTER, (after_index, limit))
        return [decode_entry(Position(epoch, index), data, crc) for index, epoch, data, crc in rows]

    # --- writes ---------------------------------------------------------------------------------

    def commit(self, writes: Sequence[Write]) -> None:
        self.commit_many((writes,))

    def commit_many(self, batches: Sequence[Sequence[Write]]) -> None:
        self._commit_batches(batches)

    def _commit_batches(self, batches: Sequence[Sequence[Write]]) -> int:
        """``commit_many``; returns how many log entries its trims removed."""
        check = LogCheck(self._log_base, self._last_position, self._entry_before)
        write_count = 0
        for writes in batches:
            check.check(writes)
            write_count += len(writes)
        if write_count == 0:
            return 0
        cleared = False
        data: dict[bytes, Record | None] = {}
        meta: dict[str, int | str | bytes] = {}
        divergent: dict[int, DivergentEntry] = {}
        log_steps: list[_LogStep] = []
        appends: list[tuple[int, int, bytes, int]] | None = None   # the open run, if any
        for writes in batches:
            for write in writes:
                kind = type(write)
                if kind is PutRecord:
                    data[write.key] = write.record
                elif kind is AppendEntry:
                    if appends is None:
                        appends = []
                        log_steps.append(appends)
                    appends.append(_entry_row(write.entry))
                elif kind is DeleteRecord:
                    data[write.key] = None
                elif kind is PutMeta:
                    meta[write.name] = write.value
                elif kind is ClearRecords:
                    cleared = True
                    data.clear()
                elif kind is TrimLogBefore or kind is TruncateLogAfter:
                    log_steps.append(write)
                    appends = None
                elif kind is PutDivergent:
                    divergent[write.item.entry_id] = write.item
                else:
                    assert kind is ResetLog, write
                    log_steps[:] = [write]      # it deletes the rows of the steps before it
                    appends = None
        journal = [_journal_row(key, record) for key, record in data.items()]
        journal_rows = self._journal_rows
        removed = 0
        try:
            with self._transaction() as connection:
                if cleared:
                    connection.execute(_CLEAR_DATA)
                    connection.execute(_CLEAR_JOURNAL)
                    self._journal_rows = 0
                if journal:
                    connection.executemany(_JOURNAL_DATA, journal)
                    self._journal_rows += len(journal)
                    if self._journal_rows >= self.fold_rows:
                        self._fold(connection)
                removed = self._write_rest(connection, meta, divergent, log_steps)
        except BaseException:
            self._journal_rows = journal_rows       # rolled back with the transaction
            raise
        self._log_base, self._last_position = check.base, check.last
        self.commits_total += 1
        self.writes_total += write_count
        return removed

    @staticmethod
    def _write_rest(connection: sqlite3.Connection, meta: dict[str, int | str | bytes],
                    divergent: dict[int, DivergentEntry], log_steps: list[_LogStep]) -> int:
        """The meta, divergent and log part of a commit; returns how many entries trims
        removed."""
        removed = 0
        if meta:
            connection.executemany(_UPSERT_META, meta.items())
        if divergent:
            connection.executemany(_UPSERT_DIVERGENT,
                                   [_divergent_row(item) for item in divergent.values()])
        for step in log_steps:
            if type(step) is list:
                connection.executemany(_APPEND_LOG, step)
            elif type(step) is TrimLogBefore:
                removed += _trim_log(connection, step.index)
            elif type(step) is TruncateLogAfter:
                connection.execute(_DELETE_LOG_AFTER, (step.position.index,))
            else:
                connection.execute(_DELETE_LOG)
                connection.execute(_UPDATE_LOG_BASE,
                                   (step.position.epoch, step.position.index))
        return removed

    def truncate_log_before(self, index: int) -> int:
        first, _ = self.log_bounds()
        if index <= first:
            return 0
        return self._commit_batches(((TrimLogBefore(index),),))

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        self._fold_now()
        position = self._last_position
        directory = self.data_dir / snapshot_directory_name
        directory.mkdir(exist_ok=True)
        final = directory / f"snapshot-{position.epoch}-{position.index}.sqlite3"
        partial = final.with_name(final.name + ".partial")
        partial.unlink(missing_ok=True)
        connection = self._open
        connection.execute("ATTACH DATABASE ? AS snapshot", (str(partial),))
        try:
            # A fresh file that is renamed into place only when complete needs no journal; it
            # is fsynced once, below, instead of at every page.
            connection.execute("PRAGMA snapshot.journal_mode = OFF")
            connection.execute("PRAGMA snapshot.synchronous = OFF")
            with self._transaction():
                for statement in _schema("snapshot"):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO snapshot.data (key, kind, value, expire_at_ms, version) "
                    "SELECT key, kind, value, expire_at_ms, version FROM main.data")
                connection.execute("INSERT INTO snapshot.meta (name, value) "
                                   "SELECT name, value FROM main.meta")
                connection.execute("UPDATE snapshot.log_base SET epoch = ?, idx = ?",
                                   (position.epoch, position.index))
        except BaseException:
            connection.execute("DETACH DATABASE snapshot")
            partial.unlink(missing_ok=True)
            raise
        connection.execute("DETACH DATABASE snapshot")
        _fsync_path(partial)
        os.replace(partial, final)
        _fsync_path(directory)
        return Snapshot(position, final)

    def _carry_divergent(self, staged: Path) -> None:
        """Copy the store's divergent rows into the snapshot file ``staged`` that will replace
        it (an image written before the table existed gets the table first)."""
        connection = self._open
        connection.execute("ATTACH DATABASE ? AS restoring", (str(staged),))
        try:
            with self._transaction():
                connection.execute(_divergent_table("restoring"))
                connection.execute(f"INSERT INTO restoring.divergent ({_DIVERGENT_COLUMNS}) "
                                   f"SELECT {_DIVERGENT_COLUMNS} FROM main.divergent")
        finally:
            connection.execute("DETACH DATABASE restoring")

    def restore(self, snapshot: Snapshot) -> None:
        assert isinstance(snapshot.image, Path), "a SQLite store restores from a SQLite file"
        staged = self.path.with_name(self.path.name + ".restoring")
        shutil.copyfile(snapshot.image, staged)
        try:
            _check_image(staged, snapshot.position)
            self._carry_divergent(staged)
            _fsync_path(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        connection = self._open
        # Move everything the WAL holds into the main file and empty the WAL, so that removing
        # it below loses nothing and a stale WAL is never replayed over the new file.
        (busy, _, _) = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "another connection holds the store open"
        self.close()
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        os.replace(staged, self.path)
        _fsync_path(self.data_dir)
        self._connection = self._connect()
        self._journal_rows = self._count_journal()
        self._log_base, self._last_position = self._read_log_ends()
        assert self._last_position == snapshot.position, (self._last_position, snapshot)


def _check_image(path: Path, position: Position) -> None:
    """Raise ``CorruptRecord`` unless ``path`` is a snapshot of this schema taken at
    ``position``."""
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version not in (*schema_versions_upgraded, schema_version):
                raise CorruptRecord(f"snapshot {path}: schema version {version}")
            (entries,) = connection.execute("SELECT count(*) FROM log").fetchone()
            tag = Position(*connection.execute(_SELECT_LOG_BASE).fetchone())
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise CorruptRecord(f"snapshot {path}: {error}") from error
    if entries != 0 or tag != position:
        raise CorruptRecord(f"snapshot {path}: taken at {tag} with {entries} log entries, "
                            f"expected {position} with none")
