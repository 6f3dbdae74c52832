"""Scenario tests of the standalone core: scripted inputs, the exact Ready checked."""

from __future__ import annotations

import random

from chorusdb.core.api import ClientCommand, CoreConfig, WriteAcknowledged
from chorusdb.core.model import (
    NO_EXPIRY,
    AppendEntry,
    DeleteKeys,
    DeleteRecord,
    Kind,
    Position,
    PutRecord,
    Record,
    RecoveredState,
    SetValue,
    ZERO_POSITION,
)
from chorusdb.core.standalone import StandaloneCore, expiry_cycle_interval_ms
from chorusdb.replies import OK, Error

T0 = 1_700_000_000_000


def command(*parts: bytes | str) -> ClientCommand:
    raw = [p.encode() if isinstance(p, str) else p for p in parts]
    return ClientCommand(raw[0].upper(), tuple(raw[1:]))


def fresh_core(**config) -> StandaloneCore:
    return StandaloneCore(CoreConfig("n1", ("n1",), **config),
                          RecoveredState({}, {}, ZERO_POSITION), random.Random(1), T0)


def test_a_write_is_persisted_with_its_log_entry_and_replied_in_the_same_ready():
    core = fresh_core()
    core.propose(command("SET", "k", "v"), 1, T0)
    ready = core.ready()
    assert ready.writes == [
        AppendEntry(entry=ready.writes[0].entry),
        PutRecord(b"k", Record(Kind.STRING, b"v", NO_EXPIRY, 1)),
    ]
    assert ready.writes[0].entry.position == Position(0, 1)
    assert ready.writes[0].entry.effect == SetValue(b"k", b"v", NO_EXPIRY)
    assert [(r.request_id, r.value) for r in ready.replies] == [(1, OK)]
    core.advance(ready)
    assert not core.has_ready()


def test_proposals_that_queue_up_share_one_ready():
    core = fresh_core()
    for i in range(3):
        core.propose(command("SET", "k", str(i)), i, T0)
    core.propose(command("GET", "k"), 9, T0)
    ready = core.ready()
    entries = [w for w in ready.writes if isinstance(w, AppendEntry)]
    rows = [w for w in ready.writes if isinstance(w, PutRecord)]
    assert [e.entry.position.index for e in entries] == [1, 2, 3]
    assert rows == [PutRecord(b"k", Record(Kind.STRING, b"2", NO_EXPIRY, 3))]   # coalesced
    assert [r.value for r in ready.replies] == [OK, OK, OK, b"2"]


def test_positions_continue_after_a_restart():
    recovered = RecoveredState({b"k": Record(Kind.STRING, b"v", NO_EXPIRY, 41)}, {},
                               Position(0, 41))
    core = StandaloneCore(CoreConfig("n1", ("n1",)), recovered, random.Random(1), T0)
    core.propose(command("GET", "k"), 1, T0)
    core.propose(command("INCR", "n"), 2, T0)
    ready = core.ready()
    assert [r.value for r in ready.replies] == [b"v", 1]
    assert ready.writes[0].entry.position == Position(0, 42)
    core.propose(command("CHORUS.POSITION"), 3, T0)
    assert core.ready().replies[0].value == b"0:42"


def test_reads_and_errors_write_nothing():
    core = fresh_core()
    core.propose(command("GET", "nope"), 1, T0)
    core.propose(command("NOSUCH", "x"), 2, T0)
    core.propose(command("GET"), 3, T0)
    ready = core.ready()
    assert ready.writes == []
    assert ready.replies[0].value is None
    assert isinstance(ready.replies[1].value, Error) and "unknown command" in ready.replies[1].value.text
    assert ready.replies[2].value.text == "ERR wrong number of arguments for 'get' command"


def test_tick_reclaims_expired_keys_as_a_logged_delete():
    core = fresh_core()
    core.propose(command("SET", "k", "v", "PX", "50"), 1, T0)
    core.advance(core.ready())
    core.tick(T0 + 10)
    ready = core.ready()                   # nothing expired yet: only the next deadline
    assert ready.is_empty() and ready.deadline_ms == T0 + 10 + expiry_cycle_interval_ms
    core.advance(ready)
    assert not core.has_ready()
    core.tick(T0 + expiry_cycle_interval_ms + 60)
    ready = core.ready()
    assert ready.writes[0].entry.effect == DeleteKeys((b"k",))
    assert DeleteRecord(b"k") in ready.writes


def test_wait_answers_zero_replicas():
    core = fresh_core()
    core.propose(command("WAIT", "1", "100"), 1, T0)
    core.propose(command("WAIT", "x", "100"), 2, T0)
    core.propose(command("WAIT", "1", "-1"), 3, T0)
    values = [r.value for r in core.ready().replies]
    assert values[0] == 0
    assert values[1].text.startswith("ERR value is not an integer")
    assert values[2].text == "ERR timeout is negative"


def test_history_notes_name_the_position_of_each_acknowledged_write():
    core = fresh_core(history_notes=True)
    core.propose(command("SET", "a", "1"), 7, T0)
    core.propose(command("GET", "a"), 8, T0)
    notes = core.ready().notes
    assert WriteAcknowledged(7, Position(0, 1)) in notes
    assert not any(isinstance(n, WriteAcknowledged) and n.request_id == 8 for n in notes)


def test_bug_ack_before_persist_replies_before_the_write_is_handed_over():
    core = fresh_core(bugs=frozenset({"ack_before_persist"}))
    core.propose(command("SET", "k", "v"), 1, T0)
    first = core.ready()
    assert first.replies and not first.writes
    core.advance(first)
    assert core.has_ready()
    assert core.ready().writes


def test_bug_del_not_persisted_keeps_the_row():
    core = fresh_core(bugs=frozenset({"del_not_persisted"}))
    core.propose(command("SET", "k", "v"), 1, T0)
    core.advance(core.ready())
    core.propose(command("DEL", "k"), 2, T0)
    ready = core.ready()
    assert ready.replies[0].value == 1
    assert not any(isinstance(w, DeleteRecord) for w in ready.writes)


def test_a_write_with_an_oversized_key_is_refused_and_changes_nothing():
    from chorusdb import limits
    core = fresh_core()
    core.propose(command("SET", b"k" * (limits.key_bytes_max + 1), "v"), 1, T0)
    core.propose(command("GET", b"k" * (limits.key_bytes_max + 1)), 2, T0)
    ready = core.ready()
    assert ready.writes == []
    assert ready.replies[0].value.text.startswith("ERR key is longer than")
    assert ready.replies[1].value is None


def test_digest_depends_on_the_data_not_on_the_history():
    first, second = fresh_core(), fresh_core()
    for core, order in ((first, ("a", "b")), (second, ("b", "a"))):
        for i, key in enumerate(order):
            core.propose(command("SET", key, "v"), i, T0)
        core.propose(command("SET", "c", "x"), 5, T0)
        core.propose(command("DEL", "c"), 6, T0)
        core.propose(command("CHORUS.DIGEST"), 9, T0)
    one, two = first.ready().replies[-1].value, second.ready().replies[-1].value
    assert one == two and len(one) == 64
    second.propose(command("SET", "a", "w"), 10, T0)
    second.propose(command("CHORUS.DIGEST"), 11, T0)
    assert second.ready().replies[-1].value != one
