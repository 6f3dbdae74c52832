"""The linearizability checker agrees with 108 histories of known verdict (nobody here wrote them).

tests/data/linearizability holds porcupine's test data (MIT, LICENSE-porcupine.md): 102 Jepsen
logs of etcd (one register with compare-and-set, many timeouts) and 6 key-value logs with
1 to 50 clients; verdicts.tsv gives the verdicts porcupine's own tests assert.

A verdict counts only when it is proved: a "true" file must have every key decided
linearizable, a "false" file at least one key proved illegal. Keys the search budget cannot
decide are listed in ``UNDECIDED_KEYS`` with the reason; they must stay within that list.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jepsen_logs import read_etcd_log, read_kv_log

from chorusdb.verify.history import History
from chorusdb.verify.linearizability import check_linearizability
from chorusdb.verify.models import KV
from chorusdb.verify.result import NONLINEARIZABLE, UNDECIDED

CORPUS = Path(__file__).parent.parent / "data" / "linearizability"

# kv/c50-bad.txt: 50 clients on 10 keys, up to 12 operations in flight per key, and puts
# that reset the value while they are in flight, which blinds the model's lookahead. On keys
# illegal deep in their history the search must rule out every order of the appends in
# flight: key 7 is proved illegal after 5.3 M steps, key 0 is still undecided after 20 M
# (3.5 GB of memo); the default budget is 2 M. The file's verdict is proved by the other
# eight keys. Porcupine stops at the first illegal key and never decides the others either.
UNDECIDED_KEYS = {"kv/c50-bad.txt": {b"0", b"7"}}


def _corpus() -> list[tuple[str, bool]]:
    rows = (CORPUS / "verdicts.tsv").read_text().splitlines()[1:]
    return [(name, verdict == "true") for name, verdict in (row.split("\t") for row in rows)]


def _read(name: str) -> History:
    path = CORPUS / name
    return read_etcd_log(path) if name.startswith("etcd/") else read_kv_log(path)


def test_corpus_is_complete() -> None:
    """verdicts.tsv names every file of the corpus, and the corpus has the expected size."""
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*") if p.is_file()}
    assert {name for name, _ in _corpus()} == files
    assert len(files) == 108


@pytest.mark.parametrize(("name", "linearizable"), _corpus(), ids=[n for n, _ in _corpus()])
def test_verdict_matches_corpus(name: str, linearizable: bool) -> None:
    """Each history's verdict is the one porcupine asserts, and it is proved, not guessed."""
    history = _read(name)
    started = time.perf_counter()
    result = check_linearizability(history, model=KV if name.startswith("kv/") else None)
    elapsed = time.perf_counter() - started
    kinds = [anomaly.kind for anomaly in result.anomalies]
    undecided = {a.key for a in result.anomalies if a.kind == UNDECIDED}
    assert result.valid == linearizable, f"{name}: {kinds} after {elapsed:.1f}s"
    assert undecided <= UNDECIDED_KEYS.get(name, set()), f"{name}: undecided keys {undecided}"
    if not linearizable:
        assert NONLINEARIZABLE in kinds, f"{name}: no key proved illegal ({kinds})"


def test_witness_of_an_illegal_etcd_history() -> None:
    """An illegal history names the operation that cannot be placed after the longest prefix."""
    result = check_linearizability(_read("etcd/etcd_000.log"))
    (anomaly,) = result.anomalies
    assert anomaly.kind == NONLINEARIZABLE
    assert "longest legal prefix places 43 of them" in anomaly.explanation
    assert "p11 get() -> 2" in anomaly.explanation
    blocked_read = [r for r in anomaly.witness if r.process == 11]
    assert [r.type for r in blocked_read] == ["invoke", "ok"]
    assert blocked_read[1].value == 2
