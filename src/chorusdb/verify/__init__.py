"""Client histories and the checkers that judge them (Jepsen-style, black-box).

Shared by the deterministic simulator and the real-process fault harness. A run records what
its clients saw (``history.HistoryRecorder``: invoke / ok / fail / info, plus notes from the
fault injector and the nodes) and, after heal and quiesce, what the replicas hold
(``check.FinalState``). The checkers then ask whether a correct system could have produced
that; none of them compares against one expected output:

- ``linearizability``: per-key Wing-Gong search with Lowe's memo (register, list, counter,
  porcupine kv models);
- ``list_append``: the O(n log n) rules for unique-element list appends;
- ``lost_writes``: acknowledged writes missing from the final state, attributed to declared
  loss windows where the configuration allows loss;
- ``convergence``: replica digests and dumps after quiesce;
- ``session``: read-your-writes, monotonic reads and writes, writes-follow-reads;
- ``check.check_all``: the checkers a mode's claims call for; ``render.render_results``: the
  report.

Pure Python: nothing here reads a clock or touches a file except the recorder, which writes to
the file object it is given. Everything a caller needs is importable from this package.
"""

from chorusdb.verify.check import CLAIMS, FinalState, check_all
from chorusdb.verify.convergence import check_convergence
from chorusdb.verify.history import (
    History,
    HistoryRecorder,
    MalformedHistory,
    Op,
    Operation,
    error_outcome,
)
from chorusdb.verify.linearizability import KeyVerdict, check_key, check_linearizability
from chorusdb.verify.list_append import check_list_append
from chorusdb.verify.lost_writes import LossWindow, check_lost_writes, loss_windows_from_notes
from chorusdb.verify.render import render_results
from chorusdb.verify.result import Anomaly, CheckResult
from chorusdb.verify.session import check_session

__all__ = [
    "CLAIMS",
    "Anomaly",
    "CheckResult",
    "FinalState",
    "History",
    "HistoryRecorder",
    "KeyVerdict",
    "LossWindow",
    "MalformedHistory",
    "Op",
    "Operation",
    "check_all",
    "check_convergence",
    "check_key",
    "check_linearizability",
    "check_list_append",
    "check_lost_writes",
    "check_session",
    "error_outcome",
    "loss_windows_from_notes",
    "render_results",
]
