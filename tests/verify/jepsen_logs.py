"""Readers for the corpus in tests/data/linearizability (its README describes both formats).

Each log becomes a ``History`` recorded through ``HistoryRecorder``, with the line number as
time, so the corpus exercises the same code path as the simulator.

Mapping of the etcd Jepsen log onto the history format (one register, key ``b"register"``):

- ``:read`` -> ``get``; ``:write`` -> ``set``; ``:cas [a b]`` -> ``cas`` with value ``(a, b)``;
- ``:ok :cas`` -> ``ok`` with ``True``; ``:fail :cas`` -> ``ok`` with ``False``: etcd answered
  that the compare failed, a definite reply that observed the register (porcupine's reading);
- ``:fail :read :timed-out`` -> ``fail`` (a read that returned nothing; the process goes on);
- ``:info ... :timed-out`` -> ``info``.
"""

from __future__ import annotations

import re
from pathlib import Path

from chorusdb.verify.history import History, HistoryRecorder

REGISTER_KEY = b"register"

_ETCD_LINE = re.compile(r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*?)\s*$")
_KV_LINE = re.compile(
    r'^\{:process (\d+), :type :(\w+), :f :(\w+), :key "(.*?)", :value (nil|"(.*)")\}$'
)
_ETCD_F = {"read": "get", "write": "set", "cas": "cas"}


def _etcd_argument(text: str) -> int | tuple[int, int] | None:
    if text == "nil" or text.startswith(":"):
        return None
    if text.startswith("["):
        expected, new = text.strip("[]").split()
        return (int(expected), int(new))
    return int(text)


def read_etcd_log(path: Path) -> History:
    """The history of one Jepsen etcd log."""
    recorder = HistoryRecorder()
    for time, line in enumerate(path.read_text().splitlines()):
        match = _ETCD_LINE.match(line)
        assert match, f"{path.name}:{time + 1}: unparsed line {line!r}"
        process, record_type, f, argument = match.groups()
        p, value = int(process), _etcd_argument(argument)
        if record_type == "invoke":
            recorder.invoke(p, _ETCD_F[f], REGISTER_KEY, value, time=time)
        elif record_type == "ok":
            recorder.ok(p, time=time, value=True if f == "cas" else value)
        elif record_type == "fail" and f == "cas":
            recorder.ok(p, time=time, value=False)
        elif record_type == "fail":
            recorder.fail(p, time=time, error=argument)
        else:
            assert record_type == "info", line
            recorder.info(p, time=time, error=argument)
    return recorder.history


def read_kv_log(path: Path) -> History:
    """The history of one porcupine kv log (EDN maps, many keys)."""
    recorder = HistoryRecorder()
    for time, line in enumerate(path.read_text().splitlines()):
        match = _KV_LINE.match(line)
        assert match, f"{path.name}:{time + 1}: unparsed line {line!r}"
        process, record_type, f, key, raw_value, text = match.groups()
        value = None if raw_value == "nil" else text.encode()
        if record_type == "invoke":
            recorder.invoke(int(process), f, key.encode(), value, time=time)
        else:
            assert record_type == "ok", line
            recorder.ok(int(process), time=time, value=value if f == "get" else None)
    return recorder.history
